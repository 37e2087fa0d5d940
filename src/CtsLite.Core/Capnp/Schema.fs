namespace CtsLite.Capnp

open System
open System.Collections.Generic
open System.IO
open System.Text

/// A field's type, as the schema declares it.
[<RequireQualifiedAccess>]
type SchemaType =
    | Void
    | Bool
    | Int8
    | Int16
    | Int32
    | Int64
    | UInt8
    | UInt16
    | UInt32
    | UInt64
    | Float32
    | Float64
    | Text
    | Data
    | List of element: SchemaType
    | Enum of typeId: uint64
    /// A struct type; `brand` binds the generic parameters of the struct and its enclosing scopes.
    | Struct of typeId: uint64 * brand: BrandScope list
    | Interface
    | AnyPointer
    /// A generic parameter, resolved through the brand in force where it is read.
    | Parameter of scopeId: uint64 * index: int

/// One scope of a brand: the types bound to that scope's parameters, or `None` to inherit them.
and BrandScope = {
    ScopeId: uint64
    Bindings: SchemaType array option
}

/// Where a field lives.
[<RequireQualifiedAccess>]
type FieldKind =
    /// A value in the data section (`Position` is a byte offset, or a bit offset for Bool) or a
    /// pointer (`Position` is the pointer index); `DefaultBits` is XORed into stored scalars.
    | Slot of position: int * fieldType: SchemaType * defaultBits: uint64
    /// A group: a nested struct view over the same data.
    | Group of typeId: uint64

/// One field of a struct node.
[<Sealed; AllowNullLiteral>]
type SchemaField(name: string, codeOrder: int, discriminant: int, kind: FieldKind, ordinal: int) =
    let key = Encoding.UTF8.GetBytes("\"" + name + "\":")
    /// The field name.
    member _.Name = name
    /// Position in the source code.
    member _.CodeOrder = codeOrder
    /// The union discriminant, or -1 for a field outside the struct's union.
    member _.Discriminant = discriminant
    /// Where and what the field is.
    member _.Kind = kind
    /// Explicit ordinal (for groups: the lowest ordinal inside), which orders JSON output.
    member val Ordinal = ordinal with get, set
    /// `"name":` in UTF-8, for JSON writers.
    member _.JsonKey: byte array = key

/// A struct (or group) node of the schema.
[<Sealed>]
type StructNode
    (
        id: uint64,
        displayName: string,
        dataWords: int,
        pointerCount: int,
        discriminantCount: int,
        discriminantOffset: int,
        fields: SchemaField array
    ) =
    let byName = Dictionary<string, SchemaField>(StringComparer.Ordinal)

    do
        for f in fields do
            byName[f.Name] <- f

    /// The node id.
    member _.Id = id
    /// The display name, e.g. `log.capnp:Event`.
    member _.DisplayName = displayName

    /// The name after the file, e.g. `Event` or `CanData`.
    member _.Name =
        match displayName.IndexOf ':' with
        | -1 -> displayName
        | i -> displayName.Substring(i + 1)

    /// Data section size in words.
    member _.DataWords = dataWords
    /// Pointer section size.
    member _.PointerCount = pointerCount
    /// Members of the unnamed union (0 when there is none).
    member _.DiscriminantCount = discriminantCount
    /// Byte offset of the union discriminant in the data section.
    member _.DiscriminantByte = discriminantOffset * 2
    /// All fields, in schema order.
    member _.Fields = fields
    /// Fields outside the union, ordered by ordinal (groups by their lowest member).
    member val NonUnionFields: SchemaField array = [||] with get, set
    /// Union members indexed by discriminant (null where the schema has no member).
    member val UnionMembers: SchemaField array = [||] with get, set

    /// Looks a field up by name.
    member _.TryField(name: string) : SchemaField option =
        match byName.TryGetValue name with
        | true, f -> Some f
        | false, _ -> None

/// An enum node.
[<Sealed>]
type EnumNode(id: uint64, displayName: string, enumerants: string array) =
    let json =
        enumerants |> Array.map (fun e -> Encoding.UTF8.GetBytes("\"" + e + "\""))

    /// The node id.
    member _.Id = id
    /// The display name.
    member _.DisplayName = displayName
    /// Enumerant names by value.
    member _.Enumerants = enumerants
    /// `"name"` in UTF-8 by value.
    member _.JsonNames = json

/// A compiled schema: every struct and enum of a CodeGeneratorRequest, by id and by name.
[<Sealed>]
type Schema(structs: Dictionary<uint64, StructNode>, enums: Dictionary<uint64, EnumNode>) =
    /// Struct nodes by id.
    member _.Structs: IReadOnlyDictionary<uint64, StructNode> = structs
    /// Enum nodes by id.
    member _.Enums: IReadOnlyDictionary<uint64, EnumNode> = enums

    /// A struct by its name (`Event`), qualified name (`Event.something`) or display name
    /// (`log.capnp:Event`).
    member _.TryFindStruct(name: string) : StructNode option =
        structs.Values |> Seq.tryFind (fun s -> s.DisplayName = name || s.Name = name)

