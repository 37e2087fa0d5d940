namespace CtsLite.Capnp

open System
open System.Buffers
open System.Globalization

/// Schema-driven JSON exactly as `capnp convert --short binary:json` (capnp 0.9) prints it:
/// fields outside the union in ordinal order, then the active union member; null pointers left out,
/// except the active union member, which prints its default (`""`, `[]`, a default struct); 64-bit
/// integers as strings; Data as
/// arrays of numbers; floats widened to double and printed `%.15g`, or `%.17g` when that is needed
/// to read back the same double, without a `+` in the exponent; NaN and infinities as strings;
/// unknown union members left out; unknown enum values as numbers.
[<RequireQualifiedAccess>]
module Json =

    let private invariant = CultureInfo.InvariantCulture

    /// C's `%.<precision>g`.
    let private formatG (value: float) (precision: int) : string =
        let e = value.ToString("E" + string (precision - 1), invariant)
        let mantissaEnd = e.IndexOf 'E'

        let exponent =
            Int32.Parse(e.AsSpan(mantissaEnd + 1), NumberStyles.AllowLeadingSign, invariant)

        let negative = e[0] = '-'

        let digits =
            e.Substring((if negative then 1 else 0), mantissaEnd - (if negative then 1 else 0)).Replace(".", "")

        let sign = if negative then "-" else ""

        if exponent < -4 || exponent >= precision then
            let mantissa = digits.TrimEnd '0'

            let mantissa =
                if mantissa.Length > 1 then
                    mantissa.Insert(1, ".")
                else
                    mantissa

            let expSign = if exponent < 0 then "-" else "+"
            let expDigits = (abs exponent).ToString("00", invariant)
            sign + mantissa + "e" + expSign + expDigits
        elif exponent >= 0 then
            let whole = digits.Substring(0, exponent + 1)
            let fraction = digits.Substring(exponent + 1).TrimEnd '0'

            if fraction.Length = 0 then
                sign + whole
            else
                sign + whole + "." + fraction
        else
            let fraction = (String('0', -exponent - 1) + digits).TrimEnd '0'
            sign + "0." + fraction

    /// A double as capnp's JSON prints it (without quotes for finite values).
    let formatDouble (value: float) : string =
        if Double.IsNaN value then
            "\"NaN\""
        elif Double.IsPositiveInfinity value then
            "\"Infinity\""
        elif Double.IsNegativeInfinity value then
            "\"-Infinity\""
        elif value = 0.0 then
            (if Double.IsNegative value then "-0" else "0")
        else
            let short = formatG value 15

            let chosen =
                if Double.Parse(short, invariant) = value then
                    short
                else
                    formatG value 17

            chosen.Replace("e+", "e")

    let private hex = "0123456789abcdef"B

    let inline private put (w: IBufferWriter<byte>) (b: byte) =
        let span = w.GetSpan 1
        span[0] <- b
        w.Advance 1

    let private putBytes (w: IBufferWriter<byte>) (bytes: ReadOnlySpan<byte>) =
        let span = w.GetSpan bytes.Length
        bytes.CopyTo span
        w.Advance bytes.Length

    let private putAscii (w: IBufferWriter<byte>) (s: string) =
        let span = w.GetSpan s.Length

        for i in 0 .. s.Length - 1 do
            span[i] <- byte s[i]

        w.Advance s.Length

    /// A JSON string of raw UTF-8 bytes with capnp's escapes.
    let private putString (w: IBufferWriter<byte>) (text: ReadOnlySpan<byte>) =
        put w '"'B

        for c in text do
            match c with
            | '"'B -> putAscii w "\\\""
            | '\\'B -> putAscii w "\\\\"
            | '\b'B -> putAscii w "\\b"
            | '\012'B -> putAscii w "\\f"
            | '\n'B -> putAscii w "\\n"
            | '\r'B -> putAscii w "\\r"
            | '\t'B -> putAscii w "\\t"
            | c when c < 0x20uy ->
                putAscii w "\\u00"
                put w hex[int (c >>> 4)]
                put w hex[int (c &&& 15uy)]
            | c -> put w c

        put w '"'B

    let private putUInt64 (w: IBufferWriter<byte>) (v: uint64) =
        let span = w.GetSpan 20
        let mutable written = 0
        v.TryFormat(span, &written, ReadOnlySpan.Empty, invariant) |> ignore
        w.Advance written

    let private putInt64 (w: IBufferWriter<byte>) (v: int64) =
        let span = w.GetSpan 20
        let mutable written = 0
        v.TryFormat(span, &written, ReadOnlySpan.Empty, invariant) |> ignore
        w.Advance written

    /// Generic parameter bindings in force: scope id -> bound types.
    type private Env = Map<uint64, SchemaType array>

    let rec private resolve (env: Env) (t: SchemaType) : SchemaType =
        match t with
        | SchemaType.Parameter(scope, index) ->
            match env.TryFind scope with
            | Some bindings when index < bindings.Length -> bindings[index]
            | _ -> SchemaType.AnyPointer
        | SchemaType.List element -> SchemaType.List(resolve env element)
        | other -> other

    let private enter (env: Env) (brand: BrandScope list) : Env =
        brand
        |> List.fold
            (fun (acc: Env) scope ->
                match scope.Bindings with
                | Some bindings -> acc.Add(scope.ScopeId, bindings |> Array.map (resolve env))
                | None -> acc)
            env

    /// Types stored behind a pointer (the rest live in the data section).
    let private isPointer (t: SchemaType) =
        match t with
        | SchemaType.Text
        | SchemaType.Data
        | SchemaType.List _
        | SchemaType.Struct _
        | SchemaType.AnyPointer
        | SchemaType.Parameter _
        | SchemaType.Interface -> true
        | _ -> false

    type private Writer(schema: Schema, m: Message, w: IBufferWriter<byte>) =

        member this.Scalar(fieldType: SchemaType, s: StructRef, position: int, defaultBits: uint64) =
            match fieldType with
            | SchemaType.Void -> putAscii w "null"
            | SchemaType.Bool ->
                let v = m.Bool(s, position) <> (defaultBits <> 0UL)
                putAscii w (if v then "true" else "false")
            | SchemaType.Int8 -> putInt64 w (int64 (sbyte (m.UInt8(s, position) ^^^ byte defaultBits)))
            | SchemaType.UInt8 -> putInt64 w (int64 (m.UInt8(s, position) ^^^ byte defaultBits))
            | SchemaType.Int16 -> putInt64 w (int64 (int16 (m.UInt16(s, position) ^^^ uint16 defaultBits)))
            | SchemaType.UInt16 -> putInt64 w (int64 (m.UInt16(s, position) ^^^ uint16 defaultBits))
            | SchemaType.Int32 -> putInt64 w (int64 (int32 (m.UInt32(s, position) ^^^ uint32 defaultBits)))
            | SchemaType.UInt32 -> putInt64 w (int64 (m.UInt32(s, position) ^^^ uint32 defaultBits))
            | SchemaType.Int64 ->
                put w '"'B
                putInt64 w (int64 (m.UInt64(s, position) ^^^ defaultBits))
                put w '"'B
            | SchemaType.UInt64 ->
                put w '"'B
                putUInt64 w (m.UInt64(s, position) ^^^ defaultBits)
                put w '"'B
            | SchemaType.Float32 ->
                let bits = m.UInt32(s, position) ^^^ uint32 defaultBits
                putAscii w (formatDouble (float (BitConverter.UInt32BitsToSingle bits)))
            | SchemaType.Float64 ->
                let bits = m.UInt64(s, position) ^^^ defaultBits
                putAscii w (formatDouble (BitConverter.UInt64BitsToDouble bits))
            | SchemaType.Enum typeId ->
                let raw = m.UInt16(s, position) ^^^ uint16 defaultBits
                this.Enum(typeId, raw)
            | _ -> ()

        member _.Enum(typeId: uint64, raw: uint16) =
            match schema.Enums.TryGetValue typeId with
            | true, e when int raw < e.JsonNames.Length -> putBytes w (ReadOnlySpan e.JsonNames[int raw])
            | _ -> putInt64 w (int64 raw)

        /// Writes the value a pointer at `ptrPos` holds, of type `fieldType`.
        member this.Pointer(env: Env, fieldType: SchemaType, segment: int, ptrPos: int, depth: int) =
            match resolve env fieldType with
            | SchemaType.Text ->
                let mutable length = 0
                let pos = m.TextAt(segment, ptrPos, depth, &length)

                putString
                    w
                    (if length < 0 then
                         ReadOnlySpan.Empty
                     else
                         m.Span(pos, length))
            | SchemaType.Data ->
                let mutable length = 0
                let pos = m.DataAt(segment, ptrPos, depth, &length)
                put w '['B

                for i in 0 .. length - 1 do
                    if i > 0 then
                        put w ','B

                    putInt64 w (int64 m.Buffer[pos + i])

                put w ']'B
            | SchemaType.Struct(typeId, brand) ->
                let s = m.StructAt(segment, ptrPos, depth)
                this.Struct(enter env brand, typeId, s)
            | SchemaType.List element ->
                let list = m.ListAt(segment, ptrPos, depth)
                this.List(env, element, list)
            | _ -> putAscii w "null"

        member this.List(env: Env, element: SchemaType, list: ListRef) =
            put w '['B
            let element = resolve env element

            for i in 0 .. list.Count - 1 do
                if i > 0 then
                    put w ','B

                match element with
                | SchemaType.Struct(typeId, brand) -> this.Struct(enter env brand, typeId, m.StructElement(list, i))
                | SchemaType.Text
                | SchemaType.Data
                | SchemaType.List _
                | SchemaType.AnyPointer
                | SchemaType.Parameter _
                | SchemaType.Interface ->
                    this.Pointer(env, element, list.Segment, m.PointerElement(list, i), list.Depth)
                | SchemaType.Void -> putAscii w "null"
                | SchemaType.Bool ->
                    let bit = list.Pos * 8 + i

                    if list.ElementSize = 1 then
                        putAscii
                            w
                            (if (m.Buffer[bit >>> 3] >>> (bit &&& 7)) &&& 1uy = 1uy then
                                 "true"
                             else
                                 "false")
                    else
                        // A struct list upgraded from bools is not valid; read bit 0 of the element.
                        this.Scalar(SchemaType.Bool, m.StructElement(list, i), 0, 0UL)
                | scalar -> this.Scalar(scalar, m.StructElement(list, i), 0, 0UL)

            put w ']'B

        /// Is the field present for JSON (null pointers are not)?
        member _.Has(s: StructRef, f: SchemaField) =
            match f.Kind with
            | FieldKind.Slot(position, fieldType, _) when isPointer fieldType ->
                let p = m.PointerField(s, position)

                p >= 0
                && Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(m.Span(p, 8)) <> 0UL
            | _ -> true

        member this.Field(env: Env, s: StructRef, f: SchemaField) =
            match f.Kind with
            | FieldKind.Group typeId -> this.Struct(env, typeId, s)
            | FieldKind.Slot(position, fieldType, _) when isPointer fieldType ->
                this.Pointer(env, fieldType, s.Segment, m.PointerField(s, position), s.Depth)
            | FieldKind.Slot(position, scalar, defaultBits) -> this.Scalar(scalar, s, position, defaultBits)

        member this.Struct(env: Env, typeId: uint64, s: StructRef) =
            match schema.Structs.TryGetValue typeId with
            | false, _ -> putAscii w "{}"
            | true, node ->
                put w '{'B
                let mutable first = true

                for f in node.NonUnionFields do
                    if this.Has(s, f) then
                        if not first then
                            put w ','B

                        first <- false
                        putBytes w (ReadOnlySpan f.JsonKey)
                        this.Field(env, s, f)

                if node.DiscriminantCount > 0 then
                    let discriminant = int (m.UInt16(s, node.DiscriminantByte))

                    if
                        discriminant < node.UnionMembers.Length
                        && not (isNull node.UnionMembers[discriminant])
                    then
                        // The active member always prints; a null pointer prints its default.
                        let f = node.UnionMembers[discriminant]

                        if not first then
                            put w ','B

                        putBytes w (ReadOnlySpan f.JsonKey)
                        this.Field(env, s, f)

                put w '}'B

    /// Writes the struct `s` of type `node` as one line of JSON (no newline).
    let writeStruct (schema: Schema) (m: Message) (node: StructNode) (s: StructRef) (w: IBufferWriter<byte>) : unit =
        Writer(schema, m, w).Struct(Map.empty, node.Id, s)

    /// The message's root struct of type `node` as JSON, or the decode error met on the way.
    let messageToJson
        (schema: Schema)
        (m: Message)
        (node: StructNode)
        (source: string)
        (w: IBufferWriter<byte>)
        : Result<unit, DecodeError> =
        try
            writeStruct schema m node m.Root w
            Ok()
        with Decode(offset, reason) ->
            Error {
                Source = source
                Offset = offset
                Reason = reason
            }
