namespace CtsLite.Can

open System
open System.Collections.Generic
open System.Globalization
open System.IO
open System.Text

// The lexer and statement parsers of DBC files (internal to `Dbc`): tokens with their positions,
// the recovering parser, and the parsers of the statements that need more than a line.

/// A token's kind.
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

/// Tokens, the parser and its helpers.
module internal DbcSyntax =

    let invariant = CultureInfo.InvariantCulture

    let topLevel =
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
    type Parser(file: string, tokens: Token array, errors: ResizeArray<DbcError>) =
        let mutable pos = 0
        // The token of the last error: a statement's parse goes on past a bad token without
        // moving, and each later expectation would report the same token again.
        let mutable errorAt = struct (-1, 0, 0)

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
            let at = struct (pos, t.Line, t.Column)

            if at <> errorAt then
                errorAt <- at

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

            // The next statement's problems are its own, even at the token recovery stopped on.
            errorAt <- struct (-1, 0, 0)

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

    let emptyValues: IReadOnlyDictionary<int64, string> = Dictionary<int64, string>()

    /// Accumulates what the statements of one file (and its imports) declare.
    type Builder() =
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

    let parseSignal (p: Parser) : Signal option =
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
    let parseValueDescriptions (p: Parser) : IReadOnlyDictionary<int64, string> option =
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