/// Reading compiled schemas (`capnp compile -o-` output, a CodeGeneratorRequest message).
[<RequireQualifiedAccess>]
module Schema =

    // Layouts of schema.capnp itself (from `capnp compile -ocapnp schema.capnp`).
    let private text (m: Message) (s: StructRef) (index: int) =
        let p = m.PointerField(s, index)

        if p < 0 then
            ""
        else
            let mutable length = 0
            let pos = m.TextAt(s.Segment, p, s.Depth, &length)

            if length <= 0 then
                ""
            else
                Encoding.UTF8.GetString(m.Span(pos, length))

    let private structField (m: Message) (s: StructRef) (index: int) =
        let p = m.PointerField(s, index)

        if p < 0 then
            StructRef.Empty
        else
            m.StructAt(s.Segment, p, s.Depth)

    let private listField (m: Message) (s: StructRef) (index: int) =
        let p = m.PointerField(s, index)

        if p < 0 then
            ListRef.Empty
        else
            m.ListAt(s.Segment, p, s.Depth)

    let rec private readType (m: Message) (t: StructRef) : SchemaType =
        match m.UInt16(t, 0) with
        | 0us -> SchemaType.Void
        | 1us -> SchemaType.Bool
        | 2us -> SchemaType.Int8
        | 3us -> SchemaType.Int16
        | 4us -> SchemaType.Int32
        | 5us -> SchemaType.Int64
        | 6us -> SchemaType.UInt8
        | 7us -> SchemaType.UInt16
        | 8us -> SchemaType.UInt32
        | 9us -> SchemaType.UInt64
        | 10us -> SchemaType.Float32
        | 11us -> SchemaType.Float64
        | 12us -> SchemaType.Text
        | 13us -> SchemaType.Data
        | 14us -> SchemaType.List(readType m (structField m t 0))
        | 15us -> SchemaType.Enum(m.UInt64(t, 8))
        | 16us -> SchemaType.Struct(m.UInt64(t, 8), readBrand m (structField m t 0))
        | 17us -> SchemaType.Interface
        | _ ->
            match m.UInt16(t, 8) with
            | 1us -> SchemaType.Parameter(m.UInt64(t, 16), int (m.UInt16(t, 10)))
            | _ -> SchemaType.AnyPointer

    and private readBrand (m: Message) (brand: StructRef) : BrandScope list =
        let scopes = listField m brand 0

        [
            for i in 0 .. scopes.Count - 1 do
                let scope = m.StructElement(scopes, i)

                let bindings =
                    match m.UInt16(scope, 8) with
                    | 0us ->
                        let list = listField m scope 0

                        Some(
                            Array.init list.Count (fun j ->
                                let binding = m.StructElement(list, j)

                                match m.UInt16(binding, 0) with
                                | 1us -> readType m (structField m binding 0)
                                | _ -> SchemaType.AnyPointer)
                        )
                    | _ -> None

                {
                    ScopeId = m.UInt64(scope, 0)
                    Bindings = bindings
                }
        ]

    /// The raw bits of a scalar default value (Value struct), for XOR decoding.
    let private defaultBits (m: Message) (v: StructRef) : uint64 =
        match m.UInt16(v, 0) with
        | 1us -> if m.Bool(v, 16) then 1UL else 0UL
        | 2us
        | 6us -> uint64 (m.UInt8(v, 2))
        | 3us
        | 7us
        | 15us -> uint64 (m.UInt16(v, 2))
        | 4us
        | 8us
        | 10us -> uint64 (m.UInt32(v, 4))
        | 5us
        | 9us
        | 11us -> m.UInt64(v, 8)
        | _ -> 0UL

    let private position (fieldType: SchemaType) (offset: int) =
        match fieldType with
        | SchemaType.Void -> 0
        | SchemaType.Bool -> offset
        | SchemaType.Int8
        | SchemaType.UInt8 -> offset
        | SchemaType.Int16
        | SchemaType.UInt16
        | SchemaType.Enum _ -> offset * 2
        | SchemaType.Int32
        | SchemaType.UInt32
        | SchemaType.Float32 -> offset * 4
        | SchemaType.Int64
        | SchemaType.UInt64
        | SchemaType.Float64 -> offset * 8
        | _ -> offset

    let private readField (m: Message) (f: StructRef) : SchemaField =
        let name = text m f 0
        let codeOrder = int (m.UInt16(f, 0))
        let discriminant = int (m.UInt16(f, 2) ^^^ 0xFFFFus)

        let ordinal =
            if m.UInt16(f, 10) = 1us then
                int (m.UInt16(f, 12))
            else
                Int32.MaxValue

        let kind =
            match m.UInt16(f, 8) with
            | 1us -> FieldKind.Group(m.UInt64(f, 16))
            | _ ->
                let fieldType = readType m (structField m f 2)
                let offset = int (m.UInt32(f, 4))
                FieldKind.Slot(position fieldType offset, fieldType, defaultBits m (structField m f 3))

        SchemaField(name, codeOrder, (if discriminant = 0xFFFF then -1 else discriminant), kind, ordinal)

    let private build (m: Message) : Schema =
        let root = m.Root
        let nodes = listField m root 0
        let structs = Dictionary<uint64, StructNode>()
        let enums = Dictionary<uint64, EnumNode>()

        for i in 0 .. nodes.Count - 1 do
            let n = m.StructElement(nodes, i)
            let id = m.UInt64(n, 0)
            let name = text m n 0

            match m.UInt16(n, 12) with
            | 1us ->
                let fieldList = listField m n 3

                let fields =
                    Array.init fieldList.Count (fun j -> readField m (m.StructElement(fieldList, j)))

                structs[id] <-
                    StructNode(
                        id,
                        name,
                        int (m.UInt16(n, 14)),
                        int (m.UInt16(n, 24)),
                        int (m.UInt16(n, 30)),
                        int (m.UInt32(n, 32)),
                        fields
                    )
            | 2us ->
                let list = listField m n 3
                let names = Array.init list.Count (fun j -> text m (m.StructElement(list, j)) 0)
                enums[id] <- EnumNode(id, name, names)
            | _ -> ()

        // A group sorts where its first member does; resolve recursively, then order each node.
        let rec ordinalOf (f: SchemaField) =
            match f.Kind with
            | FieldKind.Group typeId when f.Ordinal = Int32.MaxValue ->
                match structs.TryGetValue typeId with
                | true, g when g.Fields.Length > 0 ->
                    f.Ordinal <- g.Fields |> Array.map ordinalOf |> Array.min
                    f.Ordinal
                | _ -> f.Ordinal
            | _ -> f.Ordinal

        for node in structs.Values do
            for f in node.Fields do
                ordinalOf f |> ignore

        for node in structs.Values do
            node.NonUnionFields <-
                node.Fields
                |> Array.filter (fun f -> f.Discriminant < 0)
                |> Array.sortBy (fun f -> f.Ordinal, f.CodeOrder)

            let members = Array.zeroCreate<SchemaField> node.DiscriminantCount

            for f in node.Fields do
                if f.Discriminant >= 0 && f.Discriminant < members.Length then
                    members[f.Discriminant] <- f

            node.UnionMembers <- members

        Schema(structs, enums)

    /// Loads a compiled schema (a CodeGeneratorRequest message, as `capnp compile -o-` writes).
    let load (source: string) (bytes: byte array) : Result<Schema, DecodeError> =
        let options = {
            ReaderOptions.Default with
                MaxMessageWords = int64 bytes.Length / 8L + 1L
                TraversalLimitWords = 64L * 1024L * 1024L
        }

        match Framing.readMessage source options bytes with
        | Error e -> Error e
        | Ok m ->
            try
                Ok(build m)
            with Decode(offset, reason) ->
                Error {
                    Source = source
                    Offset = offset
                    Reason = reason
                }

    /// The resource name of the embedded cereal schema.
    [<Literal>]
    let EmbeddedResource = "CtsLite.Core.cereal-log.capnp.bin"

    let private embedded =
        lazy
            (let asm = typeof<SchemaField>.Assembly
             use stream = asm.GetManifestResourceStream EmbeddedResource
             use copy = new MemoryStream()
             stream.CopyTo copy

             match load EmbeddedResource (copy.ToArray()) with
             | Ok schema -> schema
             | Error e -> failwith $"embedded schema is unreadable: {DecodeError.describe e}")

    /// openpilot's newest cereal `log.capnp` (with the files it imports), compiled at build time.
    let cereal () : Schema = embedded.Value

    /// Loads a schema from a file: a compiled CodeGeneratorRequest, or a `.capnp` source when the
    /// `capnp` tool is installed (it is run as `capnp compile -o- -I <folder> <file>`).
    let loadFile (path: string) : Result<Schema, string> =
        match CtsLite.Io.regularFile path with
        | Error e -> Error $"{path}: {e}"
        | Ok() ->

            try
                if path.EndsWith(".capnp", StringComparison.OrdinalIgnoreCase) then
                    let folder = Path.GetDirectoryName(Path.GetFullPath path)

                    let info =
                        Diagnostics.ProcessStartInfo(
                            "capnp",
                            [ "compile"; "-o-"; "-I"; folder; Path.GetFullPath path ],
                            RedirectStandardOutput = true,
                            RedirectStandardError = true,
                            UseShellExecute = false
                        )

                    use proc = Diagnostics.Process.Start info
                    use output = new MemoryStream()
                    let errors = proc.StandardError.ReadToEndAsync()
                    proc.StandardOutput.BaseStream.CopyTo output
                    proc.WaitForExit()

                    match proc.ExitCode with
                    | 0 -> load path (output.ToArray()) |> Result.mapError DecodeError.describe
                    | code -> Error $"{path}: capnp compile failed ({code}): {errors.Result.Trim()}"
                else
                    load path (File.ReadAllBytes path) |> Result.mapError DecodeError.describe
            with
            | :? ComponentModel.Win32Exception ->
                Error $"{path}: compiling a .capnp file needs the capnp tool (Debian: apt-get install capnproto)"
            | :? FileNotFoundException
            | :? DirectoryNotFoundException -> Error $"{path}: no such file"
            | :? IOException as e -> Error $"{path}: {e.Message}"
