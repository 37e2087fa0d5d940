namespace CtsLite.Tools

open System.Text.Json.Nodes
open CtsLite.Logs

/// `log-summary`: the `cts log info` facts plus CAN rates per (address, bus), as JSON and HTML.
/// The tool runs through `ToolRunner`; what is public here is the `cts log info` document.
[<RequireQualifiedAccess>]
module LogSummary =

    /// The `cts log info` object.
    val internal infoJson: info: LogInfo -> JsonNode

    /// The `cts log info --json` text: the facts of a log as an indented JSON object.
    val infoJsonText: info: LogInfo -> string

    val internal descriptor: ToolDescriptor
    val internal tool: Tool
