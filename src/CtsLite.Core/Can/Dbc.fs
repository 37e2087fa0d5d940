namespace CtsLite.Can

open System
open System.Collections.Generic
open System.Globalization
open System.IO
open System.Text

/// Bit order of a signal: Intel (`@1`, little-endian) or Motorola (`@0`, big-endian).
[<RequireQualifiedAccess>]
type ByteOrder =
    | LittleEndian
    | BigEndian

/// How the raw bits are interpreted (`SIG_VALTYPE_`).
[<RequireQualifiedAccess>]
type SignalValueType =
    | Integer
    | Float32
    | Float64

/// A signal's role in multiplexing.
[<RequireQualifiedAccess>]
type Multiplexing =
    | None
    /// `M`: selects which multiplexed signals are present.
    | Multiplexor
    /// `mN`: present when the multiplexor equals N (or, with `SG_MUL_VAL_`, lies in a range).
    | Multiplexed of value: uint64
    /// `mNM`: multiplexed itself, and a multiplexor for others (extended multiplexing).
    | MultiplexedMultiplexor of value: uint64

/// One signal of a message.
type Signal = {
    Name: string
    StartBit: int
    Length: int
    ByteOrder: ByteOrder
    Signed: bool
    Factor: float
    Offset: float
    Minimum: float
    Maximum: float
    Unit: string
    Receivers: string list
    Multiplexing: Multiplexing
    /// Extended multiplexing (`SG_MUL_VAL_`): the multiplexor and the value ranges selecting this signal.
    MultiplexorRanges: (string * (uint64 * uint64) list) option
    ValueType: SignalValueType
    /// Value table labels (`VAL_`).
    Values: IReadOnlyDictionary<int64, string>
    Comment: string option
}

/// One message (`BO_`).
type DbcMessage = {
    /// The CAN id without the extended-frame flag.
    Id: uint32
    Extended: bool
    Name: string
    Size: int
    Transmitter: string
    Signals: Signal list
    Comment: string option
}

/// An attribute value (`BA_`).
[<RequireQualifiedAccess>]
type AttributeValue =
    | Number of float
    | Text of string

/// What an attribute is attached to.
[<RequireQualifiedAccess>]
type AttributeTarget =
    | Database
    | Node of string
    | Message of uint32
    | Signal of uint32 * string
    | EnvironmentVariable of string

/// A parsed DBC file (with its imports).
type Database = {
    Version: string
    Nodes: string list
    Messages: DbcMessage list
    ValueTables: IReadOnlyDictionary<string, IReadOnlyDictionary<int64, string>>
    /// `BA_DEF_` definitions: name -> (object type, value type text).
    AttributeDefinitions: IReadOnlyDictionary<string, string * string>
    AttributeDefaults: IReadOnlyDictionary<string, AttributeValue>
    Attributes: (AttributeTarget * string * AttributeValue) list
    Comment: string option
} with

    /// The message with this id, if any.
    member db.TryMessage(id: uint32) : DbcMessage option =
        db.Messages |> List.tryFind (fun m -> m.Id = id)

    /// The message with this name, if any.
    member db.TryMessageNamed(name: string) : DbcMessage option =
        db.Messages |> List.tryFind (fun m -> m.Name = name)

/// What is wrong in a DBC file: a closed set, each case carrying what it names.
[<RequireQualifiedAccess>]
type DbcProblem =
    /// The file could not be read (missing, permissions, a file parameter that names nothing).
    | Unreadable of reason: string
    | UnterminatedString
    /// `expected` (e.g. `a number`, `';'`) where `found` stands (None: the end of the file).
    | Expected of expected: string * found: string option
    | NotANumber of text: string
    | NotANonNegativeInteger of text: string
    | NotAnInteger of text: string
    | BadMultiplexer of text: string
    | BadByteOrder of text: string
    | BadSign
    | SignalLength of signal: string * length: uint64
    | SignalStart of signal: string * start: uint64
    | DuplicateSignal of message: string * signal: string
    | MessageSize of message: string * size: uint64
    | SignalDoesNotFit of message: string * signal: string * size: uint64
    | DuplicateMessageId of id: uint64 * message: string
    | ImportCycle of target: string
    | AttributeWithoutType of attribute: string
    | UnknownAttributeTarget of target: string
    | UndefinedAttribute of attribute: string
    | BadValueType of text: string
    | UnfinishedRange of text: string
    | ExpectedRange
    | UnknownCommentTarget of target: string
    | UnexpectedKeyword of text: string

