/// `cts runs`, `cts logs`, `cts art` against a real Kestrel service.
module CtsLite.Cli.Tests.RunsTests

open System
open System.IO
open System.Security.Cryptography
open System.Text.Json
open Expecto
open CtsLite.Tests

let private segment () =
    Path.Combine(TestEnv.sharedDir (), "data", "rlogs", "synthetic", "default.rlog.zst")

let private sha (path: string) =
    use s = File.OpenRead path
    Convert.ToHexString(SHA256.HashData s).ToLowerInvariant()

/// A stub service answering `answers` in turn (status, Retry-After seconds, body), counting calls.
let private stub (answers: (int * int option * string) list) (f: string -> (unit -> int) -> unit) =
    let port = Tests.closedPort ()
    use listener = new Net.HttpListener()
    listener.Prefixes.Add $"http://127.0.0.1:{port}/"
    listener.Start()
    let mutable calls = 0

    let serving =
        Threading.Tasks.Task.Run(fun () ->
            try
                for status, retryAfter, body in answers do
                    let ctx = listener.GetContext()
                    calls <- calls + 1
                    ctx.Response.StatusCode <- status

                    retryAfter
                    |> Option.iter (fun s -> ctx.Response.AddHeader("Retry-After", string s))

                    ctx.Response.ContentType <- "application/json"
                    let bytes = Text.Encoding.UTF8.GetBytes(body: string)
                    ctx.Response.OutputStream.Write(bytes, 0, bytes.Length)
                    ctx.Response.Close()
            with :? Net.HttpListenerException ->
                ())

    try
        f $"http://127.0.0.1:{port}" (fun () -> calls)
    finally
        listener.Stop()
        serving.Wait(TimeSpan.FromSeconds 5.0) |> ignore

