module CtsLite.Server.Tests.ConfigTests

open System.Collections.Generic
open Microsoft.Extensions.Logging
open Expecto
open FsCheck
open FsCheck.FSharp
open CtsLite.Server

let private env (pairs: (string * string) list) : IReadOnlyDictionary<string, string> =
    dict pairs |> Dictionary :> IReadOnlyDictionary<string, string>

let private files (pairs: (string * string) list) (path: string) =
    match List.tryFind (fun (p, _) -> p = path) pairs with
    | Some(_, content) -> Ok content
    | None -> Error "file not found"

let private loadOk path variables fileSystem =
    match Config.load path (env variables) (files fileSystem) with
    | Ok loaded -> loaded.Config
    | Error errors -> failwithf "unexpected errors: %A" (errors |> List.map Config.describe)

let private loadErrors path variables fileSystem =
    match Config.load path (env variables) (files fileSystem) with
    | Ok _ -> failwith "expected configuration errors"
    | Error errors -> errors

let secret = "0123456789abcdef0123456789abcdef-long-enough"

let precedence =
    testList "precedence" [
        test "embedded defaults" {
            let c = loadOk None [] []
            Expect.equal c.ApiHost "127.0.0.1" "host"
            Expect.equal c.ApiPort 8080 "port"
            Expect.equal c.LogLevel LogLevel.Information "level"
            Expect.isTrue (c.DataDir.EndsWith "cts-lite") "data dir in the user's data folder"
            Expect.isNone c.JwtSecret "no secret"
            Expect.equal c.Environment DeploymentEnvironment.Development "environment"
        }
        test "the file overrides defaults and variables override the file" {
            let toml = "api_port = 9000\nlog_level = \"debug\"\nenvironment = \"production\"\n"
            let fromFile = loadOk (Some "/etc/cts.toml") [] [ "/etc/cts.toml", toml ]
            Expect.equal fromFile.ApiPort 9000 "file port"
            Expect.equal fromFile.LogLevel LogLevel.Debug "file level"
            Expect.equal fromFile.Environment DeploymentEnvironment.Production "file environment"

            let both =
                loadOk (Some "/etc/cts.toml") [ "CTS_API_PORT", "9100"; "CTS_LOG_LEVEL", "WARN" ] [
                    "/etc/cts.toml", toml
                ]

            Expect.equal both.ApiPort 9100 "variable wins"
            Expect.equal both.LogLevel LogLevel.Warning "variable wins, case-insensitive alias"
            Expect.equal both.Environment DeploymentEnvironment.Production "untouched key keeps the file's value"
        }
        test "CTS_CONFIG names the file when --config is absent; --config wins over it" {
            let fs = [ "/a.toml", "api_port = 1111"; "/b.toml", "api_port = 2222" ]
            Expect.equal (loadOk None [ "CTS_CONFIG", "/a.toml" ] fs).ApiPort 1111 "CTS_CONFIG"
            Expect.equal (loadOk (Some "/b.toml") [ "CTS_CONFIG", "/a.toml" ] fs).ApiPort 2222 "--config"
        }
        test "python-style level names are accepted in any case" {
            for name, level in
                [
                    "INFO", LogLevel.Information
                    "Debug", LogLevel.Debug
                    "CRITICAL", LogLevel.Critical
                ] do
                Expect.equal (loadOk None [ "CTS_LOG_LEVEL", name ] []).LogLevel level name
        }
        test "a non-loopback bind is allowed with a secret of 32 bytes or more" {
            let c = loadOk None [ "CTS_API_HOST", "0.0.0.0"; "CTS_JWT_SECRET", secret ] []
            Expect.equal c.ApiHost "0.0.0.0" "host"
            Expect.equal c.JwtSecret (Some secret) "secret"
        }
        test "data_dir expands ~ and becomes absolute" {
            let c = loadOk None [ "CTS_DATA_DIR", "~/x/y" ] []
            Expect.isTrue (System.IO.Path.IsPathRooted c.DataDir) "absolute"
            Expect.isTrue (c.DataDir.EndsWith "x/y") "kept the rest"
        }
        test "limits, retention and CORS keys: defaults, the file and the variables" {
            let d = loadOk None [] []
            Expect.equal d.RetentionDays 7 "retention 7 days"
            Expect.equal d.CorsOrigins [] "no CORS"
            Expect.equal d.MaxJsonBodyBytes (1024 * 1024) "JSON 1 MiB"
            Expect.equal d.SseKeepalive (System.TimeSpan.FromSeconds 15.0) "keepalive 15 s"
            Expect.equal d.MaxUploadBytes (2L <<< 30) "upload 2 GiB"
            Expect.equal d.RunTimeout (System.TimeSpan.FromMinutes 30.0) "run timeout 30 min"
            Expect.equal d.RateLimitPerMinute 600 "600 per minute"

            let toml =
                "retention_days = 0\ncors_origins = [\"https://a.example\", \"http://localhost:3000/\"]\nmax_concurrent_uploads = 2\nmax_queued_runs = 5\nmax_json_body_bytes = 4096\nsse_keepalive_s = 3\n"

            let c = loadOk (Some "/c.toml") [] [ "/c.toml", toml ]
            Expect.equal c.RetentionDays 0 "0 keeps forever"

            Expect.equal
                c.CorsOrigins
                [ "https://a.example"; "http://localhost:3000" ]
                "origins, trailing slash dropped"

            Expect.equal (c.MaxConcurrentUploads, c.MaxQueuedRuns) (2, 5) "upload and queue limits"
            Expect.equal (c.MaxJsonBodyBytes, c.SseKeepalive.TotalSeconds) (4096, 3.0) "JSON body, keepalive"

            let v = loadOk None [ "CTS_CORS_ORIGINS", "https://a.example, *" ] []
            Expect.equal v.CorsOrigins [ "https://a.example"; "*" ] "comma-separated variable"
        }
        test "trusted_proxies: addresses and CIDR networks; anything else is named" {
            Expect.isEmpty (Config.defaults ()).TrustedProxies "none by default"

            let c =
                loadOk (Some "/c.toml") [] [ "/c.toml", "trusted_proxies = [\"10.0.0.0/8\", \"192.0.2.1\", \"::1\"]\n" ]

            Expect.equal
                c.TrustedProxies
                [
                    System.Net.IPNetwork.Parse "10.0.0.0/8"
                    System.Net.IPNetwork.Parse "192.0.2.1/32"
                    System.Net.IPNetwork.Parse "::1/128"
                ]
                "networks, single addresses as /32 and /128"

            let v = loadOk None [ "CTS_TRUSTED_PROXIES", "172.16.0.0/12, 127.0.0.1" ] []
            Expect.equal v.TrustedProxies.Length 2 "comma-separated variable"

            match loadErrors None [ "CTS_TRUSTED_PROXIES", "10.0.0.0/8, proxy.local" ] [] with
            | [ e ] -> Expect.stringContains (Config.describe e) "CTS_TRUSTED_PROXIES" "the setting is named"
            | other -> failtestf "a host name is not an address: %A" other
        }
        testProperty "every valid port from the environment is taken" (fun (p: uint16) ->
            (loadOk None [ "CTS_API_PORT", string p ] []).ApiPort = int p)
        test "unrelated CTS_ variables produce a warning, known foreign ones do not" {
            match Config.load None (env [ "CTS_API_PROT", "1"; "CTS_SHARED_DIR", "/x" ]) (files []) with
            | Ok loaded ->
                Expect.equal loaded.Warnings.Length 1 "one warning"
                Expect.stringContains loaded.Warnings.Head "CTS_API_PROT" "names the variable"
            | Error e -> failtestf "%A" e
        }
    ]

