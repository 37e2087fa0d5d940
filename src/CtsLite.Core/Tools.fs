namespace CtsLite.Tools

/// The type of a tool parameter, spelled in the Tool Capability JSON as `str|int|float|bool|list|file`.
[<RequireQualifiedAccess>]
type ParameterType =
    | Str
    | Int
    | Float
    | Bool
    | List
    | File

/// A parameter value after validation and coercion.
[<RequireQualifiedAccess>]
type ParameterValue =
    | Str of string
    | Int of int64
    | Float of float
    | Bool of bool
    | List of string list
    /// An upload id or a path, resolved by the edge that runs the tool.
    | File of string

/// One parameter of a tool: the seed's Tool Capability parameter object.
type ParameterSpec = {
    Name: string
    Type: ParameterType
    Default: ParameterValue option
    Description: string
    /// Allowed values; empty when any value of the type is accepted.
    Choices: string list
    Required: bool
    Min: float option
    Max: float option
}

/// What kind of work a tool does.
[<RequireQualifiedAccess>]
type ToolCategory =
    | Analyzer
    | Converter
    | Exporter
    | Monitor

/// A tool as the capabilities endpoint, the CLI and the C# library describe it.
type ToolDescriptor = {
    Id: string
    Name: string
    Description: string
    Category: ToolCategory
    Parameters: ParameterSpec list
    InputTypes: string list
    OutputTypes: string list
}

/// The spellings used on the wire.
[<RequireQualifiedAccess>]
module ParameterType =

    /// `str`, `int`, `float`, `bool`, `list` or `file`.
    let name (t: ParameterType) : string =
        match t with
        | ParameterType.Str -> "str"
        | ParameterType.Int -> "int"
        | ParameterType.Float -> "float"
        | ParameterType.Bool -> "bool"
        | ParameterType.List -> "list"
        | ParameterType.File -> "file"

/// The spellings used on the wire.
[<RequireQualifiedAccess>]
module ToolCategory =

    /// `analyzer`, `converter`, `exporter` or `monitor`.
    let name (c: ToolCategory) : string =
        match c with
        | ToolCategory.Analyzer -> "analyzer"
        | ToolCategory.Converter -> "converter"
        | ToolCategory.Exporter -> "exporter"
        | ToolCategory.Monitor -> "monitor"

/// The tools and monitors this build can run. Only what actually runs is listed: an entry here is
/// a promise that `cts run`, the service and the C# library can execute it.
[<RequireQualifiedAccess>]
module Catalog =

    /// Runnable analysis tools, in display order.
    let tools: ToolDescriptor list = []

    /// Runnable monitors, in display order.
    let monitors: ToolDescriptor list = []