/// A problem in a DBC file, located (line and column from 1; 0 when the file could not be read).
type DbcError = {
    File: string
    Line: int
    Column: int
    Problem: DbcProblem
}

/// Describing DBC problems.
[<RequireQualifiedAccess>]
module DbcProblem =

    /// The problem in words.
    let describe (problem: DbcProblem) : string =
        match problem with
        | DbcProblem.Unreadable reason -> reason
        | DbcProblem.UnterminatedString -> "unterminated string"
        | DbcProblem.Expected(what, None) -> $"expected {what}, found the end of the file"
        | DbcProblem.Expected(what, Some found) -> $"expected {what}, found '{found}'"
        | DbcProblem.NotANumber text -> $"'{text}' is not a number"
        | DbcProblem.NotANonNegativeInteger text -> $"'{text}' is not a non-negative integer"
        | DbcProblem.NotAnInteger text -> $"'{text}' is not an integer"
        | DbcProblem.BadMultiplexer text -> $"'{text}' is not a multiplexer indicator (M, mN or mNM)"
        | DbcProblem.BadByteOrder text -> $"byte order must be 0 (Motorola) or 1 (Intel), not '{text}'"
        | DbcProblem.BadSign -> "expected '+' (unsigned) or '-' (signed)"
        | DbcProblem.SignalLength(signal, length) -> $"signal {signal}: length {length} is outside 1..64"
        | DbcProblem.SignalStart(signal, start) -> $"signal {signal}: start bit {start} is outside a 64-byte payload"
        | DbcProblem.DuplicateSignal(message, signal) -> $"message {message}: signal {signal} is defined twice"
        | DbcProblem.MessageSize(message, size) -> $"message {message}: size {size} exceeds 64 bytes"
        | DbcProblem.SignalDoesNotFit(message, signal, size) ->
            $"message {message}: signal {signal} does not fit in {size} bytes"
        | DbcProblem.DuplicateMessageId(id, message) -> $"message id {id} ({message}) is defined twice"
        | DbcProblem.ImportCycle target -> $"import cycle through {target}"
        | DbcProblem.AttributeWithoutType attribute -> $"attribute {attribute} has no value type"
        | DbcProblem.UnknownAttributeTarget target -> $"unknown attribute target '{target}'"
        | DbcProblem.UndefinedAttribute attribute -> $"attribute {attribute} is not defined by BA_DEF_"
        | DbcProblem.BadValueType text -> $"SIG_VALTYPE_ must be 0, 1 (float) or 2 (double), not {text}"
        | DbcProblem.UnfinishedRange text -> $"'{text}' does not end a range"
        | DbcProblem.ExpectedRange -> "expected a range such as 3-5"
        | DbcProblem.UnknownCommentTarget target -> $"unknown comment target '{target}'"
        | DbcProblem.UnexpectedKeyword text ->
            $"unexpected '{text}' (expected a DBC keyword such as BO_, SG_, CM_, VAL_)"

/// Describing DBC errors.
[<RequireQualifiedAccess>]
module DbcError =

    /// `file:line:column: problem`.
    let describe (e: DbcError) : string =
        $"{e.File}:{e.Line}:{e.Column}: {DbcProblem.describe e.Problem}"

[<RequireQualifiedAccess>]
type internal TokenKind =
    | Ident
    | Number
    | String
    | Punct

[<Struct>]
type internal Token = {
    Kind: TokenKind
    Text: string
    Line: int
    Column: int
    /// No whitespace between this token and the previous one.
    Adjacent: bool
}

