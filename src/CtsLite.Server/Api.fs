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

    /// What the store holds, in `GET /v1/health`.
    type StorageInfo = {
        DatabaseBytes: int64
        Uploads: int
        UploadBytes: int64
        Artifacts: int
        ArtifactBytes: int64
        /// Uploads and artifacts older than this are swept; 0: kept forever.
        RetentionDays: int
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
        /// Database plus upload and artifact files.
        StoreSizeBytes: int64
        Storage: StorageInfo
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

    /// A run's input in the seed's Run Request: `path` (under the input roots) or `upload`.
    type RunInputDto = { Type: string; Value: string }

    /// `POST /v1/runs`: the seed's Run Request.
    type RunRequest = {
        ToolId: string
        Params: System.Text.Json.JsonElement option
        Input: RunInputDto option
        Name: string option
    }

    /// The seed's Run Response.
    type RunResponse = {
        RunId: string
        /// `queued`, `running`, `completed`, `failed` or `canceled`.
        Status: string
        ToolId: string
        Name: string option
        /// The parameters after validation and coercion (defaults included).
        Params: System.Text.Json.JsonElement
        CreatedAt: System.DateTimeOffset
        StartedAt: System.DateTimeOffset option
        CompletedAt: System.DateTimeOffset option
        /// 0–100.
        Progress: float
        /// Artifact ids (see `/v1/runs/{run_id}/artifacts`).
        Artifacts: string list
        Error: string option
    }

    /// `GET /v1/runs`.
    type RunList = {
        Runs: RunResponse list
        /// Pass as `cursor` for the next (older) page; null on the last page.
        NextCursor: string option
    }

    /// One log line of a run.
    type LogEntry = {
        Seq: int64
        Timestamp: System.DateTimeOffset
        Level: string
        Message: string
        /// `tool` or `engine`.
        Source: string
    }

    /// `GET /v1/runs/{run_id}/logs?format=json`.
    type LogList = {
        RunId: string
        Entries: LogEntry list
    }

    /// One artifact of a run.
    type Artifact = {
        ArtifactId: string
        RunId: string
        Filename: string
        ContentType: string
        Size: int64
        Sha256: string
        CreatedAt: System.DateTimeOffset
        DownloadUrl: string
    }

    /// `GET /v1/artifacts`, `GET /v1/runs/{run_id}/artifacts`.
    type ArtifactList = { Artifacts: Artifact list }

    /// One bad part of a request: a JSON pointer into the body and what is wrong.
    type FieldError = { Pointer: string; Detail: string }

    /// The wire form of a run.
    let runResponse (run: CtsLite.Server.RunRecord) (artifacts: string list) : RunResponse = {
        RunId = run.RunId
        Status = CtsLite.Server.RunStatus.name run.Status
        ToolId = run.ToolId
        Name = run.Name
        Params = System.Text.Json.JsonDocument.Parse(run.ParamsJson).RootElement
        CreatedAt = run.CreatedAt
        StartedAt = run.StartedAt
        CompletedAt = run.CompletedAt
        Progress = run.Progress
        Artifacts = artifacts
        Error = run.Error
    }

    /// The wire form of an artifact.
    let artifact (a: CtsLite.Server.ArtifactRecord) : Artifact = {
        ArtifactId = a.ArtifactId
        RunId = a.RunId
        Filename = a.Filename
        ContentType = a.ContentType
        Size = a.Size
        Sha256 = a.Sha256
        CreatedAt = a.CreatedAt
        DownloadUrl = $"/v1/artifacts/{a.ArtifactId}/download"
    }
