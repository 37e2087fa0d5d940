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

    /// A run's input as a Run Response shows it: the input object of its request with the names
    /// of its files.
    type RunInputView = {
        /// `path`, `upload` or `uploads`.
        Type: string
        /// As the request gave it: a string for `path` and `upload`, an array of upload ids for
        /// `uploads`.
        Value: System.Text.Json.JsonElement
        /// The names the user knows the files by: each upload's file name, in order, or the
        /// path's last part. Kept with the run: a removed upload keeps its name here.
        Filenames: string list
    }

    /// The Run Response.
    type RunResponse = {
        RunId: string
        /// `queued`, `running`, `completed`, `failed` or `canceled`.
        Status: string
        ToolId: string
        Name: string option
        /// What the run reads.
        Input: RunInputView
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
        /// The figures behind `summary` by name, e.g. `{"set_presses": 3, "can_frames": 81000}`.
        Facts: IDictionary<string, float>
        Warnings: string list
    }

    /// Validated parameters as the JSON object of a run's `params` (`Parameters.toJson`).
    let parameters (p: ToolParameters) : System.Text.Json.JsonElement =
        use doc = JsonDocument.Parse(Parameters.toJson p)
        doc.RootElement.Clone()

    /// A run's facts as the JSON object of its `facts`, in the tool's order.
    let facts (facts: (string * float) list) : IDictionary<string, float> =
        let d = Dictionary<string, float>()

        for name, value in facts do
            d[name] <- value

        d

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

    /// An upload: `POST /v1/uploads` (201, or 200 for content uploaded before), `GET /v1/uploads/{upload_id}`.
    type UploadResponse = {
        UploadId: string
        /// The name it was uploaded under (its last path part).
        Filename: string
        Size: int64
        /// Lower-case hex SHA-256 of the content (the same content is one upload).
        Sha256: string
        ContentType: string
        CreatedAt: System.DateTimeOffset
    }

    /// `GET /v1/uploads`.
    type UploadList = { Uploads: UploadResponse list }

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

    /// Where a monitor session's events come from: `{"type": "zmq", "host": "192.168.1.20"}`
    /// (openpilot's bridge on a device) or `{"type": "replay", "upload_id" | "upload_ids" | "path":
    /// …, "speed": 1.0}` (a recorded log in log time; speed 0 as fast as possible).
    type MonitorSourceDto = {
        /// `zmq` or `replay`.
        Type: string
        /// The device's host name or IP address (`zmq`).
        Host: string option
        /// An uploaded log (`replay`).
        UploadId: string option
        /// Uploaded logs read in order as one time line, e.g. a route's segments (`replay`).
        UploadIds: string list option
        /// A log file, segment folder or route under the service's input roots (`replay`).
        Path: string option
        /// Log time per wall time (`replay`; default 1.0, 0 = as fast as possible).
        Speed: float option
    }

    /// `POST /v1/monitors/start`.
    type MonitorStartRequest = {
        /// The monitor, as `/v1/capabilities` lists it under `monitors`.
        MonitorId: string
        /// The monitor's parameters by name.
        Params: System.Text.Json.JsonElement option
        Source: MonitorSourceDto option
        /// Record what a live source receives to zstd rlogs, each listed as an upload.
        Record: bool option
        /// A new recording file once one holds this many MB (default 100); also every minute.
        RecordMaxMb: int option
        /// At most one update every this many milliseconds (default 100).
        UpdateMs: int option
    }

    /// What a session has counted so far.
    type MonitorCounters = {
        /// Events given to the monitor.
        Events: int64
        /// Live messages carrying another service's event (ignored).
        Foreign: int64
        /// Live messages that did not decode (skipped).
        Corrupt: int64
        /// Messages dropped for slow watchers, over all watchers.
        Dropped: int64
        /// Watchers connected now.
        Clients: int
        /// The last stream message's sequence number.
        Seq: int64
    }

    /// A monitor session.
    type MonitorSession = {
        SessionId: string
        /// The monitor this session runs.
        MonitorId: string
        /// `running`; `ended` (its source ended); `stopped` (a stop, no watcher for
        /// `monitor_idle_timeout_s`, or the service stopped; `reason` says); `failed`.
        Status: string
        /// `connecting`, `connected`, `silent`, `reconnecting` (live); `replaying` (replay); `ended`.
        SourceStatus: string
        Source: MonitorSourceDto
        /// The parameters after validation, defaults included.
        Params: System.Text.Json.JsonElement
        Record: bool
        UpdateMs: int
        CreatedAt: System.DateTimeOffset
        StoppedAt: System.DateTimeOffset option
        /// Why it stopped, ended or failed.
        Reason: string option
        Counters: MonitorCounters
        /// The uploads holding the recording, in order (also while it runs: one per finished file).
        Recordings: string list
        /// The latest state (`GET /v1/monitors/{session_id}` only): an update's `data`.
        Snapshot: System.Text.Json.JsonElement option
        /// The stream: a WebSocket, or Server-Sent Events with `Accept: text/event-stream`.
        StreamUrl: string
    }

    /// `GET /v1/monitors`.
    type MonitorSessionList = { Sessions: MonitorSession list }

    /// One message of a session's stream (a WebSocket text message, or an SSE event of this
    /// `type` whose `data` is this object).
    type MonitorStreamMessage = {
        /// `snapshot` (first, on joining), `update`, `source_status`, `heartbeat` or `end` (last).
        Type: string
        /// Increases by one per message the session sends.
        Seq: int64
        /// When it was sent, Unix seconds.
        T: float
        /// Messages this watcher missed so far because it read too slowly (drop-oldest).
        Dropped: int64
        /// A monitor's state (the `*Data` components), or a `SourceStatusData`, or `{}`.
        Data: System.Text.Json.JsonElement
    }

    /// The `data` of a live session's `source_status` message.
    type SourceStatusData = {
        /// `connecting`, `connected`, `silent`, `reconnecting` or `ended`.
        Status: string
        Host: string
        Received: int64
        Foreign: int64
        Corrupt: int64
    }

    /// One (bus, address) of `can_bus_check` and `can_hybrid_rx_check`.
    type CanAddressState = {
        /// None for an expected address never seen.
        Bus: int option
        /// `0x13A`.
        Address: string
        /// The message's name in the DBC.
        Name: string option
        /// Frames since the session started.
        Count: int64
        /// Frames in the window.
        WindowCount: int
        RateHz: float
        /// Seconds since the last frame (log time); None when never seen.
        AgeS: float option
        /// Payload changes per second in the window.
        ChangeRateHz: float
        /// In the `addresses` parameter.
        Expected: bool
        /// Expected and not seen within the window.
        Missing: bool
        /// Frames failing the DBC's checksum rule.
        ChecksumErrors: int64
        /// Frames whose counter did not advance by one.
        CounterErrors: int64
    }

    /// The `data` of `can_bus_check` and `can_hybrid_rx_check` messages.
    type CanCheckData = {
        WindowS: float
        /// Log time (the log's monotonic clock) of the latest event, seconds.
        LogTimeS: float option
        Events: int64
        Frames: int64
        Addresses: CanAddressState list
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

    /// The descriptor a Tool Capability document (as JSON) describes: what a client needs to
    /// type and check parameters (`Parameters.validate`) before it sends them. A type this build
    /// does not know is an error (the service is newer than the client).
    let descriptorOf (c: JsonElement) : Result<ToolDescriptor, string> =
        let text (e: JsonElement) (name: string) =
            match e.TryGetProperty name with
            | true, v when v.ValueKind = JsonValueKind.String -> v.GetString()
            | _ -> ""

        let number (e: JsonElement) (name: string) =
            match e.TryGetProperty name with
            | true, v when v.ValueKind = JsonValueKind.Number -> Some(v.GetDouble())
            | _ -> None

        let strings (e: JsonElement) (name: string) =
            match e.TryGetProperty name with
            | true, v when v.ValueKind = JsonValueKind.Array -> [ for x in v.EnumerateArray() -> x.ToString() ]
            | _ -> []

        let id = text c "id"

        let typeOf (name: string) (t: string) =
            match t with
            | "str" -> Ok ParameterType.Str
            | "int" -> Ok ParameterType.Int
            | "float" -> Ok ParameterType.Float
            | "bool" -> Ok ParameterType.Bool
            | "list" -> Ok ParameterType.List
            | "file" -> Ok ParameterType.File
            | other -> Error $"{id}: parameter {name} has a type this client does not know ('{other}'); upgrade it"

        let defaultOf (t: ParameterType) (p: JsonElement) : ParameterValue option =
            match p.TryGetProperty "default" with
            | true, e ->
                match t, e.ValueKind with
                | ParameterType.Str, JsonValueKind.String -> Some(ParameterValue.Str(e.GetString()))
                | ParameterType.File, JsonValueKind.String -> Some(ParameterValue.File(e.GetString()))
                | ParameterType.Int, JsonValueKind.Number -> Some(ParameterValue.Int(e.GetInt64()))
                | ParameterType.Float, JsonValueKind.Number -> Some(ParameterValue.Float(e.GetDouble()))
                | ParameterType.Bool, (JsonValueKind.True | JsonValueKind.False) ->
                    Some(ParameterValue.Bool(e.GetBoolean()))
                | ParameterType.List, JsonValueKind.Array ->
                    Some(ParameterValue.List [ for x in e.EnumerateArray() -> x.ToString() ])
                | _ -> None
            | false, _ -> None

        let parameters =
            match c.TryGetProperty "parameters" with
            | true, ps when ps.ValueKind = JsonValueKind.Object -> List.ofSeq (ps.EnumerateObject())
            | _ -> []

        let specs = [
            for p in parameters ->
                typeOf p.Name (text p.Value "type")
                |> Result.map (fun t -> {
                    Name = p.Name
                    Type = t
                    Default = defaultOf t p.Value
                    Description = text p.Value "description"
                    Choices = strings p.Value "choices"
                    Required =
                        match p.Value.TryGetProperty "required" with
                        | true, r -> r.ValueKind = JsonValueKind.True
                        | false, _ -> false
                    Min = number p.Value "min"
                    Max = number p.Value "max"
                })
        ]

        match
            specs
            |> List.tryPick (function
                | Error e -> Some e
                | Ok _ -> None)
        with
        | Some e -> Error e
        | None ->
            Ok {
                Id = id
                Name = text c "name"
                Description = text c "description"
                Category =
                    match text c "category" with
                    | "converter" -> ToolCategory.Converter
                    | "exporter" -> ToolCategory.Exporter
                    | "monitor" -> ToolCategory.Monitor
                    | _ -> ToolCategory.Analyzer
                Parameters =
                    specs
                    |> List.choose (function
                        | Ok s -> Some s
                        | Error _ -> None)
                InputTypes = strings c "input_types"
                OutputTypes = strings c "output_types"
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