/// Parsing DBC files.
[<RequireQualifiedAccess>]
module Dbc =

    let private invariant = CultureInfo.InvariantCulture

    let private topLevel =
        set [
            "VERSION"
            "NS_"
            "BS_"
            "BU_"
            "BO_"
            "SG_"
            "CM_"
            "BA_DEF_"
            "BA_DEF_DEF_"
            "BA_"
            "VAL_"
            "VAL_TABLE_"
            "SIG_VALTYPE_"
            "SG_MUL_VAL_"
            "BO_TX_BU_"
            "EV_"
            "ENVVAR_DATA_"
            "SGTYPE_"
            "SIG_GROUP_"
            "SIG_TYPE_REF_"
            "BA_DEF_REL_"
            "BA_REL_"
            "BA_DEF_DEF_REL_"
            "BU_SG_REL_"
            "BU_EV_REL_"
            "BU_BO_REL_"
            "CAT_DEF_"
            "CAT_"
            "FILTER"
            "SGTYPE_VAL_"
            "SIGTYPE_VALTYPE_"
            "EV_DATA_"
            "VAL_TABLE_"
            "NS_DESC_"
            "BA_SGTYPE_"
        ]

    /// Splits DBC text into tokens with 1-based line and column.
    let internal tokenize (file: string) (text: string) (errors: ResizeArray<DbcError>) : Token list =
        let tokens = ResizeArray<Token>()
        let mutable i = 0
        let mutable line = 1
        let mutable lineStart = 0
        let mutable adjacent = false

        let add kind (s: string) startLine startCol =
            tokens.Add {
                Kind = kind
                Text = s
                Line = startLine
                Column = startCol
                Adjacent = adjacent
            }

            adjacent <- true

        while i < text.Length do
            let c = text[i]
            let col = i - lineStart + 1

            if c = '\n' then
                line <- line + 1
                lineStart <- i + 1
                i <- i + 1
                adjacent <- false
            elif Char.IsWhiteSpace c then
                i <- i + 1
                adjacent <- false
            elif c = '"' then
                let startLine, startCol = line, col
                let sb = StringBuilder()
                i <- i + 1
                let mutable closed = false

                while not closed && i < text.Length do
                    match text[i] with
                    | '\\' when i + 1 < text.Length ->
                        sb.Append(text[i + 1]) |> ignore
                        i <- i + 2
                    | '"' ->
                        closed <- true
                        i <- i + 1
                    | ch ->
                        if ch = '\n' then
                            line <- line + 1
                            lineStart <- i + 1

                        sb.Append ch |> ignore
                        i <- i + 1

                if not closed then
                    errors.Add {
                        File = file
                        Line = startLine
                        Column = startCol
                        Problem = DbcProblem.UnterminatedString
                    }

                add TokenKind.String (sb.ToString()) startLine startCol
            elif
                Char.IsDigit c
                || ((c = '-' || c = '+' || c = '.')
                    && i + 1 < text.Length
                    && (Char.IsDigit text[i + 1] || text[i + 1] = '.'))
            then
                let start = i
                i <- i + 1

                while i < text.Length
                      && (Char.IsDigit text[i]
                          || text[i] = '.'
                          || ((text[i] = 'e' || text[i] = 'E') && i + 1 < text.Length)
                          || ((text[i] = '-' || text[i] = '+') && (text[i - 1] = 'e' || text[i - 1] = 'E'))
                          || ((text[i] = 'x' || text[i] = 'X') && i = start + 1 && text[start] = '0')
                          || (Uri.IsHexDigit text[i]
                              && text.Length > start + 1
                              && (text[start + 1] = 'x' || text[start + 1] = 'X'))) do
                    i <- i + 1

                add TokenKind.Number (text.Substring(start, i - start)) line col
            elif Char.IsLetter c || c = '_' then
                let start = i

                while i < text.Length && (Char.IsLetterOrDigit text[i] || text[i] = '_') do
                    i <- i + 1

                add TokenKind.Ident (text.Substring(start, i - start)) line col
            else
                add TokenKind.Punct (string c) line col
                i <- i + 1

        List.ofSeq tokens

    /// Parser state over one file's tokens.
    type private Parser(file: string, tokens: Token array, errors: ResizeArray<DbcError>) =
        let mutable pos = 0

        member _.AtEnd = pos >= tokens.Length
        member _.Peek = tokens[pos]

        member _.PeekAt(k: int) =
            if pos + k < tokens.Length then
                Some tokens[pos + k]
            else
                None

        member _.Position = pos
        member _.Advance() = pos <- pos + 1
        member _.File = file

        member this.Error(t: Token, problem: DbcProblem) =
            errors.Add {
                File = file
                Line = t.Line
                Column = t.Column
                Problem = problem
            }

        member this.ErrorAtEnd(problem: DbcProblem) =
            let last =
                if tokens.Length = 0 then
                    {
                        Kind = TokenKind.Punct
                        Text = ""
                        Line = 1
                        Column = 1
                        Adjacent = false
                    }
                else
                    tokens[tokens.Length - 1]

            this.Error(last, problem)

        /// Skips to just after the next `;`, or to the next top-level keyword at a line start.
        member this.Recover() =
            let mutable stop = false

            while not stop && not this.AtEnd do
                let t = this.Peek

                if t.Kind = TokenKind.Punct && t.Text = ";" then
                    this.Advance()
                    stop <- true
                elif t.Kind = TokenKind.Ident && t.Column = 1 && topLevel.Contains t.Text then
                    stop <- true
                else
                    this.Advance()

        member this.Expect(kind: TokenKind, what: string) : Token option =
            if this.AtEnd then
                this.ErrorAtEnd(DbcProblem.Expected(what, None))
                None
            else
                let t = this.Peek

                if t.Kind = kind then
                    this.Advance()
                    Some t
                else
                    this.Error(t, DbcProblem.Expected(what, Some t.Text))
                    None

        member this.ExpectPunct(p: string) : bool =
            if this.AtEnd then
                this.ErrorAtEnd(DbcProblem.Expected($"'{p}'", None))
                false
            else
                let t = this.Peek

                if t.Kind = TokenKind.Punct && t.Text = p then
                    this.Advance()
                    true
                else
                    this.Error(t, DbcProblem.Expected($"'{p}'", Some t.Text))
                    false

        member this.IsPunct(p: string) =
            not this.AtEnd && this.Peek.Kind = TokenKind.Punct && this.Peek.Text = p

        member this.Number(what: string) : float option =
            match this.Expect(TokenKind.Number, what) with
            | Some t ->
                match Double.TryParse(t.Text, NumberStyles.Float, invariant) with
                | true, v -> Some v
                | false, _ ->
                    this.Error(t, DbcProblem.NotANumber t.Text)
                    None
            | None -> None

        member this.Integer(what: string) : uint64 option =
            match this.Expect(TokenKind.Number, what) with
            | Some t ->
                let parsed =
                    if t.Text.StartsWith("0x", StringComparison.OrdinalIgnoreCase) then
                        UInt64.TryParse(t.Text.Substring 2, NumberStyles.AllowHexSpecifier, invariant)
                    else
                        UInt64.TryParse(t.Text, NumberStyles.None, invariant)

                match parsed with
                | true, v -> Some v
                | false, _ ->
                    this.Error(t, DbcProblem.NotANonNegativeInteger t.Text)
                    None
            | None -> None

        member this.SignedInteger(what: string) : int64 option =
            match this.Expect(TokenKind.Number, what) with
            | Some t ->
                match Int64.TryParse(t.Text, NumberStyles.AllowLeadingSign, invariant) with
                | true, v -> Some v
                | false, _ ->
                    match Double.TryParse(t.Text, NumberStyles.Float, invariant) with
                    | true, d when d = Math.Floor d -> Some(int64 d)
                    | _ ->
                        this.Error(t, DbcProblem.NotAnInteger t.Text)
                        None
            | None -> None

    let private emptyValues: IReadOnlyDictionary<int64, string> =
        Dictionary<int64, string>()

    /// Accumulates what the statements of one file (and its imports) declare.
    type private Builder() =
        member val Version = "" with get, set
        member val Nodes = ResizeArray<string>()
        member val Messages = ResizeArray<DbcMessage>()
        member val SignalComments = Dictionary<struct (uint32 * string), string>()
        member val MessageComments = Dictionary<uint32, string>()
        member val SignalValues = Dictionary<struct (uint32 * string), IReadOnlyDictionary<int64, string>>()
        member val ValueTypes = Dictionary<struct (uint32 * string), SignalValueType>()
        member val MuxRanges = Dictionary<struct (uint32 * string), string * (uint64 * uint64) list>()
        member val ValueTables = Dictionary<string, IReadOnlyDictionary<int64, string>>()
        member val AttributeDefinitions = Dictionary<string, string * string>()
        member val AttributeDefaults = Dictionary<string, AttributeValue>()
        member val Attributes = ResizeArray<AttributeTarget * string * AttributeValue>()
        member val Comment: string option = None with get, set

    let private parseSignal (p: Parser) : Signal option =
        // SG_ name [M|mN|mNM] : start|length@order sign (factor,offset) [min|max] "unit" receivers
        match p.Expect(TokenKind.Ident, "a signal name") with
        | None -> None
        | Some name ->
            let multiplexing =
                if not p.AtEnd && p.Peek.Kind = TokenKind.Ident && not (p.IsPunct ":") then
                    let t = p.Peek
                    p.Advance()

                    match t.Text with
                    | "M" -> Some Multiplexing.Multiplexor
                    | m when m.Length > 1 && m[0] = 'm' ->
                        let isMux = m.EndsWith "M"

                        let digits =
                            if isMux then
                                m.Substring(1, m.Length - 2)
                            else
                                m.Substring 1

                        match UInt64.TryParse(digits, NumberStyles.None, invariant) with
                        | true, v ->
                            Some(
                                if isMux then
                                    Multiplexing.MultiplexedMultiplexor v
                                else
                                    Multiplexing.Multiplexed v
                            )
                        | false, _ ->
                            p.Error(t, DbcProblem.BadMultiplexer m)
                            None
                    | other ->
                        p.Error(t, DbcProblem.BadMultiplexer other)
                        None
                else
                    Some Multiplexing.None

            let colon = p.ExpectPunct ":"
            let start = p.Integer "the start bit"
            let bar = p.ExpectPunct "|"
            let length = p.Integer "the bit length"
            let at = p.ExpectPunct "@"

            let order =
                match p.Expect(TokenKind.Number, "the byte order (0 or 1)") with
                | Some t when t.Text = "1" -> Some ByteOrder.LittleEndian
                | Some t when t.Text = "0" -> Some ByteOrder.BigEndian
                | Some t ->
                    p.Error(t, DbcProblem.BadByteOrder t.Text)
                    None
                | None -> None

            let signed =
                if p.IsPunct "+" then
                    p.Advance()
                    Some false
                elif p.IsPunct "-" then
                    p.Advance()
                    Some true
                else
                    if not p.AtEnd then
                        p.Error(p.Peek, DbcProblem.BadSign)

                    None

            let open1 = p.ExpectPunct "("
            let factor = p.Number "the factor"
            let comma = p.ExpectPunct ","
            let offset = p.Number "the offset"
            let close1 = p.ExpectPunct ")"
            let open2 = p.ExpectPunct "["
            let minimum = p.Number "the minimum"
            let bar2 = p.ExpectPunct "|"
            let maximum = p.Number "the maximum"
            let close2 = p.ExpectPunct "]"
            let unit = p.Expect(TokenKind.String, "the unit string")

            let receivers = ResizeArray<string>()
            let line = name.Line

            while not p.AtEnd
                  && p.Peek.Line = line
                  && (p.Peek.Kind = TokenKind.Ident || p.IsPunct ",") do
                if p.Peek.Kind = TokenKind.Ident then
                    receivers.Add p.Peek.Text

                p.Advance()

            match multiplexing, start, length, order, signed, factor, offset, minimum, maximum, unit with
            | Some mux,
              Some start,
              Some length,
              Some order,
              Some signed,
              Some factor,
              Some offset,
              Some minimum,
              Some maximum,
              Some unit when colon && bar && at && open1 && comma && close1 && open2 && bar2 && close2 ->
                if length = 0UL || length > 64UL then
                    p.Error(name, DbcProblem.SignalLength(name.Text, length))
                    None
                elif start >= 512UL then
                    p.Error(name, DbcProblem.SignalStart(name.Text, start))
                    None
                else
                    Some {
                        Name = name.Text
                        StartBit = int start
                        Length = int length
                        ByteOrder = order
                        Signed = signed
                        Factor = factor
                        Offset = offset
                        Minimum = minimum
                        Maximum = maximum
                        Unit = unit.Text
                        Receivers = List.ofSeq receivers
                        Multiplexing = mux
                        MultiplexorRanges = None
                        ValueType = SignalValueType.Integer
                        Values = emptyValues
                        Comment = None
                    }
            | _ -> None

    /// `(number "label")*` up to `;`.
    let private parseValueDescriptions (p: Parser) : IReadOnlyDictionary<int64, string> option =
        let values = Dictionary<int64, string>()
        let mutable ok = true

        while ok && not p.AtEnd && not (p.IsPunct ";") do
            match p.SignedInteger "a value", p.Expect(TokenKind.String, "a value description") with
            | Some v, Some label -> values[v] <- label.Text
            | _ -> ok <- false

        if ok && p.ExpectPunct ";" then
            Some(values :> IReadOnlyDictionary<int64, string>)
        else
            None

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
