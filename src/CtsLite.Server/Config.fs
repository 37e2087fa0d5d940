namespace CtsLite.Server

open System
open System.Collections.Generic
open System.IO
open System.Net
open System.Text
open Microsoft.Extensions.Logging

/// Which kind of deployment the service runs in.
[<RequireQualifiedAccess>]
type DeploymentEnvironment =
    | Development
    | Production

/// The service's settings after defaults, the TOML file and `CTS_*` variables were applied.
type ServiceConfig = {
    ApiHost: string
    ApiPort: int
    LogLevel: LogLevel
    DataDir: string
    /// Never logged or shown; `None` means authentication is off and the bind is loopback-only.
    JwtSecret: string option
    Environment: DeploymentEnvironment
    /// Runs executing at once; more wait in a FIFO queue.
    MaxConcurrentRuns: int
    /// A run still going after this long is stopped and failed.
    RunTimeout: TimeSpan
    /// Folders whose files `path` inputs and file parameters may name (canonical, no trailing slash).
    InputRoots: string list
    /// Largest upload, in bytes.
    MaxUploadBytes: int64
    /// When set, tokens must carry this `aud`.
    JwtAudience: string option
    /// When set, tokens must carry this `iss`.
    JwtIssuer: string option
    /// Requests per minute per token (per IP when anonymous), and failed authentications per
    /// minute per remote address; 0 turns rate limiting off.
    RateLimitPerMinute: int
    /// Proxies (addresses or CIDR networks) whose `X-Forwarded-For` names the remote address;
    /// empty: the connection's own address is the remote address.
    TrustedProxies: Net.IPNetwork list
    /// Uploads and artifacts unused for this many days are deleted; 0 keeps them forever.
    RetentionDays: int
    /// Browser origins allowed by CORS (`scheme://host[:port]`, or `*`); empty: no CORS headers.
    CorsOrigins: string list
    /// Uploads streaming at once; more are refused with 429.
    MaxConcurrentUploads: int
    /// Uploads one caller (token subject, else remote address) may stream at once; more get 429.
    MaxUploadsPerCaller: int
    /// The longest an upload may take from its first byte to its last; beyond, 408.
    UploadTimeout: TimeSpan
    /// The slowest an upload may stream on average once its first 10 s are over, and the longest
    /// it may send nothing (30 s); slower, 408. 0 turns the rate check off.
    UploadMinBytesPerSecond: int
    /// Runs waiting in the queue; a new run beyond this is refused with 429.
    MaxQueuedRuns: int
    /// Times a run is claimed before it is failed: a run whose worker died, or whose end the
    /// store could not record, is tried again up to this many times in all.
    MaxAttempts: int
    /// Largest JSON request body, in bytes.
    MaxJsonBodyBytes: int
    /// Silence after which an SSE stream gets a keepalive comment.
    SseKeepalive: TimeSpan
    /// Log streams (SSE) open at once; one more gets 429.
    MaxSseStreams: int
    /// Log streams one caller may hold open at once; one more gets 429.
    MaxSseStreamsPerCaller: int
    /// Monitor sessions running at once; one more gets 429.
    MaxMonitors: int
    /// Clients watching one monitor session at once; one more gets 429.
    MaxStreamClients: int
    /// A monitor session nobody has watched for this long stops itself.
    MonitorIdleTimeout: TimeSpan
}

/// Where a setting came from.
[<RequireQualifiedAccess>]
type ConfigSource =
    | File of path: string
    | EnvVar of name: string

/// Why the configuration cannot be used. Every problem is reported, not just the first.
[<RequireQualifiedAccess>]
type ConfigError =
    | UnreadableFile of path: string * reason: string
    | TomlSyntax of path: string * line: int * column: int * message: string
    | UnknownKey of path: string * key: string
    /// `shown` is `None` for secrets, whose values never appear in messages.
    | InvalidValue of source: ConfigSource * key: string * shown: string option * expected: string
    | UnsafeBind of host: string

