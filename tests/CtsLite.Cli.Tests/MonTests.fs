/// `cts mon run`: a monitor here, over a replayed log, as a user runs it.
module CtsLite.Cli.Tests.MonTests

open System.Diagnostics
open System.IO
open System.Text.Json
open Expecto
open CtsLite.Tests

let private synthetic (parts: string list) =
    Path.Combine(Array.ofList (TestEnv.sharedDir () :: "data" :: "rlogs" :: "synthetic" :: parts))

// The bridge's ports are fixed by the services' names: every test that binds them runs alone.
let all =
    testSequencedGroup "zmq bridge ports"
    <| testList "cts mon" [
        test "mon run --final prints the end state: frames per src as log info counts them" {
            let log = synthetic [ "default.rlog.zst" ]

            let code, out, err =
                Tests.cts [ "mon"; "run"; "can_bus_check"; "--replay"; log; "--speed"; "0"; "--final" ]

            Expect.equal code 0 err
            let lines = out.Split('\n', System.StringSplitOptions.RemoveEmptyEntries)
            Expect.equal lines.Length 1 "only the end message"
            let message = JsonDocument.Parse(lines[0]).RootElement
            Expect.equal (message.GetProperty("type").GetString()) "end" "type"

            let perSrc =
                message.GetProperty("data").GetProperty("addresses").EnumerateArray()
                |> Seq.filter (fun a -> a.GetProperty("bus").ValueKind = JsonValueKind.Number)
                |> Seq.groupBy (fun a -> string (a.GetProperty("bus").GetInt32()))
                |> Seq.map (fun (bus, entries) ->
                    bus, entries |> Seq.sumBy (fun a -> a.GetProperty("count").GetInt64()))
                |> Map.ofSeq

            let info = LogTests.logInfo log

            let expected =
                info.GetProperty("can_frames_per_src").EnumerateObject()
                |> Seq.map (fun p -> p.Name, p.Value.GetInt64())
                |> Map.ofSeq

            Expect.equal perSrc expected "frames per src"
        }
        test "mon run streams one JSON message per line, a snapshot first" {
            let code, out, err =
                Tests.cts [
                    "mon"
                    "run"
                    "panda_state"
                    "--replay"
                    synthetic [ "default.rlog.zst" ]
                    "--speed"
                    "0"
                    "--update-ms"
                    "1000"
                ]

            Expect.equal code 0 err
            let lines = out.Split('\n', System.StringSplitOptions.RemoveEmptyEntries)

            let types =
                lines
                |> Array.map (fun l -> JsonDocument.Parse(l).RootElement.GetProperty("type").GetString())

            Expect.equal types[0] "snapshot" "first"
            Expect.equal (Array.last types) "end" "last"
            // One update a second of log time: the pandaStates events span 59.9 s.
            Expect.equal (types |> Array.filter ((=) "update")).Length 59 "updates in log time"
        }
        test "SIGTERM ends a replay like Ctrl+C: the state so far as its last line" {
            let info =
                ProcessStartInfo(
                    "dotnet",
                    [
                        Path.Combine(TestEnv.projectOutput "CtsLite.Cli", "cts.dll")
                        "mon"
                        "run"
                        "can_bus_check"
                        "--replay"
                        synthetic [ "default.rlog.zst" ]
                    ],
                    RedirectStandardOutput = true,
                    RedirectStandardError = true,
                    UseShellExecute = false
                )

            use proc = Process.Start info
            let output = proc.StandardOutput.ReadToEndAsync()
            let errors = proc.StandardError.ReadToEndAsync()
            // At speed 1 the 60 s segment is far from its end when the signal comes.
            System.Threading.Thread.Sleep 3000
            use kill = Process.Start("kill", [ "-TERM"; string proc.Id ])
            kill.WaitForExit()
            Expect.isTrue (proc.WaitForExit 10_000) "exits"
            Expect.equal proc.ExitCode 0 errors.Result
            Expect.stringContains errors.Result "stopped" "says so"

            let lines =
                output.Result.Split('\n', System.StringSplitOptions.RemoveEmptyEntries)
                |> Array.map (fun l -> JsonDocument.Parse(l).RootElement)

            let last = Array.last lines
            Expect.equal (last.GetProperty("type").GetString()) "end" "the final state"

            Expect.equal
                (lines |> Array.map (fun l -> l.GetProperty("seq").GetInt64()))
                [| 1L .. int64 lines.Length |]
                "no gap"

            let data = last.GetProperty("data")
            Expect.isGreaterThan (data.GetProperty("frames").GetInt64()) 0L "frames read"
            Expect.isLessThan (data.GetProperty("frames").GetInt64()) 197393L "not all of them"
        }
        test "mon run --zmq watches a live bridge for --duration seconds" {
            // A publisher of the log's pandaStates events on loopback, at the service's port.
            let file = synthetic [ "default.rlog.zst" ]
            let schema = CtsLite.Capnp.Schema.cereal ()

            let layout = CtsLite.Logs.EventLayout.ofSchema schema |> Result.defaultWith failwith

            let raw = new MemoryStream()

            do
                use z = new ZstdSharp.DecompressionStream(File.OpenRead file)
                z.CopyTo raw

            let bytes = raw.ToArray()

            let pandaStates = [
                use reader =
                    CtsLite.Logs.LogReader.OfStream(
                        new MemoryStream(bytes),
                        file,
                        CtsLite.Capnp.ReaderOptions.Default,
                        CtsLite.Logs.Compression.Raw
                    )

                let mutable at = 0L

                while reader.Next() do
                    let which = CtsLite.Logs.Event.which reader.Message layout reader.Event

                    if CtsLite.Logs.Event.whichName layout which = "pandaStates" then
                        yield bytes[int at .. int reader.Position - 1]

                    at <- reader.Position
            ]

            use pub = new NetMQ.Sockets.PublisherSocket()
            pub.Options.SendHighWatermark <- 0
            let port = CtsLite.Monitors.Bridge.port "pandaStates"
            pub.Bind $"tcp://127.0.0.1:{port}"

            let recording = Path.Combine(TestEnv.tempDir "mon", "drive.rlog.zst")

            let run =
                System.Threading.Tasks.Task.Run(fun () ->
                    Tests.cts [
                        "mon"
                        "run"
                        "panda_state"
                        "--zmq"
                        "127.0.0.1"
                        "--duration"
                        "3"
                        "--final"
                        "--record"
                        recording
                    ])

            for m in pandaStates |> List.take 200 do
                NetMQ.OutgoingSocketExtensions.SendFrame(pub, m)
                System.Threading.Thread.Sleep 10

            let code, out, err = run.Result
            Expect.equal code 0 err
            let message = JsonDocument.Parse(out.Trim()).RootElement
            Expect.equal (message.GetProperty("type").GetString()) "end" "the final state"
            let data = message.GetProperty("data")
            // ZMQ's subscriber joins late: the first few may be missed, never counted twice.
            let updates = data.GetProperty("updates").GetInt64()
            Expect.isTrue (updates > 0L && updates <= 200L) $"{updates} updates"
            let panda = data.GetProperty("pandas")[0]
            Expect.equal (panda.GetProperty("safety_model").GetString()) "subaru" "the planted model"

            // The recording is a log like any other: exactly the events the monitor was given.
            Expect.stringContains err $"recorded {recording}" "named"
            let info = LogTests.logInfo recording

            let recorded =
                info.GetProperty("event_counts").GetProperty("pandaStates").GetInt64()

            Expect.equal recorded updates "every pandaStates event received, once"
        }
        test "mon run names what is wrong: the monitor, a parameter, the speed, the input" {
            let log = synthetic [ "default.rlog.zst" ]
            let code, _, err = Tests.cts [ "mon"; "run"; "can_bus_check" ]
            Expect.equal code 1 "no source"
            Expect.stringContains err "--replay" "named"
            let code, _, err = Tests.cts [ "mon"; "run"; "can_bus"; "--replay"; log ]
            Expect.equal code 1 "unknown monitor"
            Expect.stringContains err "can_bus_check" "the known ones listed"

            let code, _, err =
                Tests.cts [
                    "mon"
                    "run"
                    "can_bus_check"
                    "--replay"
                    log
                    "-p"
                    "addresses=0x13A,wheel"
                ]

            Expect.equal code 1 "bad parameter"
            Expect.stringContains err "addresses" "named"

            let code, _, err =
                Tests.cts [ "mon"; "run"; "can_bus_check"; "--replay"; log; "--speed"; "-1" ]

            Expect.equal code 1 "bad speed"
            Expect.stringContains err "--speed" "named"

            let code, _, err =
                Tests.cts [
                    "mon"
                    "run"
                    "can_bus_check"
                    "--replay"
                    "/nonexistent/rlog.zst"
                    "--speed"
                    "0"
                ]

            Expect.equal code 1 "missing input"
            Expect.stringContains err "/nonexistent/rlog.zst" "the input named"

            let code, _, err =
                Tests.cts [ "mon"; "run"; "can_bus_check"; "--replay"; log; "--record"; "x.rlog.zst" ]

            Expect.equal code 1 "a replay is not recorded"
            Expect.stringContains err "--zmq" "says what records"

            let code, _, err =
                Tests.cts [ "mon"; "run"; "can_bus_check"; "--zmq"; "127.0.0.1"; "--record"; log ]

            Expect.equal code 1 "never overwrites"
            Expect.stringContains err "exists" "says so"
        }
        test "mon start, ls, stream and stop drive a session on the service" {
            Tests.withService (fun url ->
                let log = synthetic [ "default.rlog.zst" ]

                let code, out, err =
                    Tests.cts [ "--url"; url; "mon"; "start"; "panda_state"; "--replay"; log; "--speed"; "0" ]

                Expect.equal code 0 err
                let id = out.Trim()
                Expect.isMatch id "^[0-9a-f-]{36}$" "the session id alone on standard output"
                Expect.stringContains err $"cts mon stream {id}" "says how to watch it"

                // Standard output is not a terminal here: one JSON message per line.
                let code, out, err = Tests.cts [ "--url"; url; "mon"; "stream"; id ]
                Expect.equal code 0 err

                let lines =
                    out.Split('\n', System.StringSplitOptions.RemoveEmptyEntries)
                    |> Array.map (fun l -> JsonDocument.Parse(l).RootElement)

                let types = lines |> Array.map (fun l -> l.GetProperty("type").GetString())
                Expect.equal types[0] "snapshot" "a snapshot first"
                Expect.equal (Array.last types) "end" "the end last"

                let final = (Array.last lines).GetProperty("data").GetProperty("pandas")[0]
                Expect.equal (final.GetProperty("safety_model").GetString()) "subaru" "the planted safety model"

                let code, out, err = Tests.cts [ "--url"; url; "mon"; "ls" ]
                Expect.equal code 0 err
                Expect.stringContains out id "listed"
                Expect.stringContains out "panda_state" "with its monitor"
                Expect.stringContains out "ended" "and its state"

                let code, out, err =
                    Tests.cts [ "--url"; url; "--json"; "mon"; "ls"; "--status"; "ended" ]

                Expect.equal code 0 err
                Expect.equal (JsonDocument.Parse(out).RootElement.GetProperty("sessions").GetArrayLength()) 1 "--json"

                let code, out, err = Tests.cts [ "--url"; url; "mon"; "stop"; id ]
                Expect.equal code 0 err
                Expect.stringContains out "ended: the replay reached the end of its log" "how it ended"

                let code, _, err =
                    Tests.cts [ "--url"; url; "mon"; "start"; "no_such"; "--zmq"; "127.0.0.1" ]

                Expect.equal code 1 "the service refuses (404)"
                Expect.stringContains err "no monitor 'no_such'" "names it"

                let code, _, err = Tests.cts [ "--url"; url; "mon"; "stream"; "no-such-session" ]
                Expect.equal code 1 "no such session (404)"
                Expect.stringContains err "no monitor session" "says so"

                let code, _, err =
                    Tests.cts [ "--url"; url; "mon"; "start"; "panda_state"; "--replay"; log; "--record" ]

                Expect.equal code 1 "refused before any request"
                Expect.stringContains err "--record" "names it")
        }
        test "SIGTERM ends mon stream like Ctrl+C: every line written is whole, the session goes on" {
            Tests.withService (fun url ->
                let code, out, err =
                    Tests.cts [
                        "--url"
                        url
                        "mon"
                        "start"
                        "can_bus_check"
                        "--replay"
                        synthetic [ "default.rlog.zst" ]
                    ]

                Expect.equal code 0 err
                let id = out.Trim()

                let info =
                    ProcessStartInfo(
                        "dotnet",
                        [
                            Path.Combine(TestEnv.projectOutput "CtsLite.Cli", "cts.dll")
                            "--url"
                            url
                            "mon"
                            "stream"
                            id
                            "--ndjson"
                        ],
                        RedirectStandardOutput = true,
                        RedirectStandardError = true,
                        UseShellExecute = false
                    )

                use proc = Process.Start info
                let output = proc.StandardOutput.ReadToEndAsync()
                let errors = proc.StandardError.ReadToEndAsync()
                System.Threading.Thread.Sleep 3000
                use kill = Process.Start("kill", [ "-TERM"; string proc.Id ])
                kill.WaitForExit()
                Expect.isTrue (proc.WaitForExit 10_000) "exits"
                Expect.equal proc.ExitCode 0 errors.Result

                let lines =
                    output.Result.Split('\n', System.StringSplitOptions.RemoveEmptyEntries)
                    |> Array.map (fun l -> JsonDocument.Parse(l).RootElement)

                Expect.equal (lines[0].GetProperty("type").GetString()) "snapshot" "a snapshot first"
                Expect.isGreaterThan lines.Length 10 "updates as they came"

                let code, out, err = Tests.cts [ "--url"; url; "--json"; "mon"; "stop"; id ]
                Expect.equal code 0 err
                let stopped = JsonDocument.Parse(out).RootElement
                Expect.equal (stopped.GetProperty("status").GetString()) "stopped" "the session ran on until stopped"
                Expect.equal (stopped.GetProperty("reason").GetString()) "stopped on request" "by the stop")
        }
    ]
