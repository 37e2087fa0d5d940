namespace CtsLite

open System.Collections.Generic
open System.Text.Json
open CtsLite.Tools

/// What a run reads, once for every client (CLI, C#, web UI, series endpoint): a path on the
/// service's side (under its input roots), one upload, or several uploads read in order as one
/// time line (the segments of a route uploaded one by one).
[<RequireQualifiedAccess>]
type InputRef =
    | Path of path: string
    | Upload of uploadId: string
    | Uploads of uploadIds: string list

/// The JSON shapes of the `/v1` API, shared by the service and its clients. Field names become
/// snake_case on the wire (`ApiJson.options`).
[<RequireQualifiedAccess>]
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
        /// `"{d}d {h}h {m}m {s}s"`, as the Python comma-tools' clients display it.
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

    /// A tool parameter: the Tool Capability parameter object.
    type ParameterCapability = {
        Type: string
        Default: obj
        Description: string
        Choices: string list option
        Required: bool
        Min: float option
        Max: float option
    }

    /// The Tool Capability object.
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

    /// A run's input object on the wire: `{"type": "path" | "upload", "value": "…"}` or
    /// `{"type": "uploads", "value": ["…", …]}` (see `InputRef`).
    type RunInputDto = {
        Type: string
        /// A string for `path` and `upload`, an array of upload ids for `uploads`.
        Value: System.Text.Json.JsonElement
    }

    /// `POST /v1/runs`: the Run Request. A tool reads one `input`; a tool that compares
    /// several drives takes `inputs` instead.
    type RunRequest = {
        ToolId: string
        Params: System.Text.Json.JsonElement option
        Input: RunInputDto option
        Inputs: RunInputDto list option
        Name: string option
    }

    /// The Run Response.
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

    /// `cts run --local --json`: a run done on this machine, without the service.
    type LocalRun = {
        ToolId: string
        /// `completed` (a failed local run answers on stderr with its exit code instead).
        Status: string
        Input: string
        /// The parameters after validation and coercion (defaults included).
        Params: System.Text.Json.JsonElement
        OutputDir: string
        /// The artifacts' file names in the output folder, in the tool's order.
        Artifacts: string list
        Summary: string
        Warnings: string list
    }

    /// Validated parameters as the JSON object of a run's `params` (`Parameters.toJson`).
    let parameters (p: ToolParameters) : System.Text.Json.JsonElement =
        use doc = JsonDocument.Parse(Parameters.toJson p)
        doc.RootElement.Clone()

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

    /// Every error answer: an RFC 9457 `application/problem+json` body.
    type Problem = {
        Type: string
        Title: string
        Status: int
        Detail: string
        Instance: string
        RequestId: string
        /// The bad parts of a request (422).
        Errors: FieldError list option
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

    /// The Tool Capability document of a descriptor: one definition for `/v1/capabilities`,
    /// `cts tools --json` and the clients.
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

/// Reading and writing input objects.
[<RequireQualifiedAccess>]
module InputRef =

    let private error (pointer: string) (detail: string) : Api.FieldError = { Pointer = pointer; Detail = detail }

    /// The input object at JSON pointer `at` (e.g. `/input`), or what is wrong with it.
    let ofDto (at: string) (dto: Api.RunInputDto) : Result<InputRef, Api.FieldError list> =
        let text () =
            match dto.Value.ValueKind with
            | JsonValueKind.String when dto.Value.GetString() <> "" -> Ok(dto.Value.GetString())
            | _ -> Error [ error $"{at}/value" $"must be a non-empty string for type '{dto.Type}'" ]

        match dto.Type with
        | "path" -> text () |> Result.map InputRef.Path
        | "upload" -> text () |> Result.map InputRef.Upload
        | "uploads" ->
            match dto.Value.ValueKind with
            | JsonValueKind.Array when dto.Value.GetArrayLength() > 0 ->
                let items = [ for x in dto.Value.EnumerateArray() -> x ]

                let bad = [
                    for i, x in List.indexed items do
                        if x.ValueKind <> JsonValueKind.String || x.GetString() = "" then
                            error $"{at}/value/{i}" "must be an upload id"
                ]

                if bad.IsEmpty then
                    Ok(InputRef.Uploads [ for x in items -> x.GetString() ])
                else
                    Error bad
            | _ ->
                Error [
                    error $"{at}/value" "must be a non-empty array of upload ids for type 'uploads'"
                ]
        | null -> Error [ error $"{at}/type" "is required (path, upload or uploads)" ]
        | other -> Error [ error $"{at}/type" $"must be path, upload or uploads, not '{other}'" ]

    /// The wire form.
    let toDto (input: InputRef) : Api.RunInputDto =
        let value (v: obj) = JsonSerializer.SerializeToElement v

        match input with
        | InputRef.Path p -> { Type = "path"; Value = value p }
        | InputRef.Upload id -> { Type = "upload"; Value = value id }
        | InputRef.Uploads ids -> {
            Type = "uploads"
            Value = value (Array.ofList ids)
          }

    /// `path`, `upload` or `uploads`.
    let typeName (input: InputRef) : string =
        match input with
        | InputRef.Path _ -> "path"
        | InputRef.Upload _ -> "upload"
        | InputRef.Uploads _ -> "uploads"
