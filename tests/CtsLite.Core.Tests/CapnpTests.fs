module CtsLite.Core.Tests.CapnpTests

open System
open System.IO
open System.Buffers
open Expecto
open FsCheck
open FsCheck.FSharp
open CtsLite.Capnp
open CtsLite.Logs
open CtsLite.Tests
open CtsLite.Core.Tests.Encoder

// ---------------------------------------------------------------- generators

let private genPlacement (segments: int) : Gen<Placement> =
    if segments = 1 then
        Gen.constant Near
    else
        Gen.frequency [
            3, Gen.constant Near
            2, Gen.choose (0, segments - 1) |> Gen.map Far
            2, Gen.map2 (fun a b -> DoubleFar(a, b)) (Gen.choose (0, segments - 1)) (Gen.choose (0, segments - 1))
        ]

let private genWord = ArbMap.defaults |> ArbMap.generate<uint64>

let rec private genObj (segments: int) (depth: int) : Gen<Obj> =
    let genPtr: Gen<Ptr> =
        if depth <= 0 then
            Gen.constant None
        else
            Gen.frequency [
                1, Gen.constant None
                3, Gen.map2 (fun o p -> Some(o, p)) (genObj segments (depth - 1)) (genPlacement segments)
            ]

    let genStruct =
        Gen.map2
            (fun d p -> Struct(d, p))
            (Gen.arrayOfLength 3 genWord
             |> Gen.resize 3
             |> Gen.bind (fun _ -> Gen.choose (0, 3) |> Gen.bind (fun n -> Gen.arrayOfLength n genWord)))
            (Gen.choose (0, 3) |> Gen.bind (fun n -> Gen.arrayOfLength n genPtr))

    let genPrimitives = gen {
        let! size = Gen.choose (0, 5)
        let! count = Gen.choose (0, 40)
        let! values = Gen.arrayOfLength count genWord
        return Primitives(size, values |> Array.map (mask size))
    }

    let genComposite = gen {
        let! dw = Gen.choose (0, 2)
        let! pc = Gen.choose (0, 2)
        let! count = Gen.choose (0, 5)

        let! elements =
            Gen.arrayOfLength
                count
                (Gen.map2 (fun d p -> d, p) (Gen.arrayOfLength dw genWord) (Gen.arrayOfLength pc genPtr))

        return Composite(dw, pc, elements)
    }

    let genText =
        Gen.elements [ ""; "a"; "carState"; "héllo wörld"; String('x', 17) ]
        |> Gen.map Text

    if depth <= 0 then
        Gen.oneof [ genStruct; genPrimitives; genText ]
    else
        Gen.frequency [
            3, genStruct
            2, genPrimitives
            1,
            Gen.choose (0, 4)
            |> Gen.bind (fun n -> Gen.arrayOfLength n genPtr)
            |> Gen.map Pointers
            2, genComposite
            1, genText
        ]

type Case = {
    Segments: int
    Root: Obj
    Placement: Placement
}

let private genCase = gen {
    let! segments = Gen.choose (1, 4)
    let! data = Gen.choose (0, 3) |> Gen.bind (fun n -> Gen.arrayOfLength n genWord)

    let! children =
        Gen.choose (0, 4)
        |> Gen.bind (fun n ->
            Gen.arrayOfLength n (Gen.map2 (fun o p -> Some(o, p)) (genObj segments 3) (genPlacement segments)))

    let! placement = genPlacement segments

    return {
        Segments = segments
        Root = Struct(data, children)
        Placement = placement
    }
}

// ---------------------------------------------------------------- reading back

