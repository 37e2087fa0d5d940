/// The live bridge source against a test publisher that speaks openpilot's protocol: one PUB
/// socket per service at the port the name gives, one Event a message, on loopback.
module CtsLite.Core.Tests.BridgeTests

open System
open System.Collections.Concurrent
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open System.Threading
open System.Threading.Tasks
open Expecto
open NetMQ
open NetMQ.Sockets
open CtsLite.Capnp
open CtsLite.Logs
open CtsLite.Monitors
open CtsLite.Tests
open CtsLite.Tests.TestBridge
open CtsLite.Tools

let private synthetic (parts: string list) =
    Path.Combine(Array.ofList (TestEnv.sharedDir () :: "data" :: "rlogs" :: "synthetic" :: parts))

let private schema = Schema.cereal ()

let private layout = EventLayout.ofSchema schema |> Result.defaultWith failwith

// The bridge's ports are fixed by the services' names: every test that binds them runs alone.
let all =
    testSequencedGroup "zmq bridge ports"
    <| testList "Bridge" [
        test "a host that is not one is refused before any socket" {
            Expect.isError (Bridge.resolve "no such host") "spaces"
            Expect.isError (Bridge.resolve "1.2.3.4:5") "a port"
            Expect.isError (Bridge.resolve "nosuchhost.invalid") "does not resolve"
            Expect.equal (Bridge.resolve "127.0.0.1") (Ok "127.0.0.1") "IPv4"
            Expect.equal (Bridge.resolve "::1") (Ok "[::1]") "IPv6"
        }
        test "ports follow openpilot's formula" {
            Expect.equal
                ([ "can"; "sendcan"; "pandaStates"; "carState" ] |> List.map Bridge.port)
                [ 62300; 50650; 50420; 9041 ]
                "FNV-1a 64"
        }
        test
            "a live bridge: every frame counted once, foreign and corrupt messages counted, silence and recovery reported" {
            let events = messagesOf (synthetic [ "default.rlog.zst" ])
            let can = events |> List.filter (fun (s, _) -> s = "can") |> List.map snd
            let foreign = events |> List.find (fun (s, _) -> s = "carState") |> snd
            let monitor = CtsLite.Monitors.Catalog.tryFind "can_bus_check" |> Option.get

            let parameters =
                CtsLite.Monitors.Catalog.validate monitor []
                |> Result.defaultWith (failtestf "%A")

            let state =
                monitor.Start {
                    Parameters = parameters
                    ResolveFile = Ok
                    Schema = schema
                    Layout = layout
                }
                |> Result.defaultWith (failtestf "%A")

            let messages = ConcurrentQueue<MonitorMessage>()
            use cancel = new CancellationTokenSource()
            let recording = Path.Combine(TestEnv.tempDir "bridge", "live.rlog.zst")
            let closed = ConcurrentQueue<string>()

            let options = {
                UpdateMs = 50
                SilentAfter = TimeSpan.FromSeconds 1.0
                Duration = Some(TimeSpan.FromSeconds 60.0)
                // About a third of the segment's can events a file.
                Record =
                    Some {
                        Path = recording
                        MaxBytes = 2_000_000L
                        SegmentLength = None
                        Closed = closed.Enqueue
                    }
                Reader = ReaderOptions.Default
                Cancellation = cancel.Token
            }

            let statuses () =
                messages
                |> Seq.filter (fun m -> m.Kind = MonitorMessageKind.SourceStatus)
                |> Seq.map (fun m -> m.Data["status"].GetValue<string>())
                |> List.ofSeq

            let frames () =
                messages
                |> Seq.filter (fun m -> m.Kind = MonitorMessageKind.Update)
                |> Seq.tryLast
                |> Option.map (fun m -> m.Data["frames"].GetValue<int64>())
                |> Option.defaultValue 0L

            let mutable pub = publisher "can"

            let session =
                Task.Run(fun () ->
                    BridgeSource.run (monitor.Services parameters) layout state "127.0.0.1" options messages.Enqueue)

            // ZMQ's subscriber joins late: another service's event until it is seen (counted as
            // foreign, never stepped).
            waitFor "the connection" 10.0 (fun () ->
                pub.SendFrame foreign
                Thread.Sleep 20
                List.contains "connected" (statuses ()))

            let half = can.Length / 2

            for m in can |> List.take half do
                pub.SendFrame m

            pub.SendFrame [| 1uy; 2uy; 3uy |]
            waitFor "the first half" 20.0 (fun () -> frames () > 0L && List.contains "silent" (statuses ()))

            // The publisher goes away and comes back on the same port: the session recovers.
            pub.Dispose()
            waitFor "the lost connection" 10.0 (fun () -> List.contains "reconnecting" (statuses ()))
            pub <- publisher "can"

            waitFor "the reconnection" 10.0 (fun () ->
                pub.SendFrame foreign
                Thread.Sleep 20

                statuses ()
                |> List.rev
                |> List.takeWhile ((<>) "reconnecting")
                |> List.contains "connected")

            for m in can |> List.skip half do
                pub.SendFrame m

            let total = 197393L
            waitFor "every frame" 20.0 (fun () -> frames () = total)
            cancel.Cancel()
            let outcome = session.Result |> Result.defaultWith failtest
            pub.Dispose()

            Expect.equal outcome.Received (int64 can.Length) "every can event once"
            Expect.equal outcome.Corrupt 1L "the garbage message"
            Expect.isGreaterThanOrEqual outcome.Foreign 2L "the warm-up events"

            let all = List.ofSeq messages
            Expect.equal (all |> List.map _.Seq) [ 1L .. int64 all.Length ] "no gap"
            Expect.equal (List.last all).Kind MonitorMessageKind.End "ends with the final state"

            let counts =
                (List.last all).Data["addresses"].AsArray()
                |> Seq.map _.AsObject()
                |> Seq.filter (fun o -> not (isNull o["bus"]))
                |> Seq.map (fun o ->
                    $"""{o["address"].GetValue<string>()}/{o["bus"].GetValue<int>()}""", o["count"].GetValue<int64>())
                |> Map.ofSeq

            let truth =
                JsonDocument.Parse(File.ReadAllText(synthetic [ "default.truth.json" ])).RootElement

            let file = truth.GetProperty("expected_per_file")[0]

            let planted =
                file.GetProperty("message_counts_by_address_src").EnumerateObject()
                |> Seq.map (fun p -> p.Name, p.Value.GetInt64())
                |> Map.ofSeq

            Expect.equal counts planted "frame counts per (address, src)"

            // The recording: the events received, in order, across its files.
            Expect.isGreaterThan outcome.Recorded.Length 1 "rotated by size"
            Expect.equal outcome.Recorded.Head recording "the first file by its name"
            Expect.equal (List.ofSeq closed) outcome.Recorded "each file handed over once it is closed, in order"

            let times (files: string list) (service: string) =
                let found = ResizeArray<uint64>()
                let d = Event.discriminantOf layout service |> Option.get

                use source =
                    new LogSource(
                        files,
                        LogSourceOptions.Of {
                            ReaderOptions.Default with
                                Strict = true
                        }
                    )

                source.Iter(fun r ->
                    if Event.which r.Message layout r.Event = d then
                        found.Add(Event.logMonoTime r.Message layout r.Event)

                    true)
                |> Result.defaultWith (failtestf "%A")
                |> ignore

                List.ofSeq found

            Expect.equal
                (times outcome.Recorded "can")
                (times [ synthetic [ "default.rlog.zst" ] ] "can")
                "every can event received, in order"

            Expect.isEmpty (times outcome.Recorded "carState") "the foreign ones are not recorded"
            // A status repeats when only the foreign or corrupt counts grew: the changes, once each.
            let s =
                statuses ()
                |> List.fold
                    (fun acc x ->
                        match acc with
                        | last :: _ when last = x -> acc
                        | _ -> x :: acc)
                    []
                |> List.rev

            Expect.equal (List.head s) "connecting" "first"
            Expect.equal (List.last s) "ended" "last"
            // A loaded machine may also go quiet for the silence threshold before the end.
            Expect.equal
                (List.truncate 5 s)
                [ "connecting"; "connected"; "silent"; "reconnecting"; "connected" ]
                "each change once"

            Expect.equal (s |> List.skip 5 |> List.filter ((<>) "silent")) [ "ended" ] "then the end"
        }
    ]
