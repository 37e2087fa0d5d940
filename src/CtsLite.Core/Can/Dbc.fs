namespace CtsLite.Can

open System
open System.Collections.Generic
open System.Globalization
open System.IO
open System.Text

open CtsLite.Can.DbcSyntax

/// Parsing DBC files: the statements of a file, by keyword, into a `Database`.
[<RequireQualifiedAccess>]
module Dbc =

    let rec private parseFile
        (path: string)
        (b: Builder)
        (errors: ResizeArray<DbcError>)
        (visiting: Set<string>)
        (readFile: string -> Result<string, string>)
        =
        match readFile path with
        | Error reason ->
            errors.Add {
                File = path
                Line = 0
                Column = 0
                Problem = DbcProblem.Unreadable reason
            }
        | Ok text ->
            let tokens = tokenize path text errors |> Array.ofList
            let p = Parser(path, tokens, errors)

            let invalid (t: Token) problem =
                p.Error(t, problem)
                p.Recover()

            while not p.AtEnd do
                let t = p.Peek

                match t.Kind, t.Text with
                | TokenKind.Ident, "VERSION" ->
                    p.Advance()

                    match p.Expect(TokenKind.String, "the version string") with
                    | Some v -> b.Version <- v.Text
                    | None -> p.Recover()
                | TokenKind.Ident, ("NS_" | "BS_") ->
                    // Symbol lists and baud rate: nothing to keep; skip to the next statement.
                    p.Advance()

                    while not p.AtEnd
                          && not (
                              p.Peek.Kind = TokenKind.Ident
                              && p.Peek.Column = 1
                              && topLevel.Contains p.Peek.Text
                              && p.Peek.Text <> "NS_"
                          ) do
                        p.Advance()
                | TokenKind.Ident, "BU_" ->
                    p.Advance()

                    if p.ExpectPunct ":" then
                        while not p.AtEnd && p.Peek.Line = t.Line && p.Peek.Kind = TokenKind.Ident do
                            b.Nodes.Add p.Peek.Text
                            p.Advance()
                    else
                        p.Recover()
                | TokenKind.Ident, "BO_" ->
                    p.Advance()
                    let errorsBefore = errors.Count
                    let id = p.Integer "the message id"
                    let name = p.Expect(TokenKind.Ident, "the message name")
                    let colon = p.ExpectPunct ":"
                    let size = p.Integer "the message size"
                    let transmitter = p.Expect(TokenKind.Ident, "the transmitter")

                    // Skip the rest of a bad header line so its signals still get checked.
                    while not p.AtEnd && p.Peek.Line = t.Line do
                        p.Advance()

                    let signals = ResizeArray<Signal>()

                    while not p.AtEnd && p.Peek.Kind = TokenKind.Ident && p.Peek.Text = "SG_" do
                        let sgLine = p.Peek.Line
                        p.Advance()

                        match parseSignal p with
                        | Some s ->
                            if signals.Exists(fun x -> x.Name = s.Name) then
                                let messageName = name |> Option.map (fun n -> n.Text) |> Option.defaultValue "?"
                                p.Error(t, DbcProblem.DuplicateSignal(messageName, s.Name))
                            else
                                signals.Add s
                        | None -> ()

                        while not p.AtEnd && p.Peek.Line = sgLine do
                            p.Advance()

                    match id, name, size, transmitter with
                    | Some id, Some name, Some size, Some transmitter when colon && errors.Count = errorsBefore ->
                        if size > 64UL then
                            p.Error(name, DbcProblem.MessageSize(name.Text, size))
                        else
                            let extended = id &&& 0x80000000UL <> 0UL
                            let bits = int size * 8

                            let outside =
                                signals
                                |> Seq.tryFind (fun s ->
                                    match s.ByteOrder with
                                    | ByteOrder.LittleEndian -> s.StartBit + s.Length > bits
                                    | ByteOrder.BigEndian ->
                                        // Motorola: walk from the MSB; the last bit must stay inside.
                                        let mutable pos = s.StartBit

                                        for _ in 2 .. s.Length do
                                            pos <- if pos % 8 = 0 then pos + 15 else pos - 1

                                        pos >= bits || s.StartBit >= bits)

                            match outside with
                            | Some s -> p.Error(name, DbcProblem.SignalDoesNotFit(name.Text, s.Name, size))
                            | None when
                                b.Messages.Exists(fun m -> m.Id = uint32 (id &&& 0x1FFFFFFFUL) && m.Extended = extended)
                                ->
                                p.Error(name, DbcProblem.DuplicateMessageId(id, name.Text))
                            | None ->
                                b.Messages.Add {
                                    Id = uint32 (id &&& 0x1FFFFFFFUL)
                                    Extended = extended
                                    Name = name.Text
                                    Size = int size
                                    Transmitter = transmitter.Text
                                    Signals = List.ofSeq signals
                                    Comment = None
                                }
                    | _ -> ()
                | TokenKind.Ident, "CM_" ->
                    p.Advance()

                    if not p.AtEnd && p.Peek.Kind = TokenKind.String then
                        let text = p.Peek
                        p.Advance()

                        if text.Text.StartsWith("IMPORT ", StringComparison.Ordinal) then
                            let target = Path.Combine(Path.GetDirectoryName path, text.Text.Substring(7).Trim())

                            if visiting.Contains(Path.GetFullPath target) then
                                p.Error(text, DbcProblem.ImportCycle target)
                            else
                                parseFile target b errors (visiting.Add(Path.GetFullPath target)) readFile
                        elif b.Comment.IsNone then
                            b.Comment <- Some text.Text

                        if not (p.ExpectPunct ";") then
                            p.Recover()
                    else
                        match p.Expect(TokenKind.Ident, "BU_, BO_, SG_, EV_ or a comment string") with
                        | Some kind when kind.Text = "SG_" ->
                            match
                                p.Integer "the message id",
                                p.Expect(TokenKind.Ident, "the signal name"),
                                p.Expect(TokenKind.String, "the comment")
                            with
                            | Some id, Some s, Some c ->
                                b.SignalComments[struct (uint32 (id &&& 0x1FFFFFFFUL), s.Text)] <- c.Text
                            | _ -> ()

                            if not (p.ExpectPunct ";") then
                                p.Recover()
                        | Some kind when kind.Text = "BO_" ->
                            match p.Integer "the message id", p.Expect(TokenKind.String, "the comment") with
                            | Some id, Some c -> b.MessageComments[uint32 (id &&& 0x1FFFFFFFUL)] <- c.Text
                            | _ -> ()

                            if not (p.ExpectPunct ";") then
                                p.Recover()
                        | Some kind when kind.Text = "BU_" || kind.Text = "EV_" ->
                            p.Expect(TokenKind.Ident, "a name") |> ignore
                            p.Expect(TokenKind.String, "the comment") |> ignore

                            if not (p.ExpectPunct ";") then
                                p.Recover()
                        | Some kind -> invalid kind (DbcProblem.UnknownCommentTarget kind.Text)
                        | None -> p.Recover()
                | TokenKind.Ident, "BA_DEF_" ->
                    p.Advance()

                    let objectType =
                        if not p.AtEnd && p.Peek.Kind = TokenKind.Ident then
                            let o = p.Peek.Text
                            p.Advance()
                            o
                        else
                            ""

                    match p.Expect(TokenKind.String, "the attribute name") with
                    | Some name ->
                        let sb = StringBuilder()

                        while not p.AtEnd && not (p.IsPunct ";") do
                            sb.Append(p.Peek.Text).Append(' ') |> ignore
                            p.Advance()

                        let valueType = sb.ToString().Trim()

                        if valueType = "" then
                            p.Error(name, DbcProblem.AttributeWithoutType name.Text)
                        else
                            b.AttributeDefinitions[name.Text] <- (objectType, valueType)

                        if not (p.ExpectPunct ";") then
                            p.Recover()
                    | None -> p.Recover()
                | TokenKind.Ident, "BA_DEF_DEF_" ->
                    p.Advance()

                    match p.Expect(TokenKind.String, "the attribute name") with
                    | Some name when not p.AtEnd ->
                        let value = p.Peek
                        p.Advance()

                        b.AttributeDefaults[name.Text] <-
                            match value.Kind, Double.TryParse(value.Text, NumberStyles.Float, invariant) with
                            | TokenKind.Number, (true, v) -> AttributeValue.Number v
                            | _ -> AttributeValue.Text value.Text

                        if not (p.ExpectPunct ";") then
                            p.Recover()
                    | _ -> p.Recover()
                | TokenKind.Ident, "BA_" ->
                    p.Advance()

                    match p.Expect(TokenKind.String, "the attribute name") with
                    | Some name ->
                        let target =
                            if not p.AtEnd && p.Peek.Kind = TokenKind.Ident then
                                let kind = p.Peek
                                p.Advance()

                                match kind.Text with
                                | "BU_" ->
                                    p.Expect(TokenKind.Ident, "a node")
                                    |> Option.map (fun n -> AttributeTarget.Node n.Text)
                                | "BO_" ->
                                    p.Integer "a message id"
                                    |> Option.map (fun id -> AttributeTarget.Message(uint32 (id &&& 0x1FFFFFFFUL)))
                                | "SG_" ->
                                    match p.Integer "a message id", p.Expect(TokenKind.Ident, "a signal name") with
                                    | Some id, Some s ->
                                        Some(AttributeTarget.Signal(uint32 (id &&& 0x1FFFFFFFUL), s.Text))
                                    | _ -> None
                                | "EV_" ->
                                    p.Expect(TokenKind.Ident, "a variable")
                                    |> Option.map (fun n -> AttributeTarget.EnvironmentVariable n.Text)
                                | other ->
                                    p.Error(kind, DbcProblem.UnknownAttributeTarget other)
                                    None
                            else
                                Some AttributeTarget.Database

                        match target with
                        | Some target when not p.AtEnd ->
                            let value = p.Peek
                            p.Advance()

                            let v =
                                match value.Kind, Double.TryParse(value.Text, NumberStyles.Float, invariant) with
                                | TokenKind.Number, (true, n) -> AttributeValue.Number n
                                | _ -> AttributeValue.Text value.Text

                            if not (b.AttributeDefinitions.ContainsKey name.Text) then
                                p.Error(name, DbcProblem.UndefinedAttribute name.Text)
                            else
                                b.Attributes.Add(target, name.Text, v)

                            if not (p.ExpectPunct ";") then
                                p.Recover()
                        | _ -> p.Recover()
                    | None -> p.Recover()
                | TokenKind.Ident, "VAL_TABLE_" ->
                    p.Advance()

                    match p.Expect(TokenKind.Ident, "the table name") with
                    | Some name ->
                        match parseValueDescriptions p with
                        | Some values -> b.ValueTables[name.Text] <- values
                        | None -> p.Recover()
                    | None -> p.Recover()
                | TokenKind.Ident, "VAL_" ->
                    p.Advance()

                    if not p.AtEnd && p.Peek.Kind = TokenKind.Number then
                        match p.Integer "the message id", p.Expect(TokenKind.Ident, "the signal name") with
                        | Some id, Some s ->
                            match parseValueDescriptions p with
                            | Some values -> b.SignalValues[struct (uint32 (id &&& 0x1FFFFFFFUL), s.Text)] <- values
                            | None -> p.Recover()
                        | _ -> p.Recover()
                    else
                        // Environment-variable value descriptions: nothing to keep.
                        p.Recover()
                | TokenKind.Ident, "SIG_VALTYPE_" ->
                    p.Advance()

                    match p.Integer "the message id", p.Expect(TokenKind.Ident, "the signal name") with
                    | Some id, Some s ->
                        p.ExpectPunct ":" |> ignore

                        match p.Expect(TokenKind.Number, "1 (float) or 2 (double)") with
                        | Some v when v.Text = "1" ->
                            b.ValueTypes[struct (uint32 (id &&& 0x1FFFFFFFUL), s.Text)] <- SignalValueType.Float32
                        | Some v when v.Text = "2" ->
                            b.ValueTypes[struct (uint32 (id &&& 0x1FFFFFFFUL), s.Text)] <- SignalValueType.Float64
                        | Some v when v.Text = "0" -> ()
                        | Some v -> p.Error(v, DbcProblem.BadValueType v.Text)
                        | None -> ()

                        if not (p.ExpectPunct ";") then
                            p.Recover()
                    | _ -> p.Recover()
                | TokenKind.Ident, "SG_MUL_VAL_" ->
                    p.Advance()

                    match
                        p.Integer "the message id",
                        p.Expect(TokenKind.Ident, "the signal name"),
                        p.Expect(TokenKind.Ident, "the multiplexor name")
                    with
                    | Some id, Some s, Some mux ->
                        let ranges = ResizeArray<uint64 * uint64>()
                        let mutable ok = true

                        while ok && not p.AtEnd && not (p.IsPunct ";") do
                            // "a-b": the tokenizer reads "-b" as a negative number adjacent to "a".
                            match p.Integer "a range start" with
                            | Some a when
                                not p.AtEnd
                                && p.Peek.Kind = TokenKind.Number
                                && p.Peek.Adjacent
                                && p.Peek.Text.StartsWith "-"
                                ->
                                let bTok = p.Peek
                                p.Advance()

                                match UInt64.TryParse(bTok.Text.Substring 1, NumberStyles.None, invariant) with
                                | true, bv -> ranges.Add(a, bv)
                                | false, _ ->
                                    p.Error(bTok, DbcProblem.UnfinishedRange bTok.Text)
                                    ok <- false
                            | Some a when p.IsPunct "-" ->
                                p.Advance()

                                match p.Integer "a range end" with
                                | Some bv -> ranges.Add(a, bv)
                                | None -> ok <- false
                            | Some _ ->
                                if not p.AtEnd then
                                    p.Error(p.Peek, DbcProblem.ExpectedRange)

                                ok <- false
                            | None -> ok <- false

                            if ok && p.IsPunct "," then
                                p.Advance()

                        if ok && p.ExpectPunct ";" then
                            b.MuxRanges[struct (uint32 (id &&& 0x1FFFFFFFUL), s.Text)] <- (mux.Text, List.ofSeq ranges)
                        else
                            p.Recover()
                    | _ -> p.Recover()
                | TokenKind.Ident, keyword when topLevel.Contains keyword ->
                    // Statements that carry nothing CtsLite uses (BO_TX_BU_, EV_, SIG_GROUP_, ...).
                    p.Advance()
                    p.Recover()
                | _ -> invalid t (DbcProblem.UnexpectedKeyword t.Text)

    let private build (b: Builder) : Database =
        let messages = [
            for m in b.Messages ->
                {
                    m with
                        Comment =
                            match b.MessageComments.TryGetValue m.Id with
                            | true, c -> Some c
                            | false, _ -> None
                        Signals = [
                            for s in m.Signals ->
                                let key = struct (m.Id, s.Name)

                                {
                                    s with
                                        Values =
                                            match b.SignalValues.TryGetValue key with
                                            | true, v -> v
                                            | false, _ -> s.Values
                                        ValueType =
                                            match b.ValueTypes.TryGetValue key with
                                            | true, v -> v
                                            | false, _ -> s.ValueType
                                        MultiplexorRanges =
                                            match b.MuxRanges.TryGetValue key with
                                            | true, r -> Some r
                                            | false, _ -> None
                                        Comment =
                                            match b.SignalComments.TryGetValue key with
                                            | true, c -> Some c
                                            | false, _ -> None
                                }
                        ]
                }
        ]

        {
            Version = b.Version
            Nodes = List.ofSeq b.Nodes
            Messages = messages
            ValueTables = b.ValueTables
            AttributeDefinitions = b.AttributeDefinitions
            AttributeDefaults = b.AttributeDefaults
            Attributes = List.ofSeq b.Attributes
            Comment = b.Comment
        }

    /// Parses `path` (following `CM_ "IMPORT x.dbc";` relative to it) with `readFile`. Every
    /// problem is reported; a database is returned only when there are none.
    let parseWith (readFile: string -> Result<string, string>) (path: string) : Result<Database, DbcError list> =
        let errors = ResizeArray<DbcError>()
        let b = Builder()
        parseFile path b errors (Set.singleton (Path.GetFullPath path)) readFile

        match List.ofSeq errors with
        | [] -> Ok(build b)
        | es -> Error es

    /// Reads a file for `parseWith`.
    let readFile (path: string) : Result<string, string> = CtsLite.Io.readText path

    /// Parses a DBC file from disk.
    let loadFile (path: string) : Result<Database, DbcError list> = parseWith readFile path

    /// Parses DBC text held in memory (imports are not available).
    let parseText (name: string) (text: string) : Result<Database, DbcError list> =
        parseWith
            (fun p ->
                if p = name then
                    Ok text
                else
                    Error "imports are not available for in-memory text")
            name

    /// opendbc's Subaru global DBC, embedded so that the Subaru tools and monitors need no file.
    let builtInNames: string list = [ "subaru_global_2017_generated.dbc" ]

    let tryBuiltInText (name: string) : string option =
        if List.contains name builtInNames then
            use stream =
                Reflection.Assembly.GetExecutingAssembly().GetManifestResourceStream("CtsLite.Core." + name)

            use reader = new StreamReader(stream)
            Some(reader.ReadToEnd())
        else
            None

    let load (nameOrPath: string) : Result<Database, DbcError list> =
        match tryBuiltInText nameOrPath with
        | Some text -> parseText nameOrPath text
        | None -> loadFile nameOrPath

    // `CM_ "IMPORT x.dbc";` as the parser reads it: the name is what follows "IMPORT ", trimmed.
    let private importStatement =
        Text.RegularExpressions.Regex(
            """CM_\s+"IMPORT ([^"]*)"\s*;""",
            Text.RegularExpressions.RegexOptions.CultureInvariant
        )

    let private entries (d: IReadOnlyDictionary<'k, 'v>) =
        d |> Seq.map (fun kv -> kv.Key, kv.Value) |> Seq.sortBy fst |> List.ofSeq

    // Databases hold dictionaries, which compare by reference: compared here by content.
    let private sameDatabase (a: Database) (b: Database) =
        let signal (s: Signal) =
            {
                s with
                    Values = Unchecked.defaultof<_>
            },
            entries s.Values

        let message (m: DbcMessage) =
            { m with Signals = [] }, List.map signal m.Signals

        let tables (db: Database) =
            entries db.ValueTables |> List.map (fun (k, v) -> k, entries v)

        a.Version = b.Version
        && a.Nodes = b.Nodes
        && a.Comment = b.Comment
        && a.Attributes = b.Attributes
        && List.map message a.Messages = List.map message b.Messages
        && entries a.AttributeDefinitions = entries b.AttributeDefinitions
        && entries a.AttributeDefaults = entries b.AttributeDefaults
        && tables a = tables b

    let inlineImports (path: string) : Result<string, DbcError list> =
        match loadFile path with
        | Error errors -> Error errors
        | Ok db ->
            // loadFile has read every file and refused cycles: the expansion ends.
            let rec expand (file: string) : Result<string, string> =
                readFile file
                |> Result.bind (fun text ->
                    let mutable failure = None

                    let expanded =
                        importStatement.Replace(
                            text,
                            fun m ->
                                match expand (Path.Combine(Path.GetDirectoryName file, m.Groups[1].Value.Trim())) with
                                | Ok inner -> "\n" + inner + "\n"
                                | Error e ->
                                    failure <- Some e
                                    m.Value
                        )

                    match failure with
                    | Some e -> Error e
                    | None -> Ok expanded)

            let refused (reason: string) =
                Error [
                    {
                        File = path
                        Line = 0
                        Column = 0
                        Problem = DbcProblem.Unreadable reason
                    }
                ]

            match expand path with
            | Error reason -> refused reason
            | Ok text ->
                match parseText (Path.GetFileName path) text with
                | Ok flat when sameDatabase db flat -> Ok text
                | _ -> refused "its imports cannot be written into one file that reads the same"
