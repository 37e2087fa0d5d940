namespace CtsLite.Server

open System.Collections.Generic
open CtsLite.Tools

/// The JSON shapes of the `/v1` API. Field names become snake_case on the wire.
module Api =

    /// One health check's outcome.
    type HealthCheck = {
        Name: string
        /// `pass` or `fail`.
        Status: string
        DurationMs: float
        Detail: string
    }

    /// `GET /v1/health`.
    type HealthResponse = {
        /// `healthy` when every check passes, otherwise `unhealthy` (with HTTP 503).
        Status: string
        Version: string
        /// `"{d}d {h}h {m}m {s}s"`, as the origin's clients display it.
        Uptime: string
        UptimeSeconds: float
        Timestamp: System.DateTimeOffset
        StoreSizeBytes: int64
        Checks: HealthCheck list
    }

    /// `GET /v1/version`.
    type VersionResponse = {
        ApiVersion: string
        MinClientVersion: string
        ServerVersion: string
    }

    /// A tool parameter: the seed's Tool Capability parameter object.
    type ParameterCapability = {
        Type: string
        Default: obj
        Description: string
        Choices: string list option
        Required: bool
        Min: float option
        Max: float option
    }

    /// The seed's Tool Capability object.
    type ToolCapability = {
        Id: string
        Name: string
        Description: string
        Category: string
        /// Keyed by parameter name, in declaration order.
        Parameters: IDictionary<string, ParameterCapability>
        InputTypes: string list
        OutputTypes: string list
    }

    /// `GET /v1/capabilities`.
    type CapabilitiesResponse = {
        Tools: ToolCapability list
        Monitors: ToolCapability list
        ApiVersion: string
        Features: string list
    }

    let private defaultValue (value: ParameterValue option) : obj =
        match value with
        | None -> null
        | Some(ParameterValue.Str s) -> box s
        | Some(ParameterValue.Int i) -> box i
        | Some(ParameterValue.Float f) -> box f
        | Some(ParameterValue.Bool b) -> box b
        | Some(ParameterValue.List l) -> box (Array.ofList l)
        | Some(ParameterValue.File f) -> box f

    /// The wire form of a tool descriptor.
    let toolCapability (tool: ToolDescriptor) : ToolCapability =
        let parameters = Dictionary<string, ParameterCapability>()

        for p in tool.Parameters do
            parameters[p.Name] <- {
                Type = ParameterType.name p.Type
                Default = defaultValue p.Default
                Description = p.Description
                Choices =
                    match p.Choices with
                    | [] -> None
                    | choices -> Some choices
                Required = p.Required
                Min = p.Min
                Max = p.Max
            }

        {
            Id = tool.Id
            Name = tool.Name
            Description = tool.Description
            Category = ToolCategory.name tool.Category
            Parameters = parameters
            InputTypes = tool.InputTypes
            OutputTypes = tool.OutputTypes
        }
