namespace CtsLite.Logs

open System
open System.Buffers.Binary
open System.Runtime.CompilerServices
open System.Text
open CtsLite.Can
open CtsLite.Capnp

/// Where the hot fields of `Event` and `CanData` live, looked up once from the schema so the fast
/// paths read fixed offsets and still follow whatever schema the user passes.
type EventLayout = {
    Event: StructNode
    LogMonoTimeByte: int
    ValidBit: int
    ValidDefault: bool
    DiscriminantByte: int
    CanDiscriminant: int
    SendcanDiscriminant: int
    CanPointer: int
    SendcanPointer: int
    AddressByte: int
    SrcByte: int
    DatPointer: int
}

/// Where one CAN frame of a `can`/`sendcan` event lies: `PayloadPos`/`PayloadLength` locate the
/// payload in the message buffer, valid until the next message is read (what `CanCursor` reads
/// through when a list is not laid out for its fast path).
[<Struct>]
type internal FrameSlot = {
    /// The raw `src` byte: 0–2 receive buses, 128+bus TX echoes, 192+bus rejected TX.
    Src: byte
    Address: uint32
    PayloadPos: int
    PayloadLength: int
}

/// The frames of one `can`/`sendcan` event, with what they share read once.
[<Struct>]
type CanBatch = {
    Frames: ListRef
    LogMonoTime: uint64
    Service: CanService
} with

    /// The number of frames.
    member b.Count = b.Frames.Count

/// The fast, allocation-free view of events.
[<RequireQualifiedAccess>]
module EventLayout =

    let private slot (node: StructNode) (name: string) =
        match node.TryField name with
        | Some f ->
            match f.Kind with
            | FieldKind.Slot(position, fieldType, defaultBits) -> Ok(f, position, fieldType, defaultBits)
            | FieldKind.Group _ -> Error $"{node.Name}.{name} is a group, not a field"
        | None -> Error $"{node.Name} has no field '{name}'"

    /// Finds the layout in `schema`; fails when the schema lacks `Event` or its CAN fields.
    let ofSchema (schema: Schema) : Result<EventLayout, string> =
        match schema.TryFindStruct "Event", schema.TryFindStruct "CanData" with
        | Some event, Some canData ->
            let fields =
                [
                    slot event "logMonoTime"
                    slot event "valid"
                    slot event "can"
                    slot event "sendcan"
                ]
                @ [ slot canData "address"; slot canData "src"; slot canData "dat" ]

            match
                fields
                |> List.tryPick (function
                    | Error e -> Some e
                    | Ok _ -> None)
            with
            | Some e -> Error e
            | None ->
                let get i =
                    match fields[i] with
                    | Ok v -> v
                    | Error e -> failwith e

                let _, mono, _, _ = get 0
                let _, valid, _, validDefault = get 1
                let can, canPtr, _, _ = get 2
                let sendcan, sendcanPtr, _, _ = get 3
                let _, address, _, _ = get 4
                let _, src, _, _ = get 5
                let _, dat, _, _ = get 6

                Ok {
                    Event = event
                    LogMonoTimeByte = mono
                    ValidBit = valid
                    ValidDefault = validDefault <> 0UL
                    DiscriminantByte = event.DiscriminantByte
                    CanDiscriminant = can.Discriminant
                    SendcanDiscriminant = sendcan.Discriminant
                    CanPointer = canPtr
                    SendcanPointer = sendcanPtr
                    AddressByte = address
                    SrcByte = src
                    DatPointer = dat
                }
        | _ -> Error "the schema has no Event or CanData struct"

