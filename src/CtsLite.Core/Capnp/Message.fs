namespace CtsLite.Capnp

open System
open System.Buffers.Binary

/// A struct inside a message: where its data and pointer sections are. A plain value (no heap).
[<Struct>]
type StructRef = {
    /// Absolute byte position of the data section in the message buffer.
    DataPos: int
    DataBytes: int
    /// Absolute byte position of the pointer section.
    PtrPos: int
    PtrCount: int
    /// Segment holding the struct (pointers resolve relative to it).
    Segment: int
    Depth: int
} with

    /// The struct every null struct pointer reads as: all fields at their defaults.
    static member Empty = {
        DataPos = 0
        DataBytes = 0
        PtrPos = 0
        PtrCount = 0
        Segment = 0
        Depth = 0
    }

/// A list inside a message.
[<Struct>]
type ListRef = {
    /// Absolute byte position of element 0.
    Pos: int
    Count: int
    /// 0 void, 1 bit, 2 byte, 3 two bytes, 4 four bytes, 5 eight bytes, 6 pointer, 7 composite.
    ElementSize: int
    /// Bytes from one composite element to the next.
    StepBytes: int
    StructDataBytes: int
    StructPtrCount: int
    Segment: int
    Depth: int
} with

    /// The list every null list pointer reads as.
    static member Empty = {
        Pos = 0
        Count = 0
        ElementSize = 0
        StepBytes = 0
        StructDataBytes = 0
        StructPtrCount = 0
        Segment = 0
        Depth = 0
    }