let rec private checkPointer (m: Message) (segment: int) (ptrPos: int) (depth: int) (ptr: Ptr) : bool =
    match ptr with
    | None ->
        m.UInt64(
            {
                StructRef.Empty with
                    DataPos = ptrPos
                    DataBytes = 8
            },
            0
        )
            =
            0UL
    | Some(Struct(data, ptrs), _) -> checkStruct m (m.StructAt(segment, ptrPos, depth)) data ptrs
    | Some(Text s, _) ->
        let mutable length = 0
        let pos = m.TextAt(segment, ptrPos, depth, &length)
        Text.Encoding.UTF8.GetString(m.Span(pos, length)) = s
    | Some(Primitives(size, values), _) ->
        let list = m.ListAt(segment, ptrPos, depth)

        list.Count = values.Length
        && list.ElementSize = size
        && values
           |> Array.mapi (fun i v ->
               match size with
               | 0 -> true
               | 1 -> (uint64 (m.Buffer[list.Pos + i / 8] >>> (i % 8)) &&& 1UL) = v
               | _ ->
                   let s = m.StructElement(list, i)

                   match size with
                   | 2 -> uint64 (m.UInt8(s, 0)) = v
                   | 3 -> uint64 (m.UInt16(s, 0)) = v
                   | 4 -> uint64 (m.UInt32(s, 0)) = v
                   | _ -> m.UInt64(s, 0) = v)
           |> Array.forall id
    | Some(Pointers ptrs, _) ->
        let list = m.ListAt(segment, ptrPos, depth)

        list.Count = ptrs.Length
        && ptrs
           |> Array.mapi (fun i p -> checkPointer m list.Segment (m.PointerElement(list, i)) list.Depth p)
           |> Array.forall id
    | Some(Composite(dw, pc, elements), _) ->
        let list = m.ListAt(segment, ptrPos, depth)

        list.Count = elements.Length
        && list.StructDataBytes = dw * 8
        && list.StructPtrCount = pc
        && elements
           |> Array.mapi (fun i (d, p) -> checkStruct m (m.StructElement(list, i)) d p)
           |> Array.forall id

and private checkStruct (m: Message) (s: StructRef) (data: uint64 array) (ptrs: Ptr array) : bool =
    s.DataBytes = data.Length * 8
    && s.PtrCount = ptrs.Length
    && data |> Array.mapi (fun i d -> m.UInt64(s, i * 8) = d) |> Array.forall id
    && ptrs
       |> Array.mapi (fun i p -> checkPointer m s.Segment (m.PointerField(s, i)) s.Depth p)
       |> Array.forall id

let private config = {
    FsCheckConfig.defaultConfig with
        maxTest = 300
}

let roundTrip =
    testList "encoder round trip" [
        testPropertyWithConfig
            config
            "structs, lists, text and far pointers read back as written"
            (Prop.forAll (Arb.fromGen genCase) (fun case ->
                let bytes = encode case.Segments case.Root case.Placement

                match Framing.readMessage "generated" ReaderOptions.Default bytes with
                | Error e -> failwith (DecodeError.describe e)
                | Ok m ->
                    m.SegmentCount = case.Segments
                    && checkPointer m 0 (m.SegmentStart 0) 0 (Some(case.Root, case.Placement))))

        test "reading beyond a struct's sections gives defaults" {
            let bytes = encode 1 (Struct([| 0x1122334455667788UL |], [||])) Near

            match Framing.readMessage "small" ReaderOptions.Default bytes with
            | Ok m ->
                let root = m.Root
                Expect.equal (m.UInt32(root, 4)) 0x11223344u "inside"
                Expect.equal (m.UInt64(root, 8)) 0UL "past the data section"
                Expect.isFalse (m.Bool(root, 200)) "bool past the end"
                Expect.equal (m.PointerField(root, 0)) -1 "no pointer section"
            | Error e -> failtest (DecodeError.describe e)
        }
    ]

// ---------------------------------------------------------------- hostile input

let private decodeError (f: unit -> unit) : DecodeReason option =
    try
        f ()
        None
    with :? DecodeException as e ->
        Some e.Error.Reason