/// Reading events through a layout.
[<RequireQualifiedAccess>]
module Event =

    /// `logMonoTime` in nanoseconds.
    let logMonoTime (m: Message) (layout: EventLayout) (event: StructRef) : uint64 =
        m.UInt64(event, layout.LogMonoTimeByte)

    /// The `valid` flag.
    let valid (m: Message) (layout: EventLayout) (event: StructRef) : bool =
        m.Bool(event, layout.ValidBit) <> layout.ValidDefault

    /// The union discriminant (which service the event carries).
    let which (m: Message) (layout: EventLayout) (event: StructRef) : int =
        int (m.UInt16(event, layout.DiscriminantByte))

    /// The union member's name, or `unknown(<n>)` when the schema does not know it.
    let whichName (layout: EventLayout) (discriminant: int) : string =
        let members = layout.Event.UnionMembers

        if discriminant < members.Length && not (isNull members[discriminant]) then
            members[discriminant].Name
        else
            $"unknown({discriminant})"

    /// The discriminant of a service name, if the schema has it.
    let discriminantOf (layout: EventLayout) (service: string) : int option =
        layout.Event.UnionMembers
        |> Array.tryFindIndex (fun f -> not (isNull f) && f.Name = service)

    /// The CAN frame list of a `can`/`sendcan` event (empty for other events).
    let canList (m: Message) (layout: EventLayout) (event: StructRef) : ListRef =
        let d = which m layout event

        let pointer =
            if d = layout.CanDiscriminant then
                layout.CanPointer
            elif d = layout.SendcanDiscriminant then
                layout.SendcanPointer
            else
                -1

        if pointer < 0 then
            ListRef.Empty
        else
            match m.PointerField(event, pointer) with
            | -1 -> ListRef.Empty
            | p -> m.ListAt(event.Segment, p, event.Depth)

    /// The frames of a `can`/`sendcan` event (none for other events).
    let canBatch (m: Message) (layout: EventLayout) (event: StructRef) : CanBatch = {
        Frames = canList m layout event
        LogMonoTime = logMonoTime m layout event
        Service =
            if which m layout event = layout.SendcanDiscriminant then
                CanService.Sendcan
            else
                CanService.Can
    }

    /// Frame `i` of a batch, through the general reader (any list layout, far pointers). To walk
    /// all frames of a batch, `CanCursor` is the fast path.
    let internal canFrame (m: Message) (layout: EventLayout) (batch: CanBatch) (i: int) : FrameSlot =
        let s = m.StructElement(batch.Frames, i)
        let mutable length = 0

        let pos =
            match m.PointerField(s, layout.DatPointer) with
            | -1 ->
                length <- 0
                0
            | p -> m.DataAt(s.Segment, p, s.Depth, &length)

        {
            Src = m.UInt8(s, layout.SrcByte)
            Address = m.UInt32(s, layout.AddressByte)
            PayloadPos = pos
            PayloadLength = max 0 length
        }