let all =
    testList "runs, logs and artifacts" [
        test "GETs are retried after 503 and 429 (honouring Retry-After), not after 404" {
            let empty = """{"runs": [], "next_cursor": null}"""
            let problem = """{"status": 503, "detail": "busy"}"""

            stub [ 503, None, problem; 429, Some 1, problem; 200, None, empty ] (fun url calls ->
                let started = Diagnostics.Stopwatch.StartNew()
                let code, out, err = Tests.cts [ "--url"; url; "runs"; "list" ]
                Expect.equal code 0 err
                Expect.stringContains out "no runs" "the third answer"
                Expect.equal (calls ()) 3 "tried three times"
                Expect.isGreaterThanOrEqual started.Elapsed.TotalSeconds 1.0 "waited the Retry-After")

            stub [ 404, None, """{"status": 404, "detail": "no run 'x'"}"""; 200, None, empty ] (fun url calls ->
                let code, _, err = Tests.cts [ "--url"; url; "runs"; "get"; "x" ]
                Expect.equal code 1 err
                Expect.equal (calls ()) 1 "a 404 is an answer, not a hiccup")

            stub
                [
                    503, None, problem
                    503, None, problem
                    503, None, problem
                    503, None, problem
                ]
                (fun url calls ->
                    let code, _, err = Tests.cts [ "--url"; url; "runs"; "list" ]
                    Expect.equal code 2 "still failing after the retries"
                    Expect.stringContains err "busy" "the service's detail"
                    Expect.equal (calls ()) 4 "one try and three retries")

            // ping and version say how the service is now: one try, so a service that is down
            // is reported at once.
            for command in [ "ping"; "version" ] do
                stub [ 502, None, problem; 200, None, """{"status": "healthy"}""" ] (fun url calls ->
                    let _, _, _ = Tests.cts [ "--url"; url; command ]
                    Expect.equal (calls ()) 1 $"{command}: one try")
        }
        test "cts run: a local route goes up as one input, --name, --force, --no-wait, exit 3 for a failed run" {
            Tests.withService (fun url ->
                let cts (args: string list) = Tests.cts ([ "--url"; url ] @ args)
                let out = TestEnv.tempDir "run-cli"

                let routeDir =
                    Path.Combine(TestEnv.sharedDir (), "data", "rlogs", "synthetic", "route")

                let route = Path.Combine(routeDir, "5ca1ab1e5ca1ab1e|2025-01-16--07-45-12")

                let code, said, err =
                    cts [
                        "--json"
                        "run"
                        "log-summary"
                        route
                        "--name"
                        "three segments"
                        "--out-dir"
                        out
                    ]

                Expect.equal code 0 err
                let run = JsonDocument.Parse(said).RootElement
                Expect.equal (run.GetProperty("status").GetString()) "completed" "completed"
                Expect.equal (run.GetProperty("name").GetString()) "three segments" "named"

                let summary =
                    JsonDocument.Parse(File.ReadAllText(Path.Combine(out, "log_summary.json"))).RootElement

                Expect.equal (summary.GetProperty("events").GetInt64()) 215833L "the three segments as one time line"

                let code, _, err = cts [ "run"; "log-summary"; route; "--out-dir"; out ]
                Expect.equal code 1 "the artifacts are there already"
                Expect.stringContains err "--force" "says how"
                File.WriteAllText(Path.Combine(out, "mine.txt"), "keep")
                let code, _, err = cts [ "run"; "log-summary"; route; "--out-dir"; out; "--force" ]
                Expect.equal code 0 err
                Expect.equal (File.ReadAllText(Path.Combine(out, "mine.txt"))) "keep" "other files left alone"

                let code, said, err = cts [ "run"; "log-summary"; segment (); "--no-wait" ]
                Expect.equal code 0 err
                let id = said.Trim()
                Expect.isMatch id "^[0-9a-f-]{36}$" "the id alone"
                let code, _, err = cts [ "logs"; id; "--follow" ]
                Expect.equal code 0 err

                let code, _, err =
                    cts [
                        "run"
                        "signal-export"
                        segment ()
                        "-p"
                        "dbc=subaru_global_2017_generated.dbc"
                        "-p"
                        "signals=No_Such.Signal"
                        "--out-dir"
                        out
                    ]

                Expect.equal code 3 $"a failed run: {err}")
        }
        test "settings: --url over CTS_URL over the file; the file's token reaches the service; cts config" {
            let secret = "cli-settings-secret-long-enough-0123456789"

            Tests.withServiceConfig (fun c -> { c with JwtSecret = Some secret }) (fun url ->
                let file = Path.Combine(TestEnv.tempDir "settings", "cts", "config.toml")
                let env = [ "CTS_CONFIG", file ]
                let code, out, err = Tests.ctsProcess env [ "config"; "path" ]
                Expect.equal (code, out.Trim()) (0, file) err
                let code, _, err = Tests.ctsProcess env [ "config"; "set"; "url"; url ]
                Expect.equal code 0 err
                let code, _, err = Tests.ctsProcess env [ "runs"; "list" ]
                Expect.equal code 1 "no token: 401"
                Expect.stringContains err "401" "refused"

                let now = DateTimeOffset.UtcNow

                let token =
                    CtsLite.Security.Jwt.create secret "settings" now (now.AddHours 1.0) None None

                let code, _, err = Tests.ctsProcess env [ "config"; "set"; "token"; token ]
                Expect.equal code 0 err

                if not (OperatingSystem.IsWindows()) then
                    Expect.equal
                        (File.GetUnixFileMode file)
                        (UnixFileMode.UserRead ||| UnixFileMode.UserWrite)
                        "owner only"

                let code, out, err = Tests.ctsProcess env [ "runs"; "list" ]
                Expect.equal code 0 err
                Expect.stringContains out "no runs" "the file's url and token"
                let code, out, _ = Tests.ctsProcess env [ "config"; "get" ]
                Expect.equal code 0 "get"
                Expect.isFalse (out.Contains token) "the token is masked"

                // A variable wins over the file, a flag over both.
                let elsewhere = $"http://127.0.0.1:{Tests.closedPort ()}"

                let code, _, err =
                    Tests.ctsProcess (("CTS_URL", elsewhere) :: env) [ "runs"; "list" ]

                Expect.equal code 2 "CTS_URL used"
                Expect.stringContains err elsewhere "named"

                let code, _, err =
                    Tests.ctsProcess (("CTS_URL", elsewhere) :: env) [ "--url"; url; "runs"; "list" ]

                Expect.equal code 0 err
                let code, _, err = Tests.ctsProcess env [ "--token"; "not.a.token"; "runs"; "list" ]
                Expect.equal code 1 "--token over the file's"
                Expect.stringContains err "401" "refused"

                File.SetUnixFileMode(file, UnixFileMode.UserRead ||| UnixFileMode.UserWrite ||| UnixFileMode.OtherRead)
                let _, _, err = Tests.ctsProcess env [ "runs"; "list" ]
                Expect.stringContains err "chmod 600" "a loose token file is warned about"

                File.WriteAllText(file, "url = [")
                let code, _, err = Tests.ctsProcess env [ "runs"; "list" ]
                Expect.equal code 1 "a broken file"
                Expect.stringContains err file "named"
                let code, _, err = Tests.ctsProcess env [ "config"; "set"; "nope"; "1" ]
                Expect.equal code 1 "unknown key"
                Expect.stringContains err "keys: url, token, timeout" "lists them")
        }
        test "runs list|get|cancel, logs (and --follow), art list|get with resume, exit codes by cause" {
            Tests.withService (fun url ->
                let cts (args: string list) = Tests.cts ([ "--url"; url ] @ args)
                let out = TestEnv.tempDir "runs-cli"

                let code, _, err =
                    cts [ "run"; "log-summary"; segment (); "--out-dir"; Path.Combine(out, "run") ]

                Expect.equal code 0 err

                let code, listed, err = cts [ "--json"; "runs"; "list"; "--all" ]
                Expect.equal code 0 err
                let runs = JsonDocument.Parse(listed).RootElement.GetProperty("runs")
                Expect.equal (runs.GetArrayLength()) 1 "the run"
                let id = runs[0].GetProperty("run_id").GetString()

                let code, table, err = cts [ "runs"; "list"; "--tool"; "log-summary" ]
                Expect.equal code 0 err
                Expect.stringContains table id "listed"
                Expect.stringContains table "completed" "its state"
                Expect.stringContains table "default.rlog.zst" "its input, by name"

                let code, shown, err = cts [ "runs"; "get"; id ]
                Expect.equal code 0 err
                Expect.stringContains shown $"run {id}: log-summary, completed" "one run"

                let code, log, err = cts [ "logs"; id ]
                Expect.equal code 0 err
                Expect.stringContains log "completed: 71943 events" "the log"

                let code, followed, err = cts [ "logs"; id; "--follow" ]
                Expect.equal code 0 err
                Expect.equal followed log "--follow of an ended run: the same lines, once"
                Expect.stringContains err "completed" "and how it ended"

                let code, arts, err = cts [ "--json"; "art"; "list"; id ]
                Expect.equal code 0 err

                let artifacts = [
                    for a in JsonDocument.Parse(arts).RootElement.GetProperty("artifacts").EnumerateArray() ->
                        a.GetProperty("artifact_id").GetString(),
                        a.GetProperty("filename").GetString(),
                        a.GetProperty("sha256").GetString()
                ]

                Expect.equal
                    (artifacts |> List.map (fun (_, f, _) -> f) |> List.sort)
                    [ "log_summary.html"; "log_summary.json" ]
                    "both"

                let aid, name, digest =
                    artifacts |> List.find (fun (_, f, _) -> f = "log_summary.json")

                let dir = Directory.CreateDirectory(Path.Combine(out, "get")).FullName
                let code, said, err = cts [ "art"; "get"; aid; "--out"; dir ]
                Expect.equal code 0 err
                let file = Path.Combine(dir, name)
                Expect.equal (sha file) digest "the bytes"
                Expect.stringContains said name "says where"

                let code, _, err = cts [ "art"; "get"; aid; "--out"; dir ]
                Expect.equal code 1 "never over a file without --force"
                Expect.stringContains err "--force" "says how"

                // A partial download is resumed from where it stopped.
                let bytes = File.ReadAllBytes file
                File.Delete file
                File.WriteAllBytes(file + ".part", bytes[..99])
                let code, said, err = cts [ "art"; "get"; aid; "--out"; file ]
                Expect.equal code 0 err
                Expect.stringContains said "resumed after 100 B" "resumed"
                Expect.equal (sha file) digest "the same bytes"
                Expect.isFalse (File.Exists(file + ".part")) "the partial file is gone"

                let code, _, err = cts [ "art"; "get"; aid; "--out"; file; "--force" ]
                Expect.equal code 0 err

                let code, _, err = cts [ "runs"; "cancel"; id ]
                Expect.equal code 1 "an ended run: 409, the request was wrong"
                Expect.stringContains err "already ended" "the service's reason"

                let code, _, err = cts [ "runs"; "get"; "no-such-run" ]
                Expect.equal code 1 "404"
                Expect.stringContains err "no run 'no-such-run'" "named"

                // Uploads: the run's log is one already; the same content again is deduplicated.
                let code, said, err = cts [ "upload"; segment () ]
                Expect.equal code 0 err
                Expect.stringContains said "(already stored)" "deduplicated"
                let uploadId = said.Split(' ')[0]
                let code, listedUploads, err = cts [ "uploads"; "list" ]
                Expect.equal code 0 err
                Expect.stringContains listedUploads uploadId "listed"
                Expect.stringContains listedUploads "default.rlog.zst" "by its name"
                let code, _, err = cts [ "uploads"; "rm"; uploadId ]
                Expect.equal code 0 err
                let code, listedUploads, err = cts [ "--json"; "uploads"; "list" ]
                Expect.equal code 0 err
                let left = JsonDocument.Parse(listedUploads).RootElement.GetProperty("uploads")
                Expect.equal (left.GetArrayLength()) 0 "gone"
                let code, _, _ = cts [ "uploads"; "rm"; uploadId ]
                Expect.equal code 1 "already gone: 404"
                let code, _, err = cts [ "upload"; Path.Combine(out, "nothing-here.rlog") ]
                Expect.equal code 1 "a missing file, before any request"
                Expect.stringContains err "no such file" "says so"

                let code, _, err =
                    Tests.cts [ "--url"; $"http://127.0.0.1:{Tests.closedPort ()}"; "runs"; "list" ]

                Expect.equal code 2 "unreachable"
                Expect.stringContains err "cannot reach" "says so")
        }
    ]
