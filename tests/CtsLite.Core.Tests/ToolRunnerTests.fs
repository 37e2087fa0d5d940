/// The one run path (`ToolRunner`): lookup, validation, file parameters, the output folder,
/// cancellation against the time limit, and the artifact listing every edge relies on.
module CtsLite.Core.Tests.ToolRunnerTests

open System
open System.IO
open System.Security.Cryptography
open System.Threading
open Expecto
open CtsLite.Tools
open CtsLite.Tests

let private defaultLog () =
    Path.Combine(TestEnv.sharedDir (), "data", "rlogs", "synthetic", "default.rlog.zst")

/// A request for a folder that does not exist yet.
let private requestFor (toolId: string) (given: (string * string) list) =
    let dir = Path.Combine(TestEnv.tempDir "runner", "out")

    ToolRunner.request
        toolId
        (ToolInput.Path(defaultLog ()))
        (given |> List.map (fun (k, v) -> k, ParameterInput.Text v))
        dir

/// A stream whose reads block until `release` is set, deaf to any cancellation: a read of a hung
/// network mount, which no token reaches.
type internal BlockingStream(release: ManualResetEventSlim) =
    inherit CtsLite.Logs.ForwardStream()

    override _.Read(_, _, _) =
        release.Wait()
        0

/// signal-export with a DBC whose resolver reads through a `BlockingStream`: the tool's thread
/// blocks where no cancellation reaches it until `release` is set.
let blockedRequest (release: ManualResetEventSlim) (log: ResizeArray<string>) = {
    requestFor "signal-export" [ "dbc", "on-a-hung-mount.dbc"; "signals", "Wheel_Speeds.FL" ] with
        ResolveFile =
            fun value ->
                use stream = new BlockingStream(release)
                stream.ReadByte() |> ignore
                Ok value
        Log = fun _ line -> lock log (fun () -> log.Add line)
}

