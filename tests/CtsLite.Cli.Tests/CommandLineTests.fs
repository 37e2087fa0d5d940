/// The command line itself: options, help, machine and human output, the inputs of `cts run`.
module CtsLite.Cli.Tests.CommandLineTests

open System
open System.IO
open System.Text.Json
open Expecto
open CtsLite
open CtsLite.Cli
open CtsLite.Tests

let private cts = Tests.cts

let private segment () =
    Path.Combine(TestEnv.sharedDir (), "data", "rlogs", "synthetic", "default.rlog.zst")

let private routeDir () =
    Path.Combine(TestEnv.sharedDir (), "data", "rlogs", "synthetic", "route")

/// The three segment logs of the synthetic route, in order.
let private routeFiles () = [
    for i in 0..2 -> Path.Combine(routeDir (), $"5ca1ab1e5ca1ab1e|2025-01-16--07-45-12--{i}", "rlog.zst")
]

/// Events of the three segments as one time line (as the route's own test counts them).
[<Literal>]
let private RouteEvents = 215833L

let private eventsIn (folder: string) =
    JsonDocument
        .Parse(File.ReadAllText(Path.Combine(folder, "log_summary.json")))
        .RootElement.GetProperty("events")
        .GetInt64()

let all =
    testList "command line" [
        test "an unknown option is refused by name, never taken as an input; a missing file says so" {
            let code, _, err = cts [ "log"; "info"; segment (); "--bogus" ]
            Expect.equal code ExitCode.ClientError "exit 1"
            Expect.stringContains err "cts log info has no option --bogus" "names the option and the command"

            let code, _, err =
                cts [ "run"; "log-summary"; segment (); "--local"; "--bogus"; "x" ]

            Expect.equal code ExitCode.ClientError "exit 1"
            Expect.stringContains err "cts run has no option --bogus" "in cts run too"

            let code, _, err = cts [ "log"; "info"; "/no/such/file.rlog.zst" ]
            Expect.equal code ExitCode.ClientError "exit 1"
            Expect.stringContains err "/no/such/file.rlog.zst: no such file or folder" "not 'not a log file'"

            // An option's value that looks like a subcommand is still its value.
            let dir = TestEnv.tempDir "cli-name"

            let code, _, err =
                cts [
                    "run"
                    "--local"
                    "log-summary"
                    segment ()
                    "--name"
                    "info"
                    "--out-dir"
                    dir
                ]

            Expect.equal code 0 err
        }
        test "every command has its own help; local commands' help lists no service options" {
            for command in
                [
                    [ "tools" ]
                    [ "ping" ]
                    [ "cap" ]
                    [ "version" ]
                    [ "log"; "info" ]
                    [ "run" ]
                ] do
                let code, out, _ = cts (command @ [ "--help" ])
                Expect.equal code 0 "help exits 0"
                let name = String.Join(" ", command)
                // `cap` is the alias of `capabilities`.
                let shown = if name = "cap" then "capabilities" else name
                Expect.stringContains out $"USAGE: cts {shown}" $"{name} --help is its own"

            for local in [ [ "log"; "info" ]; [ "dbc"; "check" ]; [ "tools" ] ] do
                let _, out, _ = cts (local @ [ "--help" ])
                Expect.isFalse (out.Contains "--url") $"{local} --help lists no --url"
                Expect.isFalse (out.Contains "--timeout") $"{local} --help lists no --timeout"

            let _, out, _ = cts [ "--help" ]
            Expect.stringContains out "--url" "the global options are in the top-level help"
            let _, out, _ = cts [ "run"; "--help" ]
            Expect.stringContains out "--param, -p <key=value>" "-p shows its form"
        }
        test "--version and version --client print the package version without a service" {
            let code, out, _ = cts [ "--version" ]
            Expect.equal code 0 "exit 0"
            Expect.equal (out.Trim()) Product.version "cts --version"

            let code, out, err =
                cts [ "version"; "--client"; "--url"; $"http://127.0.0.1:{Tests.closedPort ()}" ]

            Expect.equal code 0 err
            Expect.equal (out.Trim()) Product.version "version --client"
            Expect.equal err "" "the service is not asked"
        }
        test "log info prints tables for people and the document with --json" {
            let code, human, err = cts [ "log"; "info"; segment () ]
            Expect.equal code 0 err
            Expect.isFalse (human.Contains "{") "no JSON for people"
            Expect.isMatch human @"(?m)^\d+ events over " "the total and the span"
            Expect.isMatch human @"(?m)^carState +\d+$" "events per service, aligned"
            Expect.isMatch human @"(?m)^CAN SRC +FRAMES +ADDRESSES$" "frames per bus"
            Expect.isFalse (human.Contains "\u001b") "no control characters off a terminal"

            let code, json, err = cts [ "log"; "info"; segment (); "--json" ]
            Expect.equal code 0 err
            let doc = JsonDocument.Parse(json).RootElement
            let events = doc.GetProperty("events").GetInt64()
            Expect.stringContains human $"{events} events" "the same count both ways"
        }
        test "dbc check and decode take a built-in DBC by name; --json gives errors with line and column" {
            let code, out, err =
                cts [ "dbc"; "check"; "subaru_global_2017_generated.dbc"; "--json" ]

            Expect.equal code 0 err
            let file = JsonDocument.Parse(out).RootElement.GetProperty("files")[0]
            Expect.isTrue (file.GetProperty("ok").GetBoolean()) "clean"
            Expect.isGreaterThan (file.GetProperty("messages").GetInt32()) 10 "its messages"

            let dir = TestEnv.tempDir "dbc-json"
            let bad = Path.Combine(dir, "bad.dbc")
            File.WriteAllText(bad, "VERSION \"\"\n\nBO_ 12 X: 8 Vector__XXX\n SG_ Y : seven|8@1+ (1,0) [0|0] \"\" X\n")
            let code, out, _ = cts [ "dbc"; "check"; bad; "--json" ]
            Expect.equal code ExitCode.ClientError "exit 1"
            let file = JsonDocument.Parse(out).RootElement.GetProperty("files")[0]
            Expect.isFalse (file.GetProperty("ok").GetBoolean()) "not clean"
            let error = file.GetProperty("errors")[0]
            Expect.equal (error.GetProperty("line").GetInt32()) 4 "the signal's line"
            Expect.isGreaterThan (error.GetProperty("column").GetInt32()) 0 "a column"

            let code, out, err =
                cts [
                    "dbc"
                    "decode"
                    "subaru_global_2017_generated.dbc"
                    segment ()
                    "--signal"
                    "Wheel_Speeds.FL"
                ]

            Expect.equal code 0 err

            Expect.isGreaterThan
                (out.Split('\n')
                 |> Array.filter (fun l -> l.Contains "Wheel_Speeds,FL,")
                 |> Array.length)
                100
                "decoded rows"
        }
        test "cts run --local reads several log files as one route, in order" {
            let dir = TestEnv.tempDir "local-several"

            let code, _, err =
                cts ([ "run"; "--local"; "log-summary" ] @ routeFiles () @ [ "--out-dir"; dir ])

            Expect.equal code 0 err
            Expect.equal (eventsIn dir) RouteEvents "three segments, one time line"

            let code, _, err = cts [ "run"; "--local"; "log-summary"; "--upload"; segment () ]
            Expect.equal code ExitCode.ClientError "exit 1"
            Expect.stringContains err "--local reads files here" "says why"

            let code, _, err = cts [ "run"; "log-summary"; segment (); "--upload-id"; "x" ]
            Expect.equal code ExitCode.ClientError "exit 1"
            Expect.stringContains err "one kind of input" "one kind of input"
        }
        test "cts run on the service: --upload, --upload-id, --path; parameters typed before anything is sent" {
            Tests.withServiceConfig (fun c -> { c with InputRoots = [ routeDir () ] }) (fun url ->
                // The service options after the subcommand, as users write them.
                let cts (args: string list) = cts (args @ [ "--url"; url ])
                let out = TestEnv.tempDir "run-inputs"

                let code, _, err =
                    cts (
                        [ "run"; "log-summary"; "--out-dir"; out ]
                        @ (routeFiles () |> List.collect (fun f -> [ "--upload"; f ]))
                    )

                Expect.equal code 0 err
                Expect.equal (eventsIn out) RouteEvents "--upload three times: one route"

                let ids = [
                    for f in routeFiles () ->
                        let code, said, err = cts [ "--json"; "upload"; f ]
                        Expect.equal code 0 err
                        JsonDocument.Parse(said).RootElement.GetProperty("upload_id").GetString()
                ]

                let code, _, err =
                    cts (
                        [ "run"; "log-summary"; "--force"; "--out-dir"; out ]
                        @ (ids |> List.collect (fun id -> [ "--upload-id"; id ]))
                    )

                Expect.equal code 0 err
                Expect.equal (eventsIn out) RouteEvents "--upload-id three times: one route"

                let code, _, err =
                    cts [
                        "run"
                        "log-summary"
                        "--force"
                        "--out-dir"
                        out
                        "--path"
                        "5ca1ab1e5ca1ab1e|2025-01-16--07-45-12"
                    ]

                Expect.equal code 0 err
                Expect.equal (eventsIn out) RouteEvents "--path: the route under the input roots"

                let _, before, _ = cts [ "--json"; "runs"; "list" ]
                let _, uploadsBefore, _ = cts [ "--json"; "uploads"; "list" ]

                let code, _, err =
                    cts [ "run"; "cruise-control-analyzer"; segment (); "-p"; "speed_min=fast" ]

                Expect.equal code ExitCode.ClientError "a bad parameter exits 1, as it does locally"
                Expect.stringContains err "parameter speed_min" "names the parameter"

                let code, _, err =
                    cts [ "run"; "cruise-control-analyzer"; segment (); "-p"; "no_such=1" ]

                Expect.equal code ExitCode.ClientError "an unknown parameter exits 1"
                Expect.stringContains err "no_such" "names it"

                let code, _, err = cts [ "run"; "no-such-tool"; segment () ]
                Expect.equal code ExitCode.ClientError "an unknown tool exits 1"
                Expect.stringContains err "has no tool 'no-such-tool'" "names it"
                Expect.stringContains err "log-summary" "and lists the tools"

                let _, after, _ = cts [ "--json"; "runs"; "list" ]
                let _, uploadsAfter, _ = cts [ "--json"; "uploads"; "list" ]
                Expect.equal after before "no run was created"
                Expect.equal uploadsAfter uploadsBefore "nothing was uploaded")
        }
        test "the service keeps the names users gave: a run's input, its report; a DBC goes with its imports" {
            Tests.withService (fun url ->
                let cts (args: string list) = cts (args @ [ "--url"; url ])
                let out = TestEnv.tempDir "run-names"
                let route = Path.Combine(routeDir (), "5ca1ab1e5ca1ab1e|2025-01-16--07-45-12")

                let code, _, err = cts [ "run"; "log-summary"; route; "--out-dir"; out ]
                Expect.equal code 0 err
                Expect.equal (eventsIn out) RouteEvents "the route's logs went up as one input"

                let names = [ for i in 0..2 -> $"5ca1ab1e5ca1ab1e|2025-01-16--07-45-12--{i}.rlog.zst" ]

                let code, listed, err = cts [ "--json"; "runs"; "list" ]
                Expect.equal code 0 err
                let run = JsonDocument.Parse(listed).RootElement.GetProperty("runs")[0]
                let input = run.GetProperty "input"
                Expect.equal (input.GetProperty("type").GetString()) "uploads" "three uploads"
                Expect.equal (input.GetProperty("value").GetArrayLength()) 3 "their ids"

                Expect.equal
                    [ for n in input.GetProperty("filenames").EnumerateArray() -> n.GetString() ]
                    names
                    "each by its segment's name, in order"

                let report = File.ReadAllText(Path.Combine(out, "log_summary.html"))

                for name in names do
                    Expect.stringContains report name "the report names each log as the user knows it"

                Expect.isFalse (report.Contains "upload ") "and no upload id stands in for a name"

                let code, human, err = cts [ "runs"; "list" ]
                Expect.equal code 0 err
                Expect.stringContains human $"{names[0]} +2" "runs list shows the input"

                // toyota_nodsu_pt.dbc holds no messages of its own: WHEEL_SPEEDS is in a file it
                // imports, which the service has not got unless the CLI sends it along.
                let dbc =
                    Path.Combine(
                        TestEnv.sharedDir (),
                        "reference",
                        "opendbc",
                        "generator",
                        "toyota",
                        "toyota_nodsu_pt.dbc"
                    )

                let rav4 =
                    Path.Combine(
                        TestEnv.sharedDir (),
                        "data",
                        "rlogs",
                        "derived",
                        "comma2k19_rav4_b0c9d2329ad1606b_2018-08-02--08-34-47--40.rlog.zst"
                    )

                let out = TestEnv.tempDir "run-dbc-imports"

                let code, _, err =
                    cts [
                        "run"
                        "signal-export"
                        rav4
                        "-p"
                        $"dbc={dbc}"
                        "-p"
                        "signals=WHEEL_SPEEDS.WHEEL_SPEED_FL"
                        "--out-dir"
                        out
                    ]

                Expect.equal code 0 err

                let speeds =
                    File.ReadAllLines(Path.Combine(out, "signals.csv"))
                    |> Array.skip 1
                    |> Array.choose (fun line ->
                        match Double.TryParse(line.Split(',')[2], Globalization.CultureInfo.InvariantCulture) with
                        | true, v -> Some v
                        | false, _ -> None)

                Expect.isGreaterThan speeds.Length 500 "the imported message decoded on the service"
                Expect.isTrue (speeds |> Array.exists (fun v -> v > 20.0)) "as wheel speeds in km/h"

                let code, uploads, err = cts [ "--json"; "uploads"; "list" ]
                Expect.equal code 0 err

                Expect.contains
                    [
                        for u in JsonDocument.Parse(uploads).RootElement.GetProperty("uploads").EnumerateArray() ->
                            u.GetProperty("filename").GetString()
                    ]
                    "toyota_nodsu_pt.dbc"
                    "the DBC went up under its own name"

                // A DBC with an error is refused here, with where, and nothing is sent.
                let broken = Path.Combine(TestEnv.tempDir "broken-dbc", "broken.dbc")
                File.WriteAllText(broken, "VERSION \"\"\nBO_ x Broken: 8 XXX\n")

                let code, _, err =
                    cts [
                        "run"
                        "signal-export"
                        rav4
                        "-p"
                        $"dbc={broken}"
                        "-p"
                        "signals=Broken.X"
                    ]

                Expect.equal code ExitCode.ClientError "exit 1"
                Expect.stringContains err "broken.dbc:2:5" "the error's place"
                let code, after, _ = cts [ "--json"; "uploads"; "list" ]
                Expect.equal code 0 "listed"
                Expect.equal after uploads "nothing was uploaded")
        }
        test "completion: scripts for bash, zsh and fish; words from the commands and the catalog" {
            let words (line: string list) =
                let code, out, err = cts (Completion.Command :: line)
                Expect.equal code 0 err
                out.Split('\n', StringSplitOptions.RemoveEmptyEntries) |> List.ofArray

            Expect.containsAll (words [ "" ]) [ "run"; "runs"; "log"; "mon"; "completion" ] "commands"
            Expect.equal (words [ "ru" ]) [ "run"; "runs" ] "by prefix"

            Expect.containsAll
                (words [ "run"; "" ])
                (CtsLite.Tools.Catalog.descriptors |> List.map _.Id)
                "tool ids after run"

            Expect.containsAll (words [ "run"; "--" ]) [ "--out-dir"; "--follow"; "--url"; "--json" ] "its options"

            Expect.containsAll
                (words [ "--url"; "http://x"; "run"; "can-bitwatch"; "x.rlog"; "-p"; "w" ])
                [ "watch="; "watch_file="; "window_start="; "window_dur=" ]
                "parameter names of the tool given, past a global option's value"

            Expect.containsAll (words [ "mon"; "run"; "" ]) [ "can_bus_check"; "panda_state" ] "monitor ids"
            Expect.containsAll (words [ "log"; "info"; "--" ]) [ "--strict"; "--json" ] "inherited options"
            Expect.equal (words [ "runs"; "list"; "--status"; "c" ]) [ "completed"; "canceled" ] "values"
            Expect.isEmpty (words [ "log"; "info"; "" ]) "a file: the shell offers file names"

            for shell in [ "bash"; "zsh"; "fish" ] do
                let code, script, err = cts [ "completion"; shell ]
                Expect.equal code 0 err
                Expect.stringContains script "cts __complete" $"{shell}: asks cts for the words"

            // The bash script, sourced in a real bash, with this cts on the PATH.
            let code, script, _ = cts [ "completion"; "bash" ]
            Expect.equal code 0 "bash script"
            let dir = TestEnv.tempDir "completion"
            File.WriteAllText(Path.Combine(dir, "cts.bash"), script)

            let exe = Tests.ctsExe ()
            File.WriteAllText(Path.Combine(dir, "cts"), $"#!/bin/sh\nexec \"{exe}\" \"$@\"\n")
            File.SetUnixFileMode(Path.Combine(dir, "cts"), enum<UnixFileMode> 0o755)

            let psi =
                Diagnostics.ProcessStartInfo(
                    "bash",
                    [
                        "-c"
                        "source cts.bash; COMP_WORDS=(cts run log-s); COMP_CWORD=2; _cts; printf '%s\\n' \"${COMPREPLY[@]}\""
                    ],
                    WorkingDirectory = dir,
                    RedirectStandardOutput = true,
                    RedirectStandardError = true
                )

            psi.Environment["PATH"] <- dir + ":" + Environment.GetEnvironmentVariable "PATH"
            use bash = Diagnostics.Process.Start psi
            let said = bash.StandardOutput.ReadToEnd()
            let err = bash.StandardError.ReadToEnd()
            bash.WaitForExit()
            Expect.equal (said.Trim()) "log-summary" $"bash completes the tool id ({err})"
        }
        test "ping --wait waits for a service that is starting" {
            let port = Tests.closedPort ()
            use started = new Threading.ManualResetEventSlim()
            use finished = new Threading.ManualResetEventSlim()

            let server =
                Threading.Tasks.Task.Run(fun () ->
                    Threading.Thread.Sleep 1500

                    Tests.withServiceConfig (fun c -> { c with ApiPort = port }) (fun _ ->
                        started.Set()
                        finished.Wait(TimeSpan.FromSeconds 60.0) |> ignore))

            let code, out, err =
                cts [ "ping"; "--wait"; "30"; "--url"; $"http://127.0.0.1:{port}" ]

            finished.Set()
            server.Wait()
            Expect.isTrue started.IsSet "the service started while ping waited"
            Expect.equal code 0 err
            Expect.stringContains out "is healthy" "and answered"
        }
    ]