/// The configuration loaded, with notes worth a log line.
type LoadedConfig = {
    Config: ServiceConfig
    Warnings: string list
}

/// Loading and validating the service configuration.
[<RequireQualifiedAccess>]
module Config =

    /// The environment variable naming the TOML file when `--config` is not given.
    [<Literal>]
    let ConfigPathVariable = "CTS_CONFIG"

    /// `CTS_*` variables that belong to other parts of CtsLite (CLI, tests), not to the service.
    let private foreignVariables =
        set [
            ConfigPathVariable
            "CTS_URL"
            "CTS_API_KEY"
            "CTS_TOKEN"
            "CTS_SHARED_DIR"
            "CTS_OUT_DIR"
        ]

    /// The default data folder: `cts-lite` in the user's data directory (XDG_DATA_HOME on Linux).
    let defaultDataDir () : string =
        match Environment.GetFolderPath Environment.SpecialFolder.LocalApplicationData with
        | "" -> Path.GetFullPath "cts-lite-data"
        | folder -> Path.Combine(folder, "cts-lite")

    /// Embedded defaults: loopback:8080, Information, development, no secret.
    let defaults () : ServiceConfig = {
        ApiHost = "127.0.0.1"
        ApiPort = 8080
        LogLevel = LogLevel.Information
        DataDir = defaultDataDir ()
        JwtSecret = None
        Environment = DeploymentEnvironment.Development
        MaxConcurrentRuns = max 1 Environment.ProcessorCount
        RunTimeout = TimeSpan.FromMinutes 30.0
        InputRoots = []
        MaxUploadBytes = 2L * 1024L * 1024L * 1024L
        JwtAudience = None
        JwtIssuer = None
        RateLimitPerMinute = 600
        TrustedProxies = []
        RetentionDays = 7
        CorsOrigins = []
        MaxConcurrentUploads = 4
        MaxUploadsPerCaller = 2
        UploadTimeout = TimeSpan.FromHours 1.0
        UploadMinBytesPerSecond = 4096
        MaxQueuedRuns = 1000
        MaxAttempts = 3
        MaxJsonBodyBytes = 1024 * 1024
        SseKeepalive = TimeSpan.FromSeconds 15.0
        MaxSseStreams = 512
        MaxSseStreamsPerCaller = 32
        MaxMonitors = 16
        MaxStreamClients = 32
        MonitorIdleTimeout = TimeSpan.FromSeconds 300.0
    }

    /// The environment variable overriding `key`: `api_port` -> `CTS_API_PORT`.
    let variableFor (key: string) : string = "CTS_" + key.ToUpperInvariant()

    /// A raw value as found: TOML keeps its type, environment variables are strings.
    type private Raw =
        | RawString of string
        | RawInteger of int64
        | RawOther of obj

    let private shown (raw: Raw) =
        match raw with
        | RawString s -> $"'{s}'"
        | RawInteger i -> string i
        | RawOther o -> $"{o}"

    let private logLevels =
        [
            "trace", LogLevel.Trace
            "debug", LogLevel.Debug
            "information", LogLevel.Information
            "info", LogLevel.Information
            "warning", LogLevel.Warning
            "warn", LogLevel.Warning
            "error", LogLevel.Error
            "critical", LogLevel.Critical
            "fatal", LogLevel.Critical
            "none", LogLevel.None
        ]
        |> Map.ofList

    let private isLoopback (host: string) =
        host.Equals("localhost", StringComparison.OrdinalIgnoreCase)
        || (match IPAddress.TryParse host with
            | true, ip -> IPAddress.IsLoopback ip
            | false, _ -> false)

    type private Setting = {
        Key: string
        Secret: bool
        Expected: string
        Apply: Raw -> ServiceConfig -> ServiceConfig option
    }

    let private text (raw: Raw) =
        match raw with
        | RawString s -> Some(s.Trim())
        | _ -> None

    let private integer (raw: Raw) : int64 option =
        match raw with
        | RawInteger i -> Some i
        | RawString s ->
            match
                Int64.TryParse(s.Trim(), Globalization.NumberStyles.None, Globalization.CultureInfo.InvariantCulture)
            with
            | true, i -> Some i
            | false, _ -> None
        | RawOther _ -> None

    let private expandHome (s: string) =
        match s with
        | "~" -> Environment.GetFolderPath Environment.SpecialFolder.UserProfile
        | _ when s.StartsWith "~/" ->
            Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, s.Substring 2)
        | _ -> s

    /// A TOML array of strings, or a variable's value split at `separator`.
    let private list (separator: char) (raw: Raw) : string list option =
        match raw with
        | RawString s ->
            Some(
                s.Split(separator, StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries)
                |> List.ofArray
            )
        | RawOther(:? Tomlyn.Model.TomlArray as a) ->
            let items = [ for x in a -> x ]

            if items |> List.forall (fun x -> x :? string) then
                Some(items |> List.map (string >> fun s -> s.Trim()))
            else
                None
        | _ -> None

    /// An address (`10.0.0.1`, `::1`) or a CIDR network (`10.0.0.0/8`).
    let private network (s: string) : Net.IPNetwork option =
        match Net.IPNetwork.TryParse s with
        | true, n -> Some n
        | false, _ ->
            match Net.IPAddress.TryParse s with
            | true, ip ->
                Some(
                    Net.IPNetwork(
                        ip,
                        (if ip.AddressFamily = Net.Sockets.AddressFamily.InterNetwork then
                             32
                         else
                             128)
                    )
                )
            | false, _ -> None

    /// `*`, or an http(s) origin: scheme, host and optional port, no path, query or user.
    let private isOrigin (s: string) =
        s = "*"
        || (match Uri.TryCreate(s.TrimEnd('/'), UriKind.Absolute) with
            | true, u ->
                (u.Scheme = Uri.UriSchemeHttp || u.Scheme = Uri.UriSchemeHttps)
                && u.AbsolutePath = "/"
                && u.Query = ""
                && u.Fragment = ""
                && u.UserInfo = ""
                && not (s.TrimEnd('/').EndsWith "/")
            | false, _ -> false)

    /// An integer setting accepted within [lo, hi].
    let private ranged
        (key: string)
        (lo: int64)
        (hi: int64)
        (expected: string)
        (set: int64 -> ServiceConfig -> ServiceConfig)
        : Setting = {
        Key = key
        Secret = false
        Expected = expected
        Apply =
            fun raw c ->
                integer raw
                |> Option.filter (fun n -> n >= lo && n <= hi)
                |> Option.map (fun n -> set n c)
    }

    let private settings: Setting list = [
        {
            Key = "api_host"
            Secret = false
            Expected = "an IP address or host name, e.g. 127.0.0.1"
            Apply =
                fun raw c ->
                    text raw
                    |> Option.filter (fun h -> h <> "" && Uri.CheckHostName h <> UriHostNameType.Unknown)
                    |> Option.map (fun h -> { c with ApiHost = h })
        }
        ranged "api_port" 0L 65535L "an integer from 0 to 65535 (0 picks a free port)" (fun p c -> {
            c with
                ApiPort = int p
        })
        {
            Key = "log_level"
            Secret = false
            Expected = "one of trace, debug, information (info), warning (warn), error, critical (fatal), none"
            Apply =
                fun raw c ->
                    text raw
                    |> Option.bind (fun s -> Map.tryFind (s.ToLowerInvariant()) logLevels)
                    |> Option.map (fun l -> { c with LogLevel = l })
        }
        {
            Key = "data_dir"
            Secret = false
            Expected = "a folder path"
            Apply =
                fun raw c ->
                    text raw
                    |> Option.filter (fun s -> s <> "" && s.IndexOf '\000' < 0)
                    |> Option.map (fun s ->
                        let expanded = expandHome s

                        {
                            c with
                                DataDir = Path.GetFullPath expanded
                        })
        }
        {
            Key = "jwt_secret"
            Secret = true
            Expected = "a secret of at least 32 bytes (UTF-8)"
            Apply =
                fun raw c ->
                    match raw with
                    | RawString s when Encoding.UTF8.GetByteCount s >= 32 -> Some { c with JwtSecret = Some s }
                    | _ -> None
        }
        ranged "max_concurrent_runs" 1L 256L "an integer from 1 to 256" (fun n c -> {
            c with
                MaxConcurrentRuns = int n
        })
        ranged "run_timeout_s" 1L 604800L "a whole number of seconds from 1 to 604800" (fun n c -> {
            c with
                RunTimeout = TimeSpan.FromSeconds(float n)
        })
        {
            Key = "input_roots"
            Secret = false
            Expected = "existing folders (a TOML array of paths; in CTS_INPUT_ROOTS separated by ':')"
            Apply =
                fun raw c ->
                    list ':' raw
                    |> Option.filter (List.forall (fun p -> p <> "" && p.IndexOf '\000' < 0))
                    |> Option.map (List.map (expandHome >> Path.GetFullPath >> fun p -> p.TrimEnd('/')))
                    |> Option.filter (List.forall Directory.Exists)
                    |> Option.map (fun roots -> { c with InputRoots = roots })
        }
        ranged "max_upload_bytes" 1L 1099511627776L "a number of bytes from 1 to 1099511627776" (fun n c -> {
            c with
                MaxUploadBytes = n
        })
        {
            Key = "jwt_audience"
            Secret = false
            Expected = "a non-empty string"
            Apply =
                fun raw c ->
                    text raw
                    |> Option.filter ((<>) "")
                    |> Option.map (fun a -> { c with JwtAudience = Some a })
        }
        {
            Key = "jwt_issuer"
            Secret = false
            Expected = "a non-empty string"
            Apply =
                fun raw c ->
                    text raw
                    |> Option.filter ((<>) "")
                    |> Option.map (fun i -> { c with JwtIssuer = Some i })
        }
        ranged "rate_limit_per_minute" 0L 1000000L "an integer from 0 (off) to 1000000" (fun n c -> {
            c with
                RateLimitPerMinute = int n
        })
        ranged "retention_days" 0L 36500L "a whole number of days from 0 (keep forever) to 36500" (fun n c -> {
            c with
                RetentionDays = int n
        })
        {
            Key = "cors_origins"
            Secret = false
            Expected =
                "origins such as https://app.example.com:8443 or * (a TOML array; in CTS_CORS_ORIGINS separated by ',')"
            Apply =
                fun raw c ->
                    list ',' raw
                    |> Option.filter (List.forall isOrigin)
                    |> Option.map (fun origins -> {
                        c with
                            CorsOrigins = origins |> List.map (fun o -> o.TrimEnd('/'))
                    })
        }
        {
            Key = "trusted_proxies"
            Secret = false
            Expected =
                "proxy addresses or CIDR networks such as 10.0.0.0/8 (a TOML array; in CTS_TRUSTED_PROXIES separated by ',')"
            Apply =
                fun raw c ->
                    list ',' raw
                    |> Option.bind (fun items ->
                        let parsed = items |> List.map network

                        if parsed |> List.forall Option.isSome then
                            Some {
                                c with
                                    TrustedProxies = List.choose id parsed
                            }
                        else
                            None)
        }
        ranged "max_concurrent_uploads" 1L 1024L "an integer from 1 to 1024" (fun n c -> {
            c with
                MaxConcurrentUploads = int n
        })
        ranged "max_uploads_per_caller" 1L 1024L "an integer from 1 to 1024" (fun n c -> {
            c with
                MaxUploadsPerCaller = int n
        })
        ranged "upload_timeout_s" 1L 86400L "a whole number of seconds from 1 to 86400" (fun n c -> {
            c with
                UploadTimeout = TimeSpan.FromSeconds(float n)
        })
        ranged "upload_min_bytes_per_second" 0L 104857600L "bytes per second from 0 (off) to 104857600" (fun n c -> {
            c with
                UploadMinBytesPerSecond = int n
        })
        ranged "max_queued_runs" 1L 1000000L "an integer from 1 to 1000000" (fun n c -> {
            c with
                MaxQueuedRuns = int n
        })
        ranged "max_attempts" 1L 100L "an integer from 1 to 100" (fun n c -> { c with MaxAttempts = int n })
        ranged "max_json_body_bytes" 1024L 104857600L "a number of bytes from 1024 to 104857600" (fun n c -> {
            c with
                MaxJsonBodyBytes = int n
        })
        ranged "sse_keepalive_s" 1L 3600L "a whole number of seconds from 1 to 3600" (fun n c -> {
            c with
                SseKeepalive = TimeSpan.FromSeconds(float n)
        })
        ranged "max_sse_streams" 1L 100000L "an integer from 1 to 100000" (fun n c -> { c with MaxSseStreams = int n })
        ranged "max_sse_streams_per_caller" 1L 100000L "an integer from 1 to 100000" (fun n c -> {
            c with
                MaxSseStreamsPerCaller = int n
        })
        ranged "max_monitors" 1L 1000L "an integer from 1 to 1000" (fun n c -> { c with MaxMonitors = int n })
        ranged "max_stream_clients" 1L 10000L "an integer from 1 to 10000" (fun n c -> {
            c with
                MaxStreamClients = int n
        })
        ranged "monitor_idle_timeout_s" 1L 604800L "a whole number of seconds from 1 to 604800" (fun n c -> {
            c with
                MonitorIdleTimeout = TimeSpan.FromSeconds(float n)
        })
        {
            Key = "environment"
            Secret = false
            Expected = "development or production"
            Apply =
                fun raw c ->
                    match text raw |> Option.map (fun s -> s.ToLowerInvariant()) with
                    | Some "development" ->
                        Some {
                            c with
                                Environment = DeploymentEnvironment.Development
                        }
                    | Some "production" ->
                        Some {
                            c with
                                Environment = DeploymentEnvironment.Production
                        }
                    | _ -> None
        }
    ]

    /// The keys the configuration accepts, in documentation order.
    let keys: string list = settings |> List.map (fun s -> s.Key)

    let private apply (source: ConfigSource) (setting: Setting) (raw: Raw) (config: ServiceConfig) =
        match setting.Apply raw config with
        | Some updated -> Ok updated
        | None ->
            let value = if setting.Secret then None else Some(shown raw)
            Error(ConfigError.InvalidValue(source, setting.Key, value, setting.Expected))

    let private fromToml (path: string) (content: string) : Result<(string * Raw) list, ConfigError list> =
        try
            let table =
                Tomlyn.TomlSerializer.Deserialize<Tomlyn.Model.TomlTable>(content, Tomlyn.TomlSerializerOptions())

            let entries = [
                for kv in table ->
                    let raw =
                        match kv.Value with
                        | :? string as s -> RawString s
                        | :? int64 as i -> RawInteger i
                        | other -> RawOther other

                    kv.Key, raw
            ]

            let unknown =
                entries
                |> List.filter (fun (k, _) -> not (List.contains k keys))
                |> List.map (fun (k, _) -> ConfigError.UnknownKey(path, k))

            match unknown with
            | [] -> Ok entries
            | errors -> Error errors
        with :? Tomlyn.TomlException as e ->
            let message =
                match e.Message.IndexOf(": error : ", StringComparison.Ordinal) with
                | -1 -> e.Message
                | i -> e.Message.Substring(i + 10)

            Error [
                ConfigError.TomlSyntax(path, e.Line.GetValueOrDefault(), e.Column.GetValueOrDefault(), message)
            ]

    /// Applies defaults, then the TOML file (when a path is given), then `CTS_<KEY>` variables;
    /// every problem found is returned. `readFile` is the file system (a parameter for tests).
    let load
        (configPath: string option)
        (environment: IReadOnlyDictionary<string, string>)
        (readFile: string -> Result<string, string>)
        : Result<LoadedConfig, ConfigError list> =
        let errors = ResizeArray<ConfigError>()
        let mutable config = defaults ()

        let step source setting raw =
            match apply source setting raw config with
            | Ok updated -> config <- updated
            | Error e -> errors.Add e

        let path =
            match configPath with
            | Some p -> Some p
            | None ->
                match environment.TryGetValue ConfigPathVariable with
                | true, p when not (String.IsNullOrWhiteSpace p) -> Some p
                | _ -> None

        match path with
        | None -> ()
        | Some p ->
            match readFile p with
            | Error reason -> errors.Add(ConfigError.UnreadableFile(p, reason))
            | Ok content ->
                match fromToml p content with
                | Error es -> errors.AddRange es
                | Ok entries ->
                    for key, raw in entries do
                        let setting = settings |> List.find (fun s -> s.Key = key)
                        step (ConfigSource.File p) setting raw

        for setting in settings do
            let variable = variableFor setting.Key

            match environment.TryGetValue variable with
            | true, value -> step (ConfigSource.EnvVar variable) setting (RawString value)
            | false, _ -> ()

        if errors.Count = 0 && config.JwtSecret.IsNone && not (isLoopback config.ApiHost) then
            errors.Add(ConfigError.UnsafeBind config.ApiHost)

        let known = settings |> List.map (fun s -> variableFor s.Key) |> Set.ofList

        let settingNames = String.Join(", ", known)

        let warnings = [
            for KeyValue(name, _) in environment do
                if
                    name.StartsWith("CTS_", StringComparison.Ordinal)
                    && not (known.Contains name)
                    && not (foreignVariables.Contains name)
                then
                    $"environment variable {name} is not a service setting and was not used (settings: {settingNames})"
        ]

        match List.ofSeq errors with
        | [] -> Ok { Config = config; Warnings = warnings }
        | es -> Error es

    /// Reads a file for `load`, turning I/O failures into a reason.
    let readFile (path: string) : Result<string, string> = CtsLite.Io.readText path

    /// One line per error, naming the file or variable, the key and what is accepted.
    let describe (error: ConfigError) : string =
        let where source =
            match source with
            | ConfigSource.File path -> $"{path}: "
            | ConfigSource.EnvVar _ -> ""

        match error with
        | ConfigError.UnreadableFile(path, reason) -> $"config file {path}: {reason}"
        | ConfigError.TomlSyntax(path, line, column, message) -> $"{path}:{line}:{column}: {message}"
        | ConfigError.UnknownKey(path, key) ->
            let accepted = String.Join(", ", keys)
            $"{path}: unknown key '{key}' (accepted keys: {accepted})"
        | ConfigError.InvalidValue(source, key, value, expected) ->
            let name =
                match source with
                | ConfigSource.EnvVar variable -> variable
                | ConfigSource.File _ -> key

            match value with
            | Some v -> $"{where source}{name} = {v} is invalid: expected {expected}"
            | None -> $"{where source}{name} is invalid: expected {expected} (value not shown)"
        | ConfigError.UnsafeBind host ->
            $"api_host = '{host}' is not a loopback address and no jwt_secret is set: refusing to serve without authentication (set CTS_JWT_SECRET or bind to 127.0.0.1)"

    /// The process environment as a dictionary.
    let processEnvironment () : IReadOnlyDictionary<string, string> =
        let d = Dictionary<string, string>(StringComparer.Ordinal)

        for entry in Environment.GetEnvironmentVariables() |> Seq.cast<Collections.DictionaryEntry> do
            d[string entry.Key] <- string entry.Value

        d
