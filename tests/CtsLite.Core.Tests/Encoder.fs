/// A test-side Cap'n Proto encoder: builds multi-segment messages with near, far and double-far
/// pointers from a small object model, so the reader can be checked against what was written.
module CtsLite.Core.Tests.Encoder

open System
open System.Buffers.Binary
open System.IO

/// How a pointer reaches its object.
type Placement =
    | Near
    | Far of segment: int
    | DoubleFar of padSegment: int * segment: int

type Obj =
    | Struct of data: uint64 array * pointers: Ptr array
    /// Element size code 0..5 and the raw elements, one value per element (masked to its width).
    | Primitives of elementSize: int * values: uint64 array
    | Pointers of Ptr array
    | Composite of dataWords: int * pointerCount: int * elements: (uint64 array * Ptr array) array
    | Text of string

and Ptr = (Obj * Placement) option

let bitsOf (elementSize: int) =
    match elementSize with
    | 0 -> 0
    | 1 -> 1
    | 2 -> 8
    | 3 -> 16
    | 4 -> 32
    | _ -> 64

let mask (elementSize: int) (v: uint64) =
    match bitsOf elementSize with
    | 0 -> 0UL
    | 64 -> v
    | b -> v &&& ((1UL <<< b) - 1UL)

type private Builder(segments: int) =
    let segs = Array.init segments (fun _ -> ResizeArray<uint64>())

    member _.Segments = segs

    member _.Alloc(segment: int, words: int) =
        let start = segs[segment].Count

        for _ in 1..words do
            segs[segment].Add 0UL

        start

    member _.Set(segment: int, word: int, value: uint64) = segs[segment][word] <- value

    member _.Get(segment: int, word: int) = segs[segment][word]

let private structPointer (offset: int) (dataWords: int) (ptrCount: int) =
    (uint64 (uint32 (offset <<< 2)))
    ||| (uint64 dataWords <<< 32)
    ||| (uint64 ptrCount <<< 48)

let private listPointer (offset: int) (elementSize: int) (count: int) =
    (uint64 (uint32 ((offset <<< 2) ||| 1)))
    ||| (uint64 elementSize <<< 32)
    ||| (uint64 count <<< 35)

let private farPointer (doubleFar: bool) (padWord: int) (segment: int) =
    2UL
    ||| (if doubleFar then 4UL else 0UL)
    ||| (uint64 (uint32 padWord) <<< 3)
    ||| (uint64 segment <<< 32)

let private textBytes (s: string) =
    Array.append (Text.Encoding.UTF8.GetBytes s) [| 0uy |]

/// Words of content and the pointer word describing it (with offset 0).
let private shape (obj: Obj) : int * (int -> uint64) =
    match obj with
    | Struct(data, ptrs) -> data.Length + ptrs.Length, (fun off -> structPointer off data.Length ptrs.Length)
    | Primitives(size, values) ->
        let words = (values.Length * bitsOf size + 63) / 64
        words, (fun off -> listPointer off size values.Length)
    | Pointers ptrs -> ptrs.Length, (fun off -> listPointer off 6 ptrs.Length)
    | Composite(dw, pc, elements) ->
        1 + elements.Length * (dw + pc), (fun off -> listPointer off 7 (elements.Length * (dw + pc)))
    | Text s ->
        let bytes = textBytes s
        (bytes.Length + 7) / 8, (fun off -> listPointer off 2 bytes.Length)

let rec private fill (b: Builder) (segment: int) (start: int) (obj: Obj) =
    match obj with
    | Struct(data, ptrs) ->
        data |> Array.iteri (fun i d -> b.Set(segment, start + i, d))

        ptrs
        |> Array.iteri (fun i p -> writePointer b segment (start + data.Length + i) p)
    | Primitives(size, values) ->
        let bits = bitsOf size

        values
        |> Array.iteri (fun i v ->
            let v = mask size v

            for bit in 0 .. bits - 1 do
                if (v >>> bit) &&& 1UL = 1UL then
                    let at = i * bits + bit
                    let word = start + at / 64
                    b.Set(segment, word, b.Get(segment, word) ||| (1UL <<< (at % 64))))
    | Pointers ptrs -> ptrs |> Array.iteri (fun i p -> writePointer b segment (start + i) p)
    | Composite(dw, pc, elements) ->
        b.Set(segment, start, structPointer elements.Length dw pc)

        elements
        |> Array.iteri (fun i (data, ptrs) ->
            let at = start + 1 + i * (dw + pc)
            data |> Array.iteri (fun j d -> b.Set(segment, at + j, d))
            ptrs |> Array.iteri (fun j p -> writePointer b segment (at + dw + j) p))
    | Text s ->
        textBytes s
        |> Array.iteri (fun i byte ->
            let word = start + i / 8
            b.Set(segment, word, b.Get(segment, word) ||| (uint64 byte <<< (8 * (i % 8)))))

and private writePointer (b: Builder) (segment: int) (ptrWord: int) (ptr: Ptr) =
    match ptr with
    | None -> ()
    | Some(obj, placement) ->
        let words, describe = shape obj

        match placement with
        | Near ->
            let start = b.Alloc(segment, words)
            b.Set(segment, ptrWord, describe (start - (ptrWord + 1)))
            fill b segment start obj
        | Far target ->
            let pad = b.Alloc(target, 1)
            let start = b.Alloc(target, words)
            b.Set(target, pad, describe (start - (pad + 1)))
            b.Set(segment, ptrWord, farPointer false pad target)
            fill b target start obj
        | DoubleFar(padSegment, target) ->
            let start = b.Alloc(target, words)
            let pad = b.Alloc(padSegment, 2)
            b.Set(padSegment, pad, farPointer false start target)
            b.Set(padSegment, pad + 1, describe 0)
            b.Set(segment, ptrWord, farPointer true pad padSegment)
            fill b target start obj

/// Encodes `root` (a struct) as a framed message with `segments` segments.
let encode (segments: int) (root: Obj) (rootPlacement: Placement) : byte array =
    let b = Builder(segments)
    b.Alloc(0, 1) |> ignore
    writePointer b 0 0 (Some(root, rootPlacement))
    use out = new MemoryStream()
    let header = Array.zeroCreate<byte> 4
    BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(), uint32 (segments - 1))
    out.Write(header, 0, 4)

    for s in b.Segments do
        BinaryPrimitives.WriteUInt32LittleEndian(header.AsSpan(), uint32 s.Count)
        out.Write(header, 0, 4)

    if segments % 2 = 0 then
        out.Write(Array.zeroCreate 4, 0, 4)

    for s in b.Segments do
        for w in s do
            let bytes = Array.zeroCreate<byte> 8
            BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(), w)
            out.Write(bytes, 0, 8)

    out.ToArray()