let all =
    testList "tool runner" [
        test "defaults are written once, in the descriptor; a parameter without one is a bug" {
            match ToolRunner.prepare "cruise-control-analyzer" [] with
            | Ok prepared ->
                Expect.equal (prepared.Parameters.FloatOf "speed_min") 55.0 "the descriptor's default"
                Expect.equal (prepared.Parameters.StrOf "dbc") ToolSupport.SubaruDbc "the built-in DBC"
            | Error e -> failtestf "%A" e

            Expect.throwsT<InvalidOperationException>
                (fun () -> ToolParameters(Map.empty).FloatOf "speed_min" |> ignore)
                "no value and no default"
        }
        test "an unknown tool names the tools there are" {
            match ToolRunner.run (requestFor "no-such-tool" []) with
            | Error(ToolError.UnknownTool(id, known) as e) ->
                Expect.equal id "no-such-tool" "the id"
                Expect.equal known (Catalog.descriptors |> List.map _.Id) "every tool"
                Expect.stringContains (ToolError.describe e) "log-summary" "listed in the text"
            | other -> failtestf "%A" other
        }
        test "bad parameters are all reported and nothing is created" {
            let request =
                requestFor "cruise-control-analyzer" [ "speed_min", "fast"; "nope", "1" ]

            match ToolRunner.run request with
            | Error(ToolError.InvalidParameters errors) ->
                Expect.equal (errors |> List.map _.Parameter |> List.sort) [ "nope"; "speed_min" ] "both named"
                Expect.isFalse (Directory.Exists request.OutputDir) "no output folder"
            | other -> failtestf "%A" other
        }
        test "a file parameter the resolver refuses is an InvalidFile naming the parameter, before the tool runs" {
            let request = {
                requestFor "cruise-control-analyzer" [ "dbc", "missing.dbc" ] with
                    ResolveFile = fun v -> Error $"{v}: not allowed here"
            }

            match ToolRunner.run request with
            | Error(ToolError.InvalidFile(parameter, reason)) ->
                Expect.equal parameter "dbc" "the parameter"
                Expect.equal reason "missing.dbc: not allowed here" "the resolver's reason"
                Expect.isFalse (Directory.Exists request.OutputDir) "no output folder"
            | other -> failtestf "%A" other
        }
        test "built-in files are not sent to the resolver" {
            let asked = ResizeArray<string>()

            let request = {
                requestFor "signal-export" [ "dbc", ToolSupport.SubaruDbc; "signals", "Wheel_Speeds.FL" ] with
                    ResolveFile =
                        fun v ->
                            asked.Add v
                            Error "no files here"
            }

            match ToolRunner.run request with
            | Ok run -> Expect.isNonEmpty run.Artifacts "artifacts"
            | Error e -> failtestf "%A" e

            Expect.isEmpty asked "the resolver was not asked"
        }
        test "a completed run lists every artifact with its real size, SHA-256 and content type" {
            let request = requestFor "log-summary" []

            match ToolRunner.run request with
            | Ok run ->
                Expect.equal run.OutputDir (Path.GetFullPath request.OutputDir) "the folder, created"
                Expect.equal (run.Artifacts |> List.map _.Name) run.Output.Artifacts "in the tool's order"

                for a in run.Artifacts do
                    let bytes = File.ReadAllBytes a.Path
                    Expect.equal a.Size bytes.LongLength $"{a.Name} size"

                    Expect.equal
                        a.Sha256
                        (Convert.ToHexString(SHA256.HashData bytes).ToLowerInvariant())
                        $"{a.Name} sha256"

                    let expected =
                        match Path.GetExtension a.Name with
                        | ".json" -> "application/json"
                        | ".html" -> "text/html; charset=utf-8"
                        | ".csv" -> "text/csv; charset=utf-8"
                        | other -> failtestf "unexpected artifact kind %s" other

                    Expect.equal a.ContentType expected $"{a.Name} content type"
            | Error e -> failtestf "%A" e
        }
        test "the caller's cancellation is Canceled, the time limit is TimedOut" {
            use cancelled = new CancellationTokenSource()
            cancelled.Cancel()

            match
                ToolRunner.run {
                    requestFor "cruise-control-analyzer" [] with
                        Cancellation = cancelled.Token
                        Timeout = Some TimeSpan.Zero
                }
            with
            | Error ToolError.Canceled -> ()
            | other -> failtestf "caller's cancellation: %A" other

            match
                ToolRunner.run {
                    requestFor "cruise-control-analyzer" [] with
                        Timeout = Some TimeSpan.Zero
                }
            with
            | Error(ToolError.TimedOut after as e) ->
                Expect.equal after TimeSpan.Zero "the limit"
                Expect.stringContains (ToolError.describe e) "timed out" "in words"
            | other -> failtestf "time limit: %A" other
        }
        test "files read as one time line give the findings of the route they make up" {
            let route =
                Path.Combine(TestEnv.sharedDir (), "data", "rlogs", "synthetic", "route")

            let name = "5ca1ab1e5ca1ab1e|2025-01-16--07-45-12"
            let segments = [ for n in 0..2 -> Path.Combine(route, $"{name}--{n}", "rlog.zst") ]

            let summary (input: ToolInput) =
                match
                    ToolRunner.run {
                        requestFor "cruise-control-analyzer" [] with
                            Input = input
                    }
                with
                | Ok run ->
                    let doc =
                        Text.Json.JsonDocument.Parse(File.ReadAllText(Path.Combine(run.OutputDir, "summary.json")))

                    [
                        for key in [ "set_presses"; "resume_presses"; "main_presses" ] ->
                            doc.RootElement.GetProperty(key).GetRawText()
                    ]
                | Error e -> failtestf "%A" e

            let files = summary (ToolInput.Files segments)
            Expect.equal files (summary (ToolInput.Path(Path.Combine(route, name)))) "as the route address"
            Expect.notEqual files (summary (ToolInput.Files [ segments[0] ])) "more than the first segment"

            match
                ToolRunner.run {
                    requestFor "log-summary" [] with
                        Input = ToolInput.Files [ segments[0]; "/nonexistent.zst" ]
                }
            with
            | Error(ToolError.InputUnavailable reason) ->
                Expect.stringContains reason "/nonexistent.zst" "names the missing file"
            | other -> failtestf "%A" other
        }
        test "a missing input is InputUnavailable, a non-log InputDamaged naming the file" {
            match
                ToolRunner.run {
                    requestFor "log-summary" [] with
                        Input = ToolInput.Path "/nonexistent/rlog.zst"
                }
            with
            | Error(ToolError.InputUnavailable reason) -> Expect.stringContains reason "/nonexistent" "names it"
            | other -> failtestf "%A" other

            let bad = Path.Combine(TestEnv.tempDir "runner", "notes.rlog")
            File.WriteAllText(bad, "not a log")

            match
                ToolRunner.run {
                    requestFor "log-summary" [] with
                        Input = ToolInput.Path bad
                }
            with
            | Error(ToolError.InputDamaged e) -> Expect.equal e.Source bad "the file"
            | other -> failtestf "%A" other
        }
        test "every log tool fails on an empty file, naming it, instead of completing with nothing" {
            let empty = Path.Combine(TestEnv.tempDir "runner", "empty.rlog.zst")
            File.WriteAllBytes(empty, [||])

            for toolId, parameters in
                [
                    "log-summary", []
                    "rlog-to-csv", []
                    "cruise-control-analyzer", []
                    "signal-export", [ "signals", "Wheel_Speeds.FL"; "dbc", "subaru_global_2017_generated.dbc" ]
                    "can-bitwatch", [ "window_start", "1"; "window_dur", "1" ]
                ] do
                match
                    ToolRunner.run {
                        requestFor toolId parameters with
                            Input = ToolInput.Path empty
                    }
                with
                | Error(ToolError.InputDamaged e) ->
                    Expect.equal (e.Source, e.Reason) (empty, CtsLite.Capnp.DecodeReason.NoEvents) toolId
                | other -> failtestf "%s: %A" toolId other
        }
        test "parameter validation is bounded: values, lists, counts and the problems reported" {
            let tool = ToolRunner.find "rlog-to-csv" |> Result.defaultWith (failwithf "%A")
            let text (v: string) = ParameterInput.Text v

            let problems given =
                match Parameters.validateFor tool given with
                | Error errors -> errors
                | Ok _ -> failtest "accepted"

            match problems [ "window_start", text (String('x', Parameters.MaxStringBytes + 1)) ] with
            | [ e ] ->
                Expect.stringContains e.Detail "longer than 4096 bytes" "a long string"
                Expect.isLessThan e.Detail.Length 200 "the value is not echoed"
            | other -> failtestf "%A" other

            match
                problems [
                    "addresses", ParameterInput.Items [ for i in 0 .. Parameters.MaxListItems -> text $"0x{i:X}" ]
                ]
            with
            | [ e ] -> Expect.stringContains e.Detail "more than 10000 items" "a long list"
            | other -> failtestf "%A" other

            match problems [ for i in 1..60_000 -> $"p{i}", text "1" ] with
            | [ e ] -> Expect.stringContains e.Detail "more than 64 parameters" "one problem for 60,000 parameters"
            | other -> failtestf "%d problems" other.Length

            let unknown = problems [ for i in 1..40 -> $"p{i}", text "1" ]
            Expect.equal unknown.Length (Parameters.MaxErrors + 1) "20 problems and a count of the rest"
            Expect.stringContains (List.last unknown).Detail "20 more problem(s)" "the rest counted"

            Expect.equal
                (unknown |> List.filter (fun e -> e.Detail.Contains "known:") |> List.length)
                1
                "the known names are listed once"
        }
        testCaseTask "a tool blocked in a read no token reaches is left after the grace: Canceled, TimedOut" (fun () -> task {
            use release = new ManualResetEventSlim(false)
            let log = ResizeArray<string>()
            let grace = TimeSpan.FromMilliseconds 300.0

            try
                // Canceled by the caller: answered within the grace, not when the read returns.
                use cancel = new CancellationTokenSource()

                let request = {
                    blockedRequest release log with
                        Cancellation = cancel.Token
                }

                let prepared =
                    Result.defaultWith
                        (fun e -> failtestf "%A" e)
                        (ToolRunner.prepare request.ToolId request.Parameters)

                let clock = Diagnostics.Stopwatch.StartNew()
                let running = ToolRunner.executeAsync grace request prepared
                do! Tasks.Task.Delay 200
                Expect.isFalse running.IsCompleted "blocked before the cancel"
                cancel.Cancel()
                let! canceled = running.WaitAsync(TimeSpan.FromSeconds 20.0)
                Expect.equal canceled (Error ToolError.Canceled) "canceled"
                Expect.isLessThan clock.Elapsed.TotalSeconds 20.0 "without the read returning"
                Expect.exists log (fun l -> l.Contains "did not stop within 0.3 s") "says it was left"

                // Out of time: TimedOut, the caller's token untouched.
                let request = {
                    blockedRequest release log with
                        Timeout = Some(TimeSpan.FromMilliseconds 200.0)
                }

                let! timedOut =
                    (ToolRunner.runAsync grace request).WaitAsync(TimeSpan.FromSeconds 20.0)

                Expect.equal timedOut (Error(ToolError.TimedOut(TimeSpan.FromMilliseconds 200.0))) "timed out"
            finally
                // The left threads end as their reads return.
                release.Set()
        })
        testCaseTask "executeAsync answers as execute does when the tool stops by itself" (fun () -> task {
            let request = requestFor "log-summary" []
            let! asynchronous = ToolRunner.runAsync ToolRunner.StopGrace request

            match asynchronous, ToolRunner.run (requestFor "log-summary" []) with
            | Ok a, Ok b ->
                Expect.equal a.Output.Summary b.Output.Summary "the same summary"
                Expect.equal (a.Artifacts |> List.map _.Name) (b.Artifacts |> List.map _.Name) "the same artifacts"
            | other -> failtestf "%A" other

            use cancelled = new CancellationTokenSource()
            cancelled.Cancel()

            let! early =
                ToolRunner.runAsync ToolRunner.StopGrace {
                    requestFor "log-summary" [] with
                        Cancellation = cancelled.Token
                }

            Expect.equal early (Error ToolError.Canceled) "a tool that stops on the token is not left"
        })
    ]