let hostile =
    testList "hostile messages" [
        test "a struct pointing at itself hits the nesting limit" {
            // Root struct with one pointer whose offset -1 lands on the struct itself.
            let bytes = encode 1 (Struct([||], [| None |])) Near
            let selfLoop = Array.copy bytes
            // segment data starts at byte 8; word 1 is the struct's pointer field.
            let pointer = (uint64 (uint32 (-1 <<< 2))) ||| (0UL <<< 32) ||| (1UL <<< 48)
            Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(selfLoop.AsSpan(16), pointer)

            match Framing.readMessage "loop" ReaderOptions.Default selfLoop with
            | Ok m ->
                let walk () =
                    let mutable s = m.Root

                    for _ in 1..1000 do
                        s <- m.StructAt(s.Segment, m.PointerField(s, 0), s.Depth)

                Expect.equal (decodeError walk) (Some(DecodeReason.NestingLimit 64)) "nesting limit"
            | Error e -> failtest (DecodeError.describe e)
        }

        test "re-reading the same data past the traversal limit fails" {
            let bytes = encode 1 (Struct(Array.create 100 7UL, [||])) Near

            let options = {
                ReaderOptions.Default with
                    TraversalLimitWords = 500L
            }

            match Framing.readMessage "amplify" options bytes with
            | Ok m ->
                let reread () =
                    for _ in 1..10 do
                        m.StructAt(0, m.SegmentStart 0, 0) |> ignore

                Expect.equal (decodeError reread) (Some(DecodeReason.TraversalLimit 500L)) "traversal limit"
            | Error e -> failtest (DecodeError.describe e)
        }

        test "absurd segment tables are refused before allocating" {
            let before = GC.GetAllocatedBytesForCurrentThread()

            let manySegments =
                Array.concat [ BitConverter.GetBytes 0xFFFFFFFFu; Array.zeroCreate 64 ]

            match Framing.readMessage "segments" ReaderOptions.Default manySegments with
            | Error {
                        Reason = DecodeReason.SegmentTable _
                        Offset = 0L
                    } -> ()
            | other -> failtestf "expected a segment table error, got %A" other

            let huge =
                Array.concat [ BitConverter.GetBytes 0u; BitConverter.GetBytes 0x7FFFFFFFu ]

            match Framing.readMessage "huge" ReaderOptions.Default huge with
            | Error {
                        Reason = DecodeReason.MessageTooLarge _
                    } -> ()
            | other -> failtestf "expected MessageTooLarge, got %A" other

            Expect.isLessThan (GC.GetAllocatedBytesForCurrentThread() - before) (1L <<< 20) "no big allocation"
        }

        test "an active union member whose pointer the struct lacks prints its default, as capnp does" {
            // Event with two data words and no pointer section; the union says `can` (checked
            // against `capnp convert`: {"logMonoTime":"0","valid":true,"can":[]}).
            let schema = Schema.cereal ()
            let event = (schema.TryFindStruct "Event").Value

            let can =
                (Array.findIndex (fun (f: SchemaField) -> not (isNull f) && f.Name = "can") event.UnionMembers)

            let bytes = encode 1 (Struct([| 0UL; uint64 can |], [||])) Near

            match Framing.readMessage "no-pointers" ReaderOptions.Default bytes with
            | Ok m ->
                let w = ArrayBufferWriter<byte>()
                Expect.isOk (Json.messageToJson schema m event "no-pointers" w) "no error"

                Expect.equal
                    (Text.Encoding.UTF8.GetString w.WrittenSpan)
                    """{"logMonoTime":"0","valid":true,"can":[]}"""
                    "default list"
            | Error e -> failtest (DecodeError.describe e)
        }

        test "pointers out of their segment are errors with the offset, as the public DecodeException" {
            Expect.isTrue typeof<DecodeException>.IsPublic "library callers can catch it by type"
            let bytes = encode 1 (Struct([| 1UL |], [||])) Near
            let broken = Array.copy bytes
            // Root pointer claims 200 data words.
            Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(broken.AsSpan(8), (200UL <<< 32))

            match Framing.readMessage "oob" ReaderOptions.Default broken with
            | Ok m ->
                match
                    (try
                        Ok m.Root
                     with :? DecodeException as e ->
                         Error e)
                with
                | Error e ->
                    Expect.equal (e.Error.Offset, e.Error.Reason) (8L, DecodeReason.PointerOutOfBounds) "where and why"
                    // A message read directly has no file name: the text says the byte and the reason.
                    Expect.equal e.Message "byte 8: pointer out of bounds" "the message"
                | Ok _ -> failtest "read a pointer out of bounds"
            | Error e -> failtest (DecodeError.describe e)
        }

        test "far pointers into missing segments are errors" {
            let bytes = encode 2 (Struct([| 5UL |], [||])) (Far 1)
            let broken = Array.copy bytes
            // Header: 4 (count) + 2*4 (sizes) + 4 (padding) = 16; root pointer at 16. Point at segment 9.
            let far =
                Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(ReadOnlySpan(broken, 16, 8))

            Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(
                broken.AsSpan(16),
                (far &&& 0xFFFFFFFFUL) ||| (9UL <<< 32)
            )

            match Framing.readMessage "far" ReaderOptions.Default broken with
            | Ok m ->
                match decodeError (fun () -> m.Root |> ignore) with
                | Some(DecodeReason.BadFarPointer _) -> ()
                | other -> failtestf "expected BadFarPointer, got %A" other
            | Error e -> failtest (DecodeError.describe e)
        }
    ]