/// The allocation-free way through the frames of a `can`/`sendcan` event: a byref-like cursor (keep
/// it in a `let mutable`) that reads each frame with one bounds check and resolves near payload
/// pointers inline, falling back to the general reader for anything else (far pointers, lists not
/// laid out as structs). `Payload` is a view of the message buffer, valid until the next event.
[<Struct; IsByRefLike; NoEquality; NoComparison>]
type CanCursor =
    val private buffer: ReadOnlySpan<byte>
    val private message: Message
    val private layout: EventLayout
    val private batch: CanBatch
    val private fast: bool
    val private count: int
    val private step: int
    val private addressByte: int
    val private srcByte: int
    val mutable private pos: int
    val private datOffset: int
    val private segmentStart: int
    val private segmentEnd: int
    val mutable private index: int
    val mutable private address: uint32
    val mutable private src: byte
    val mutable private payloadPos: int
    val mutable private payloadLength: int

    /// A cursor before the first frame of `batch`.
    new(m: Message, layout: EventLayout, batch: CanBatch) =
        let list = batch.Frames

        {
            buffer = ReadOnlySpan(m.Buffer)
            message = m
            layout = layout
            batch = batch
            fast =
                list.ElementSize = 7
                && list.StructDataBytes >= layout.AddressByte + 4
                && list.StructDataBytes > layout.SrcByte
                && list.StructPtrCount > layout.DatPointer
            count = list.Count
            step = list.StepBytes
            addressByte = layout.AddressByte
            srcByte = layout.SrcByte
            pos = list.Pos - list.StepBytes
            datOffset = list.StructDataBytes + 8 * layout.DatPointer
            segmentStart = (if list.Count > 0 then m.SegmentStart list.Segment else 0)
            segmentEnd = (if list.Count > 0 then m.SegmentEnd list.Segment else 0)
            index = -1
            address = 0u
            src = 0uy
            payloadPos = 0
            payloadLength = 0
        }

    /// The longest payload a CAN frame has (CAN FD); a longer one is damage.
    static member MaxPayload = 64

    /// Moves to the next frame; false after the last.
    member this.MoveNext() : bool =
        this.index <- this.index + 1
        this.pos <- this.pos + this.step

        if this.index >= this.count then
            false
        else
            if this.fast then
                let pos = this.pos
                let element = this.buffer.Slice(pos, this.step)
                this.address <- BinaryPrimitives.ReadUInt32LittleEndian(element.Slice(this.addressByte, 4))
                this.src <- element[this.srcByte]
                let word = BinaryPrimitives.ReadUInt64LittleEndian(element.Slice(this.datOffset, 8))
                let pointerPos = pos + this.datOffset

                if word = 0UL then
                    this.payloadPos <- 0
                    this.payloadLength <- 0
                elif word &&& 0x7_0000_0003UL = 0x2_0000_0001UL then
                    let count = int (word >>> 35)
                    let target = int64 pointerPos + 8L + int64 (int32 (uint32 word) >>> 2) * 8L

                    if
                        target >= int64 this.segmentStart
                        && target + int64 count <= int64 this.segmentEnd
                    then
                        this.message.ChargeWords(int64 ((count + 7) / 8), pointerPos)
                        this.payloadPos <- int target
                        this.payloadLength <- count
                    else
                        this.Slow pointerPos
                else
                    this.Slow pointerPos
            else
                let f = Event.canFrame this.message this.layout this.batch this.index
                this.address <- f.Address
                this.src <- f.Src
                this.payloadPos <- f.PayloadPos
                this.payloadLength <- f.PayloadLength

            // Not a CAN frame: no reader copies more than a real frame's bytes, whatever a log
            // claims (100,000 frames pointing at one 64 KiB blob would otherwise be 6 GB).
            if this.payloadLength > CanCursor.MaxPayload then
                Throw.decode (int64 this.pos) (DecodeReason.CanPayloadTooLong this.payloadLength)

            true

    member private this.Slow(pointerPos: int) =
        let mutable length = 0
        this.payloadPos <- this.message.DataAt(this.batch.Frames.Segment, pointerPos, this.batch.Frames.Depth, &length)
        this.payloadLength <- max 0 length

    /// The frame's CAN id.
    member this.Address = this.address
    /// The raw src byte (0–2 receive buses, 128+bus TX echoes, 192+bus rejected TX).
    member this.Src = this.src

    /// The payload bytes (a view of the message buffer).
    member this.Payload: ReadOnlySpan<byte> =
        this.buffer.Slice(this.payloadPos, this.payloadLength)

    /// logMonoTime of the event, in nanoseconds.
    member this.LogMonoTime = this.batch.LogMonoTime
    /// `can` or `sendcan`.
    member this.Service = this.batch.Service

/// A field value read by path.
[<RequireQualifiedAccess>]
type FieldValue =
    | Missing
    | Void
    | Bool of bool
    | Int of int64
    | UInt of uint64
    | Float of float
    | Text of string
    | Data of byte array
    | Enum of name: string * value: int
    /// Structs and lists, as the JSON `capnp convert` would print.
    | Json of string

