namespace CtsLite.Can

open System.Collections.Generic

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

    /// `file:line:column: problem`, or `file: problem` for a problem of the whole file (one that
    /// could not be read).
    let describe (e: DbcError) : string =
        if e.Line = 0 then
            $"{e.File}: {DbcProblem.describe e.Problem}"
        else
            $"{e.File}:{e.Line}:{e.Column}: {DbcProblem.describe e.Problem}"