/// One Cap'n Proto message: its segments laid out back to back in one reusable buffer. Readers
/// resolve pointers through it, counting traversed words and nesting against the options' limits;
/// a violation raises `DecodeException` carrying the stream offset.
[<Sealed; AllowNullLiteral>]
type Message(options: ReaderOptions) =
    let mutable buffer: byte array = Array.Empty<byte>()
    let mutable segStart: int array = Array.zeroCreate 8
    let mutable segEnd: int array = Array.zeroCreate 8
    let mutable segCount = 0
    let mutable remaining = options.TraversalLimitWords
    let mutable streamOffset = 0L

    static let bitsOf (elementSize: int) =
        match elementSize with
        | 0 -> 0
        | 1 -> 1
        | 2 -> 8
        | 3 -> 16
        | 4 -> 32
        | _ -> 64

    static let kindName (word: uint64) =
        match int (word &&& 3UL) with
        | 0 -> "struct"
        | 1 -> "list"
        | 2 -> "far"
        | _ -> "capability"

    /// The limits in force.
    member _.Options = options

    /// The buffer holding the message (segments back to back, maybe among other bytes); valid
    /// until the next message is loaded.
    member _.Buffer = buffer

    /// Number of segments.
    member _.SegmentCount = segCount

    /// Offset of the first segment byte in the decompressed stream (for error positions).
    member _.StreamOffset = streamOffset

    /// Counts `words` against the traversal limit (for fast paths that read without resolving).
    member internal this.ChargeWords(words: int64, pos: int) = this.Charge(words, pos)

    /// Where segment `i` ends in `Buffer`.
    member internal _.SegmentEnd(i: int) : int = segEnd[i]

    /// Where segment `i` starts in `Buffer` (the root pointer is at `SegmentStart 0`).
    member _.SegmentStart(i: int) : int = segStart[i]

    /// Total bytes of the segments.
    member _.Length = if segCount = 0 then 0 else segEnd[segCount - 1]

    /// Points the message at `source`, where its `segments` segments lie (set with `SetSegment`);
    /// `streamOffset` is the position of `source[0]` in the decompressed stream.
    member internal _.Attach(source: byte array, segments: int, offsetOfIndex0: int64) =
        buffer <- source

        if segStart.Length < segments then
            segStart <- Array.zeroCreate segments
            segEnd <- Array.zeroCreate segments

        segCount <- segments
        streamOffset <- offsetOfIndex0
        remaining <- options.TraversalLimitWords

    /// Records the bounds of segment `i` (absolute positions in the attached buffer).
    member internal _.SetSegment(i: int, start: int, length: int) =
        segStart[i] <- start
        segEnd[i] <- start + length

    member private _.Fail(pos: int, reason: DecodeReason) : 'a =
        Throw.decode (streamOffset + int64 pos) reason

    member private this.Charge(words: int64, pos: int) =
        remaining <- remaining - words

        if remaining < 0L then
            this.Fail(pos, DecodeReason.TraversalLimit options.TraversalLimitWords)

    member private this.CheckDepth(depth: int, pos: int) =
        if depth > options.NestingLimit then
            this.Fail(pos, DecodeReason.NestingLimit options.NestingLimit)

    member inline private _.Word(pos: int) : uint64 =
        BinaryPrimitives.ReadUInt64LittleEndian(ReadOnlySpan(buffer, pos, 8))

    /// Where a struct or list pointer at `pos` points; computed in 64 bits so that a huge offset
    /// cannot wrap around into the buffer (an out-of-range target becomes -1, caught by the range check).
    member private _.Target(pos: int, word: uint64) : int =
        let target = int64 pos + 8L + int64 (int32 (uint32 word) >>> 2) * 8L

        if target < 0L || target > int64 Int32.MaxValue then
            -1
        else
            int target

    /// Follows a pointer (through far pointers) to its content. Returns the segment, the content
    /// position and the word describing the content; word 0 means null. A pointer field the struct
    /// does not have (`PointerField` gives -1) reads as null.
    member private this.Resolve(segment: int, ptrPos: int, outSegment: byref<int>, outPos: byref<int>) : uint64 =
        let word = if ptrPos < 0 then 0UL else this.Word ptrPos

        match int (word &&& 3UL) with
        | _ when word = 0UL -> 0UL
        | 0
        | 1 ->
            outSegment <- segment
            outPos <- this.Target(ptrPos, word)
            word
        | 2 ->
            let doubleFar = (word >>> 2) &&& 1UL = 1UL
            let padWords = int64 ((uint32 word) >>> 3)
            // Compared unsigned: a segment id of 2^31 or more must not wrap to a negative index.
            if (word >>> 32) >= uint64 segCount then
                this.Fail(ptrPos, DecodeReason.BadFarPointer $"segment {word >>> 32} of {segCount}")

            let target = int (word >>> 32)

            let padPos = int64 segStart[target] + padWords * 8L
            let padSize = if doubleFar then 16L else 8L

            if padPos + padSize > int64 segEnd[target] then
                this.Fail(ptrPos, DecodeReason.BadFarPointer "landing pad outside its segment")

            let padPos = int padPos
            let pad = this.Word padPos

            if not doubleFar then
                match int (pad &&& 3UL) with
                | 0
                | 1 ->
                    outSegment <- target
                    outPos <- this.Target(padPos, pad)
                    pad
                | _ -> this.Fail(padPos, DecodeReason.BadFarPointer $"landing pad is a {kindName pad} pointer")
            else
                if pad &&& 7UL <> 2UL then
                    this.Fail(
                        padPos,
                        DecodeReason.BadFarPointer "double landing pad does not start with a single far pointer"
                    )

                if (pad >>> 32) >= uint64 segCount then
                    this.Fail(padPos, DecodeReason.BadFarPointer $"segment {pad >>> 32} of {segCount}")

                let contentSegment = int (pad >>> 32)

                let tag = this.Word(padPos + 8)

                if tag &&& 3UL > 1UL then
                    this.Fail(padPos + 8, DecodeReason.BadFarPointer $"landing pad tag is a {kindName tag} pointer")

                let start = int64 segStart[contentSegment] + int64 ((uint32 pad) >>> 3) * 8L

                if start > int64 segEnd[contentSegment] then
                    this.Fail(padPos, DecodeReason.PointerOutOfBounds)

                outSegment <- contentSegment
                outPos <- int start
                tag
        | _ -> this.Fail(ptrPos, DecodeReason.CapabilityPointer)

    member private this.CheckRange(segment: int, pos: int, bytes: int64, ptrPos: int) =
        if pos < 0 || pos < segStart[segment] || int64 pos + bytes > int64 segEnd[segment] then
            this.Fail(ptrPos, DecodeReason.PointerOutOfBounds)

    /// The root struct (pointer 0 of segment 0).
    member this.Root: StructRef =
        if segCount = 0 || segEnd[0] - segStart[0] < 8 then
            this.Fail(
                (if segCount = 0 then 0 else segStart[0]),
                DecodeReason.Truncated(8L, int64 (segEnd[0] - segStart[0]))
            )

        this.StructAt(0, segStart[0], 0)

    /// Reads the struct a pointer at `ptrPos` (in `segment`) points to; null reads as empty.
    member this.StructAt(segment: int, ptrPos: int, depth: int) : StructRef =
        let mutable seg = 0
        let mutable pos = 0
        let word = this.Resolve(segment, ptrPos, &seg, &pos)

        if word = 0UL then
            StructRef.Empty
        else
            if word &&& 3UL <> 0UL then
                this.Fail(ptrPos, DecodeReason.UnexpectedPointer("struct", kindName word))

            this.CheckDepth(depth + 1, ptrPos)
            let dataWords = int ((word >>> 32) &&& 0xFFFFUL)
            let ptrCount = int (word >>> 48)
            let words = int64 (dataWords + ptrCount)
            this.CheckRange(seg, pos, words * 8L, ptrPos)
            this.Charge(words, ptrPos)

            {
                DataPos = pos
                DataBytes = dataWords * 8
                PtrPos = pos + dataWords * 8
                PtrCount = ptrCount
                Segment = seg
                Depth = depth + 1
            }

    /// Reads the list a pointer at `ptrPos` points to; null reads as empty.
    member this.ListAt(segment: int, ptrPos: int, depth: int) : ListRef =
        let mutable seg = 0
        let mutable pos = 0
        let word = this.Resolve(segment, ptrPos, &seg, &pos)

        if word = 0UL then
            ListRef.Empty
        else
            if word &&& 3UL <> 1UL then
                this.Fail(ptrPos, DecodeReason.UnexpectedPointer("list", kindName word))

            this.CheckDepth(depth + 1, ptrPos)
            let elementSize = int ((word >>> 32) &&& 7UL)
            let count = int (word >>> 35)

            if elementSize = 7 then
                let words = int64 count
                this.CheckRange(seg, pos, (words + 1L) * 8L, ptrPos)
                let tag = this.Word pos

                if tag &&& 3UL <> 0UL then
                    this.Fail(pos, DecodeReason.UnexpectedPointer("struct tag", kindName tag))

                let elements = int ((uint32 tag) >>> 2)
                let dataWords = int ((tag >>> 32) &&& 0xFFFFUL)
                let ptrCount = int (tag >>> 48)
                let perElement = int64 (dataWords + ptrCount)

                if int64 elements * perElement > words then
                    this.Fail(pos, DecodeReason.PointerOutOfBounds)

                // Zero-sized elements still cost a word each, so a huge count cannot amplify.
                this.Charge(max (words + 1L) (int64 elements), ptrPos)

                {
                    Pos = pos + 8
                    Count = elements
                    ElementSize = 7
                    StepBytes = int perElement * 8
                    StructDataBytes = dataWords * 8
                    StructPtrCount = ptrCount
                    Segment = seg
                    Depth = depth + 1
                }
            else
                let bits = bitsOf elementSize
                let bytes = (int64 count * int64 bits + 7L) / 8L
                this.CheckRange(seg, pos, bytes, ptrPos)
                this.Charge(max ((bytes + 7L) / 8L) (if bits = 0 then int64 count else 0L), ptrPos)

                {
                    Pos = pos
                    Count = count
                    ElementSize = elementSize
                    StepBytes = bits / 8
                    StructDataBytes = (if elementSize >= 2 && elementSize <= 5 then bits / 8 else 0)
                    StructPtrCount = (if elementSize = 6 then 1 else 0)
                    Segment = seg
                    Depth = depth + 1
                }

    /// A byte list (Text or Data); `None` when the pointer is null.
    member private this.Bytes(segment: int, ptrPos: int, depth: int, what: string) : ListRef voption =
        let list = this.ListAt(segment, ptrPos, depth)

        if list.Count = 0 && list.ElementSize = 0 then
            ValueNone
        else
            if list.ElementSize <> 2 then
                this.Fail(
                    ptrPos,
                    DecodeReason.UnexpectedPointer($"{what} (byte list)", $"element size {list.ElementSize}")
                )

            ValueSome list

    /// Position and length of a Text (without its NUL); length -1 when the pointer is null.
    member this.TextAt(segment: int, ptrPos: int, depth: int, length: byref<int>) : int =
        match this.Bytes(segment, ptrPos, depth, "text") with
        | ValueNone ->
            length <- -1
            0
        | ValueSome list ->
            if list.Count = 0 || buffer[list.Pos + list.Count - 1] <> 0uy then
                this.Fail(ptrPos, DecodeReason.TextNotTerminated)

            length <- list.Count - 1
            list.Pos

    /// Position and length of a Data blob; length -1 when the pointer is null.
    member this.DataAt(segment: int, ptrPos: int, depth: int, length: byref<int>) : int =
        let word = if ptrPos < 0 then 0UL else this.Word ptrPos

        // Fast path for the common case (a near pointer to a byte list inside its segment), with
        // the same checks as the general path; everything else takes the general path.
        if word &&& 0x7_0000_0003UL = 0x2_0000_0001UL && depth < options.NestingLimit then
            let count = int (word >>> 35)
            let pos = this.Target(ptrPos, word)

            if pos >= segStart[segment] && int64 pos + int64 count <= int64 segEnd[segment] then
                this.Charge(int64 ((count + 7) / 8), ptrPos)
                length <- count
                pos
            else
                this.General(segment, ptrPos, depth, &length)
        else
            this.General(segment, ptrPos, depth, &length)

    member private this.General(segment: int, ptrPos: int, depth: int, length: byref<int>) : int =
        match this.Bytes(segment, ptrPos, depth, "data") with
        | ValueNone ->
            length <- -1
            0
        | ValueSome list ->
            length <- list.Count
            list.Pos

    /// Element `i` of a list read as a struct (composite lists, and primitive lists upgraded).
    member this.StructElement(list: ListRef, i: int) : StructRef =
        match list.ElementSize with
        | 7 ->
            let pos = list.Pos + i * list.StepBytes

            {
                DataPos = pos
                DataBytes = list.StructDataBytes
                PtrPos = pos + list.StructDataBytes
                PtrCount = list.StructPtrCount
                Segment = list.Segment
                Depth = list.Depth
            }
        | 6 -> {
            DataPos = 0
            DataBytes = 0
            PtrPos = list.Pos + i * 8
            PtrCount = 1
            Segment = list.Segment
            Depth = list.Depth
          }
        | 0 -> {
            StructRef.Empty with
                Segment = list.Segment
                Depth = list.Depth
          }
        | 1 -> this.Fail(list.Pos, DecodeReason.UnexpectedPointer("struct list", "bit list"))
        | _ -> {
            DataPos = list.Pos + i * list.StepBytes
            DataBytes = list.StepBytes
            PtrPos = 0
            PtrCount = 0
            Segment = list.Segment
            Depth = list.Depth
          }

    /// Position of the pointer of element `i` of a pointer list.
    member this.PointerElement(list: ListRef, i: int) : int =
        match list.ElementSize with
        | 6 -> list.Pos + i * 8
        | 7 when list.StructPtrCount > 0 -> list.Pos + i * list.StepBytes + list.StructDataBytes
        | _ -> this.Fail(list.Pos, DecodeReason.UnexpectedPointer("pointer list", $"element size {list.ElementSize}"))

    /// Position of the pointer field `index` of `s`, or -1 when the struct has no such pointer.
    member _.PointerField(s: StructRef, index: int) : int =
        if index < s.PtrCount then s.PtrPos + index * 8 else -1

    /// Bit `bit` of the data section (false beyond it).
    member _.Bool(s: StructRef, bit: int) : bool =
        let b = bit >>> 3
        b < s.DataBytes && (buffer[s.DataPos + b] >>> (bit &&& 7)) &&& 1uy = 1uy

    /// The byte at `offset` of the data section (0 beyond it).
    member _.UInt8(s: StructRef, offset: int) : byte =
        if offset < s.DataBytes then
            buffer[s.DataPos + offset]
        else
            0uy

    /// The 16-bit value at byte `offset` of the data section (0 beyond it).
    member _.UInt16(s: StructRef, offset: int) : uint16 =
        if offset + 2 <= s.DataBytes then
            BinaryPrimitives.ReadUInt16LittleEndian(ReadOnlySpan(buffer, s.DataPos + offset, 2))
        else
            0us

    /// The 32-bit value at byte `offset` of the data section (0 beyond it).
    member _.UInt32(s: StructRef, offset: int) : uint32 =
        if offset + 4 <= s.DataBytes then
            BinaryPrimitives.ReadUInt32LittleEndian(ReadOnlySpan(buffer, s.DataPos + offset, 4))
        else
            0u

    /// The 64-bit value at byte `offset` of the data section (0 beyond it).
    member _.UInt64(s: StructRef, offset: int) : uint64 =
        if offset + 8 <= s.DataBytes then
            BinaryPrimitives.ReadUInt64LittleEndian(ReadOnlySpan(buffer, s.DataPos + offset, 8))
        else
            0UL

    /// A view of message bytes.
    member _.Span(pos: int, length: int) : ReadOnlySpan<byte> = ReadOnlySpan(buffer, pos, length)