let badValues =
    testList "bad values" [
        testProperty "ports outside 0..65535 are rejected naming the variable" (fun (p: int) ->
            (p < 0 || p > 65535)
            ==> lazy
                (match loadErrors None [ "CTS_API_PORT", string p ] [] with
                 | [ e ] ->
                     (Config.describe e).Contains "CTS_API_PORT"
                     && (Config.describe e).Contains "0 to 65535"
                 | _ -> false))
        test "each bad variable names itself and the accepted values" {
            let cases = [
                "CTS_API_PORT", "eighty", "integer"
                "CTS_API_HOST", "not a host!", "IP address"
                "CTS_LOG_LEVEL", "loud", "information"
                "CTS_ENVIRONMENT", "staging", "development or production"
                "CTS_DATA_DIR", "", "folder"
                "CTS_CORS_ORIGINS", "https://a.example/app", "origins"
                "CTS_CORS_ORIGINS", "ftp://a.example", "origins"
                "CTS_TRUSTED_PROXIES", "10.0.0.0/33", "CIDR"
                "CTS_RETENTION_DAYS", "-1", "days"
                "CTS_MAX_CONCURRENT_UPLOADS", "0", "1 to 1024"
                "CTS_MAX_JSON_BODY_BYTES", "10", "bytes"
                "CTS_SSE_KEEPALIVE_S", "0", "seconds"
            ]

            for variable, value, expected in cases do
                match loadErrors None [ variable, value ] [] with
                | [ e ] ->
                    let message = Config.describe e
                    Expect.stringContains message variable "names the variable"
                    Expect.stringContains message expected "says what is accepted"
                | es -> failtestf "%s: expected one error, got %A" variable es
        }
        test "a short secret is rejected and its value never appears" {
            let short = "tiny-secret-value"

            match loadErrors None [ "CTS_JWT_SECRET", short ] [] with
            | [ e ] ->
                let message = Config.describe e
                Expect.stringContains message "CTS_JWT_SECRET" "names the variable"
                Expect.stringContains message "32 bytes" "says the rule"
                Expect.isFalse (message.Contains short) "value hidden"
            | es -> failtestf "%A" es
        }
        test "all errors are reported together" {
            let errors =
                loadErrors None [ "CTS_API_PORT", "x"; "CTS_LOG_LEVEL", "y"; "CTS_ENVIRONMENT", "z" ] []

            Expect.equal errors.Length 3 "three"
        }
        test "a non-loopback bind without a secret refuses to start" {
            match loadErrors None [ "CTS_API_HOST", "0.0.0.0" ] [] with
            | [ ConfigError.UnsafeBind "0.0.0.0" as e ] ->
                Expect.stringContains (Config.describe e) "jwt_secret" "explains"
            | es -> failtestf "%A" es
        }
        test "file problems name the file, line and key" {
            match loadErrors (Some "/c.toml") [] [ "/c.toml", "api_port = 80\napi_port_typo = 3\n" ] with
            | [ ConfigError.UnknownKey("/c.toml", "api_port_typo") as e ] ->
                Expect.stringContains (Config.describe e) "accepted keys" "lists keys"
            | es -> failtestf "%A" es

            match loadErrors (Some "/c.toml") [] [ "/c.toml", "api_port = 80\nlog_level = \n" ] with
            | [ ConfigError.TomlSyntax("/c.toml", 2, _, _) as e ] ->
                Expect.stringStarts (Config.describe e) "/c.toml:2:" "file:line:"
            | es -> failtestf "%A" es

            match loadErrors (Some "/c.toml") [] [ "/c.toml", "api_port = \"eighty\"\n" ] with
            | [ e ] -> Expect.stringStarts (Config.describe e) "/c.toml: api_port" "file and key"
            | es -> failtestf "%A" es

            match loadErrors (Some "/missing.toml") [] [] with
            | [ ConfigError.UnreadableFile("/missing.toml", _) ] -> ()
            | es -> failtestf "%A" es
        }
    ]

let all = testList "Config" [ precedence; badValues ]