/// Reading any field of an event by path, such as `carState.vEgo` or `pandaStates[0].controlsAllowed`.
[<RequireQualifiedAccess>]
module FieldPath =

    type private Step =
        | Name of string
        | Index of int

    /// The service a path reads: its first name (`carState` of `carState.vEgo`, `pandaStates`
    /// of `pandaStates[0].controlsAllowed`).
    let internal service (path: string) : string =
        let cut = path.IndexOfAny [| '.'; '[' |]
        if cut < 0 then path else path.Substring(0, cut)

    /// Splits `a.b[2].c` into steps; `None` when malformed.
    let private parse (path: string) : Step list option =
        let steps = ResizeArray<Step>()
        let mutable ok = path.Length > 0

        for part in path.Split '.' do
            if ok then
                let bracket = part.IndexOf '['
                let name = if bracket < 0 then part else part.Substring(0, bracket)

                if name = "" then ok <- false else steps.Add(Name name)

                let mutable rest = if bracket < 0 then "" else part.Substring bracket

                while ok && rest.Length > 0 do
                    let close = rest.IndexOf ']'

                    match close with
                    | c when c > 1 && rest[0] = '[' ->
                        match Int32.TryParse(rest.Substring(1, c - 1)) with
                        | true, i when i >= 0 ->
                            steps.Add(Index i)
                            rest <- rest.Substring(c + 1)
                        | _ -> ok <- false
                    | _ -> ok <- false

        if ok then Some(List.ofSeq steps) else None

    let private scalar
        (m: Message)
        (s: StructRef)
        (fieldType: SchemaType)
        (position: int)
        (bits: uint64)
        (schema: Schema)
        =
        match fieldType with
        | SchemaType.Void -> FieldValue.Void
        | SchemaType.Bool -> FieldValue.Bool(m.Bool(s, position) <> (bits <> 0UL))
        | SchemaType.Int8 -> FieldValue.Int(int64 (sbyte (m.UInt8(s, position) ^^^ byte bits)))
        | SchemaType.Int16 -> FieldValue.Int(int64 (int16 (m.UInt16(s, position) ^^^ uint16 bits)))
        | SchemaType.Int32 -> FieldValue.Int(int64 (int32 (m.UInt32(s, position) ^^^ uint32 bits)))
        | SchemaType.Int64 -> FieldValue.Int(int64 (m.UInt64(s, position) ^^^ bits))
        | SchemaType.UInt8 -> FieldValue.UInt(uint64 (m.UInt8(s, position) ^^^ byte bits))
        | SchemaType.UInt16 -> FieldValue.UInt(uint64 (m.UInt16(s, position) ^^^ uint16 bits))
        | SchemaType.UInt32 -> FieldValue.UInt(uint64 (m.UInt32(s, position) ^^^ uint32 bits))
        | SchemaType.UInt64 -> FieldValue.UInt(m.UInt64(s, position) ^^^ bits)
        | SchemaType.Float32 ->
            FieldValue.Float(float (BitConverter.UInt32BitsToSingle(m.UInt32(s, position) ^^^ uint32 bits)))
        | SchemaType.Float64 -> FieldValue.Float(BitConverter.UInt64BitsToDouble(m.UInt64(s, position) ^^^ bits))
        | SchemaType.Enum typeId ->
            let raw = int (m.UInt16(s, position) ^^^ uint16 bits)

            match schema.Enums.TryGetValue typeId with
            | true, e when raw < e.Enumerants.Length -> FieldValue.Enum(e.Enumerants[raw], raw)
            | _ -> FieldValue.Enum($"unknown({raw})", raw)
        | _ -> FieldValue.Missing

    let private toJson (schema: Schema) (m: Message) (typeId: uint64) (s: StructRef) =
        match schema.Structs.TryGetValue typeId with
        | true, node ->
            let w = Buffers.ArrayBufferWriter<byte>()
            Json.writeStruct schema m node s w
            FieldValue.Json(Encoding.UTF8.GetString w.WrittenSpan)
        | false, _ -> FieldValue.Missing

    /// Reads `path` from the struct `s` of type `node`. A union member that is not the active one,
    /// an unknown name or an index past the end reads as `Missing`.
    let read
        (schema: Schema)
        (m: Message)
        (node: StructNode)
        (s: StructRef)
        (path: string)
        : Result<FieldValue, DecodeError> =
        let rec walk (node: StructNode) (s: StructRef) (steps: Step list) : FieldValue =
            match steps with
            | [] -> toJson schema m node.Id s
            | Index _ :: _ -> FieldValue.Missing
            | Name name :: rest ->
                match node.TryField name with
                | None -> FieldValue.Missing
                | Some f when
                    f.Discriminant >= 0
                    && int (m.UInt16(s, node.DiscriminantByte)) <> f.Discriminant
                    ->
                    FieldValue.Missing
                | Some f ->
                    match f.Kind with
                    | FieldKind.Group typeId -> walk schema.Structs[typeId] s rest
                    | FieldKind.Slot(position, fieldType, bits) -> value fieldType s position bits rest

        and value (fieldType: SchemaType) (s: StructRef) (position: int) (bits: uint64) (rest: Step list) =
            match fieldType, rest with
            | SchemaType.Struct(typeId, _), _ ->
                match m.PointerField(s, position) with
                | -1 -> FieldValue.Missing
                | p -> walk schema.Structs[typeId] (m.StructAt(s.Segment, p, s.Depth)) rest
            | SchemaType.List element, _ ->
                match m.PointerField(s, position) with
                | -1 -> FieldValue.Missing
                | p ->
                    let list = m.ListAt(s.Segment, p, s.Depth)

                    match rest with
                    | Index i :: more when i < list.Count ->
                        match element with
                        | SchemaType.Struct(typeId, _) -> walk schema.Structs[typeId] (m.StructElement(list, i)) more
                        | SchemaType.Text
                        | SchemaType.Data
                        | SchemaType.List _ ->
                            let elementPos = m.PointerElement(list, i)

                            let holder = {
                                StructRef.Empty with
                                    PtrPos = elementPos
                                    PtrCount = 1
                                    Segment = list.Segment
                                    Depth = list.Depth
                            }

                            value element holder 0 0UL more
                        | SchemaType.Bool when list.ElementSize = 1 && more.IsEmpty ->
                            let bit = i
                            FieldValue.Bool((m.Buffer[list.Pos + (bit >>> 3)] >>> (bit &&& 7)) &&& 1uy = 1uy)
                        | scalarType when more.IsEmpty -> scalar m (m.StructElement(list, i)) scalarType 0 0UL schema
                        | _ -> FieldValue.Missing
                    | [] -> FieldValue.Json(listJson list element)
                    | _ -> FieldValue.Missing
            | SchemaType.Text, [] ->
                match m.PointerField(s, position) with
                | -1 -> FieldValue.Text ""
                | p ->
                    let mutable length = 0
                    let pos = m.TextAt(s.Segment, p, s.Depth, &length)

                    FieldValue.Text(
                        if length <= 0 then
                            ""
                        else
                            Encoding.UTF8.GetString(m.Span(pos, length))
                    )
            | SchemaType.Data, [] ->
                match m.PointerField(s, position) with
                | -1 -> FieldValue.Data [||]
                | p ->
                    let mutable length = 0
                    let pos = m.DataAt(s.Segment, p, s.Depth, &length)
                    FieldValue.Data(if length <= 0 then [||] else m.Span(pos, length).ToArray())
            | scalarType, [] -> scalar m s scalarType position bits schema
            | _ -> FieldValue.Missing

        and listJson (list: ListRef) (element: SchemaType) : string =
            let sb = StringBuilder("[")

            for i in 0 .. list.Count - 1 do
                if i > 0 then
                    sb.Append ',' |> ignore

                let item =
                    match element with
                    | SchemaType.Struct(typeId, _) -> toJson schema m typeId (m.StructElement(list, i))
                    | _ -> value element (m.StructElement(list, i)) 0 0UL []

                match item with
                | FieldValue.Json j -> sb.Append j |> ignore
                | FieldValue.Text t -> sb.Append(Text.Json.JsonSerializer.Serialize t) |> ignore
                | FieldValue.Bool b -> sb.Append(if b then "true" else "false") |> ignore
                | FieldValue.Int n -> sb.Append n |> ignore
                | FieldValue.UInt n -> sb.Append n |> ignore
                | FieldValue.Float f -> sb.Append(Json.formatDouble f) |> ignore
                | FieldValue.Enum(name, _) -> sb.Append('"').Append(name).Append('"') |> ignore
                | _ -> sb.Append "null" |> ignore

            sb.Append(']').ToString()

        match parse path with
        | None ->
            Error {
                Source = path
                Offset = 0L
                Reason = DecodeReason.Schema $"malformed field path '{path}' (expected name.name[index])"
            }
        | Some steps ->
            try
                Ok(walk node s steps)
            with Decode(offset, reason) ->
                Error {
                    Source = path
                    Offset = offset
                    Reason = reason
                }
