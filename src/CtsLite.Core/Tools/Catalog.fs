namespace CtsLite.Tools

/// The tools this build can run (the monitors are `CtsLite.Monitors.Catalog`). Only what actually
/// runs is listed: an entry here is a promise that `cts run`, the service and the C# library can
/// execute it.
[<RequireQualifiedAccess>]
module Catalog =

    /// Runnable analysis tools, in display order.
    let tools: Tool list = [
        CruiseTool.tool
        RlogToCsv.tool
        CanBitwatch.tool
        SignalExport.tool
        LogSummary.tool
    ]

    /// Their descriptors.
    let descriptors: ToolDescriptor list = tools |> List.map _.Descriptor

    /// The tool with this id.
    let tryFind (id: string) : Tool option =
        tools |> List.tryFind (fun t -> t.Descriptor.Id = id)
