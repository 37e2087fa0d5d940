namespace CtsLite.Tools

/// The tools and monitors this build can run. Only what actually runs is listed: an entry here is
/// a promise that `cts run`, the service and the C# library can execute it.
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

    /// Runnable monitors, in display order.
    let monitors: ToolDescriptor list = []

    /// The tool with this id.
    let tryFind (id: string) : Tool option =
        tools |> List.tryFind (fun t -> t.Descriptor.Id = id)

    /// The seed's Tool Capability JSON of a descriptor (parameters keyed by name, in order).
    let capabilityJson (d: ToolDescriptor) : System.Text.Json.Nodes.JsonNode =
        Artifacts.obj [
            "id", Artifacts.str d.Id
            "name", Artifacts.str d.Name
            "description", Artifacts.str d.Description
            "category", Artifacts.str (ToolCategory.name d.Category)
            "parameters",
            Artifacts.obj [
                for p in d.Parameters ->
                    p.Name,
                    Artifacts.obj [
                        "type", Artifacts.str (ParameterType.name p.Type)
                        "default", (p.Default |> Option.map Artifacts.parameter |> Option.toObj)
                        "description", Artifacts.str p.Description
                        // Every member always present (null when it does not apply), exactly as
                        // `/v1/capabilities` serves it: one document for the CLI and the service.
                        "choices",
                        (if p.Choices.IsEmpty then
                             null
                         else
                             Artifacts.strings p.Choices)
                        "required", Artifacts.bool p.Required
                        "min", (p.Min |> Option.map Artifacts.num |> Option.toObj)
                        "max", (p.Max |> Option.map Artifacts.num |> Option.toObj)
                    ]
            ]
            "input_types", Artifacts.strings d.InputTypes
            "output_types", Artifacts.strings d.OutputTypes
        ]