// ---------------------------------------------------------------- real logs

let private demoRaw =
    lazy
        (let path =
            Path.Combine(
                TestEnv.sharedDir (),
                "data",
                "rlogs",
                "comma_demo_a2a0ccea32023010_2023-07-27--13-01-19--0.qlog.bz2"
            )

         match Compression.openFile path ReaderOptions.Default with
         | Ok(stream, _) ->
             use stream = stream
             use copy = new MemoryStream()
             stream.CopyTo copy
             copy.ToArray()
         | Error e -> failwith e)

/// Decodes every event of `bytes` to JSON; returns the events read and the damage, if any.
let private decodeAll (bytes: byte array) (options: ReaderOptions) : int * DecodeError option =
    let schema = Schema.cereal ()
    let layout = EventLayout.ofSchema schema |> Result.defaultWith failwith

    use reader =
        LogReader.OfStream(new MemoryStream(bytes), "mutated", options, Compression.Raw)

    let w = ArrayBufferWriter<byte>(1 <<< 16)
    let mutable events = 0
    let mutable damage = None

    while damage.IsNone && reader.Next() do
        w.ResetWrittenCount()

        match Json.messageToJson schema reader.Message layout.Event "mutated" w with
        | Ok() -> events <- events + 1
        | Error e -> damage <- Some e

    events, damage |> Option.orElse reader.Damage

let private genMutation = gen {
    let! flips = Gen.choose (1, 24)
    let! positions = Gen.listOfLength flips (Gen.choose (0, 400_000))
    let! values = Gen.listOfLength flips (ArbMap.defaults |> ArbMap.generate<byte>)

    let! cut =
        Gen.frequency [ 3, Gen.constant None; 1, Gen.choose (0, 400_000) |> Gen.map Some ]

    return List.zip positions values, cut
}

let realLogs =
    testList "damaged real logs" [
        testPropertyWithConfig
            { config with maxTest = 60 }
            "random corruption only ever gives DecodeError, in bounded time and memory"
            (Prop.forAll (Arb.fromGen genMutation) (fun (flips, cut) ->
                let original = demoRaw.Value

                let bytes =
                    Array.sub original 0 (min original.Length (defaultArg cut original.Length |> max 1))

                for position, value in flips do
                    if position < bytes.Length then
                        bytes[position] <- value

                let before = GC.GetAllocatedBytesForCurrentThread()
                let watch = Diagnostics.Stopwatch.StartNew()
                let events, _ = decodeAll bytes ReaderOptions.Default
                let allocated = GC.GetAllocatedBytesForCurrentThread() - before
                // Bounded: never more than a few passes over the input's worth of memory, never stuck.
                events >= 0
                && allocated < 512L * 1024L * 1024L
                && watch.Elapsed < TimeSpan.FromSeconds 60.0))

        testPropertyWithConfig
            { config with maxTest = 40 }
            "the Log API turns damage into warnings, never exceptions"
            (Prop.forAll (Arb.fromGen genMutation) (fun (flips, cut) ->
                let original = demoRaw.Value

                let bytes =
                    Array.sub original 0 (min original.Length (defaultArg cut original.Length |> max 1))

                for position, value in flips do
                    if position < bytes.Length then
                        bytes[position] <- value

                let file = Path.Combine(TestEnv.tempDir "mutated", "rlog")
                File.WriteAllBytes(file, bytes)

                match Log.events ReaderOptions.Default None [] file with
                | Error e -> failwith e
                | Ok events ->
                    let mutable seen = 0

                    for e in events do
                        e.CanFrames() |> ignore
                        e.Field "carState.vEgo" |> ignore
                        e.ToJson() |> ignore
                        seen <- seen + 1

                    // One file: at most one damage warning; without one, every framed event was seen.
                    // When not one event survives, the damage is the error instead (nothing to read).
                    use bare =
                        LogReader.OfStream(new MemoryStream(bytes), "bare", ReaderOptions.Default, Compression.Raw)

                    let mutable framed = 0

                    while bare.Next() do
                        framed <- framed + 1

                    if seen = 0 then
                        events.Error.IsSome && events.Warnings.Count = 0
                    else
                        events.Warnings.Count <= 1
                        && events.Error.IsNone
                        && (events.Warnings.Count = 1 || seen = framed)))

        test "the unmodified demo log decodes without damage" {
            let events, damage = decodeAll demoRaw.Value ReaderOptions.Default
            Expect.equal events 11388 "every event"
            Expect.isNone damage "no damage"
        }
    ]

// ---------------------------------------------------------------- decompression limits

let limits =
    testList "decompression limits" [
        test "a decompression bomb stops at the ratio limit" {
            let dir = TestEnv.tempDir "bomb"
            let bomb = Path.Combine(dir, "bomb.zst")

            do
                use file = File.Create bomb
                use z = new ZstdSharp.CompressionStream(file, 19)
                // 4 Mi copies of a valid 16-byte message (one segment, a null root): every message
                // decodes, so only the ratio limit can stop the reading.
                let message = [|
                    0uy
                    0uy
                    0uy
                    0uy
                    1uy
                    0uy
                    0uy
                    0uy
                    0uy
                    0uy
                    0uy
                    0uy
                    0uy
                    0uy
                    0uy
                    0uy
                |]

                let block = Array.init (1 <<< 20) (fun i -> message[i % 16])

                for _ in 1..64 do
                    z.Write(block, 0, block.Length)

            Expect.isLessThan (FileInfo(bomb).Length) (64L * 1024L) "tiny file"

            match LogReader.Open(bomb, ReaderOptions.Default) with
            | Ok reader ->
                use reader = reader

                while reader.Next() do
                    ()

                match reader.Damage with
                | Some {
                           Reason = DecodeReason.CompressionRatioLimit 1000.0
                       } -> ()
                | other -> failtestf "expected the ratio limit, got %A" other
            | Error e -> failtest e
        }

        test "the decompressed size limit holds" {
            let path =
                Path.Combine(
                    TestEnv.sharedDir (),
                    "data",
                    "rlogs",
                    "comma_demo_a2a0ccea32023010_2023-07-27--13-01-19--0.qlog.bz2"
                )

            let options = {
                ReaderOptions.Default with
                    MaxDecompressedBytes = 1_000_000L
            }

            match LogReader.Open(path, options) with
            | Ok reader ->
                use reader = reader
                let mutable n = 0

                while reader.Next() do
                    n <- n + 1

                Expect.isGreaterThan n 0 "events before the limit are kept"

                match reader.Damage with
                | Some {
                           Reason = DecodeReason.DecompressedSizeLimit 1_000_000L
                       } -> ()
                | other -> failtestf "expected the size limit, got %A" other
            | Error e -> failtest e
        }
    ]

let all = testList "Cap'n Proto" [ roundTrip; hostile; realLogs; limits ]
