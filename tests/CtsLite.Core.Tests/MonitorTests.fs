module CtsLite.Core.Tests.MonitorTests

open System
open System.IO
open System.Text.Json
open System.Text.Json.Nodes
open System.Threading
open Expecto
open CtsLite.Capnp
open CtsLite.Logs
open CtsLite.Monitors
open CtsLite.Tests
open CtsLite.Tools

let private synthetic (parts: string list) =
    Path.Combine(Array.ofList (TestEnv.sharedDir () :: "data" :: "rlogs" :: "synthetic" :: parts))

let private routeName = "5ca1ab1e5ca1ab1e|2025-01-16--07-45-12"

let private schema = Schema.cereal ()

let private layout = EventLayout.ofSchema schema |> Result.defaultWith failwith

/// Validates `given` for `id` and starts it.
let private start (id: string) (given: (string * string) list) : Monitor * ToolParameters * IMonitorState =
    let monitor =
        CtsLite.Monitors.Catalog.tryFind id
        |> Option.defaultWith (fun () -> failtestf "no monitor %s" id)

    let parameters =
        given
        |> List.map (fun (k, v) -> k, ParameterInput.Text v)
        |> CtsLite.Monitors.Catalog.validate monitor
        |> Result.defaultWith (failtestf "%A")

    let context = {
        Parameters = parameters
        ResolveFile = Ok
        Schema = schema
        Layout = layout
    }

    monitor, parameters, monitor.Start context |> Result.defaultWith (failtestf "%A")

/// Replays `input` (as fast as possible) into a fresh `id`; every message sent, in order.
let private replay (id: string) (given: (string * string) list) (input: string) (updateMs: int) =
    let monitor, parameters, state = start id given
    let files = Route.resolve input |> Result.defaultWith failwith
    let messages = ResizeArray<MonitorMessage>()

    let options = {
        Speed = 0.0
        UpdateMs = updateMs
        Reader = ReaderOptions.Default
        Cancellation = CancellationToken.None
    }

    let outcome =
        Replay.run (monitor.Services parameters) layout state files options messages.Add
        |> Result.defaultWith (failtestf "%A")

    outcome, List.ofSeq messages

let private truth (file: string) =
    JsonDocument.Parse(File.ReadAllText file).RootElement

/// The planted frame counts of `expected` entries: `"0x13A/1" → n`, summed over the entries.
let private plantedCounts (expected: JsonElement seq) : Map<string, int64> =
    expected
    |> Seq.collect (fun e -> e.GetProperty("message_counts_by_address_src").EnumerateObject())
    |> Seq.groupBy _.Name
    |> Seq.map (fun (k, vs) -> k, vs |> Seq.sumBy (fun v -> v.Value.GetInt64()))
    |> Map.ofSeq

let private entries (data: JsonObject) =
    data["addresses"].AsArray() |> Seq.map _.AsObject() |> List.ofSeq

let private keyOf (o: JsonObject) =
    $"""{o["address"].GetValue<string>()}/{o["bus"].GetValue<int>()}"""

let all =
    testList "Monitors" [
        test "can_bus_check over the 3-segment route counts every (address, bus) as planted" {
            let outcome, messages =
                replay "can_bus_check" [] (synthetic [ "route"; routeName ]) 100

            let final = messages |> List.last
            Expect.equal final.Kind MonitorMessageKind.End "ends with the final state"
            Expect.equal (messages |> List.head).Kind MonitorMessageKind.Snapshot "starts with a snapshot"

            Expect.equal (messages |> List.map _.Seq) [ 1L .. int64 messages.Length ] "sequence numbers without gaps"

            let planted =
                (truth (synthetic [ "route"; $"{routeName}.truth.json" ]))
                    .GetProperty("expected_per_file")
                    .EnumerateArray()
                |> plantedCounts

            let seen =
                entries final.Data
                |> List.filter (fun o -> not (isNull o["bus"]))
                |> List.map (fun o -> keyOf o, o["count"].GetValue<int64>())
                |> Map.ofList

            Expect.equal seen planted "frame counts per (address, src)"
            Expect.equal (final.Data["events"].GetValue<int64>()) outcome.Events "every can event stepped"
            // 3 minutes of updates every 100 ms of log time.
            Expect.isGreaterThan messages.Length 1700 "updates in log time"
        }
        test "can_bus_check rates match the planted ones; the expected set is flagged" {
            let log = synthetic [ "default.rlog.zst" ]
            let _, messages = replay "can_bus_check" [ "window_s", "10" ] log 1000
            let final = (List.last messages).Data

            let planted =
                [
                    (truth (synthetic [ "default.truth.json" ])).GetProperty("expected_per_file")[0]
                ]
                |> plantedCounts

            let all = entries final

            for o in all |> List.filter (fun o -> not (isNull o["bus"])) do
                let key = keyOf o
                let plantedHz = float planted[key] / 60.0

                // Over a 10 s window a 10 Hz message is ±1 frame of 100.
                if plantedHz >= 10.0 then
                    let rate = o["rate_hz"].GetValue<float>()
                    Expect.isLessThan (abs (rate - plantedHz) / plantedHz) 0.05 $"{key}: {rate} Hz, planted {plantedHz}"

            let expected = all |> List.filter (fun o -> o["expected"].GetValue<bool>())

            Expect.equal
                (expected
                 |> List.map (fun o -> o["address"].GetValue<string>())
                 |> List.distinct
                 |> List.sort)
                [ "0x040"; "0x13C"; "0x168"; "0x240"; "0x321" ]
                "the default expected set"

            let missing = expected |> List.filter (fun o -> o["missing"].GetValue<bool>())
            Expect.equal (missing |> List.map (fun o -> o["address"].GetValue<string>())) [ "0x168" ] "not on this car"
            Expect.isNull missing.Head["bus"] "an address never seen has no bus"

            let named =
                expected |> List.find (fun o -> o["address"].GetValue<string>() = "0x13C")

            Expect.equal (named["name"].GetValue<string>()) "Brake_Status" "named from the DBC"

            let errors (key: string) =
                let o = all |> List.find (fun o -> not (isNull o["bus"]) && keyOf o = key)
                o["checksum_errors"].GetValue<int64>(), o["counter_errors"].GetValue<int64>()

            // The planted bad checksums: Wheel_Speeds at 12 s, Brake_Status at 44 s (bus 1).
            Expect.equal (errors "0x13A/1") (1L, 0L) "Wheel_Speeds"
            Expect.equal (errors "0x13C/1") (1L, 0L) "Brake_Status"
            Expect.equal (errors "0x002/0") (0L, 0L) "Steering"
        }
        test "panda_state reports the planted safety model and each controlsAllowed change" {
            let _, messages = replay "panda_state" [] (synthetic [ "default.rlog.zst" ]) 100

            let pandas =
                messages
                |> List.map (fun m -> m.Data["pandas"].AsArray())
                |> List.filter (fun a -> a.Count > 0)
                |> List.map (fun a -> a[0].AsObject())

            let last = List.last pandas
            Expect.equal (last["safety_model"].GetValue<string>()) "subaru" "safety model"
            Expect.equal (last["safety_param"].GetValue<uint64>()) 1UL "GEN2 param"
            Expect.equal (last["safety_rx_invalid"].GetValue<uint64>()) 2UL "the two planted bad frames"

            let changes =
                pandas
                |> List.map (fun p -> p["controls_allowed"].GetValue<bool>())
                |> List.fold (fun acc v -> if List.tryHead acc = Some v then acc else v :: acc) []
                |> List.rev

            let file =
                (truth (synthetic [ "default.truth.json" ])).GetProperty("expected_per_file")[0]

            let planted =
                file.GetProperty("panda").GetProperty("controlsAllowed_changes").EnumerateArray()
                |> Seq.map (fun c -> c.GetProperty("controlsAllowed").GetBoolean())
                |> List.ofSeq

            Expect.equal changes planted "controlsAllowed false, true, false, true"
            let updates = (List.last messages).Data["updates"].GetValue<int64>()
            Expect.equal updates 600L "every pandaStates event"
        }
        test "hybrid_rx_trace records each RX-checks flip with the expected messages' ages" {
            let given = [ "expected", "0x13A/1,0x13C/1,0x119/0,0x13A/0" ]

            let _, messages =
                replay "hybrid_rx_trace" given (synthetic [ "default.rlog.zst" ]) 1000

            let final = (List.last messages).Data
            let panda = (final["pandas"].AsArray()[0]).AsObject()
            let flips = panda["recent_flips"].AsArray() |> Seq.map _.AsObject() |> List.ofSeq
            Expect.equal (panda["flips"].GetValue<int64>()) (int64 flips.Length) "all flips kept (fewer than max_flips)"

            let raised = flips |> List.filter (fun f -> f["rx_checks_invalid"].GetValue<bool>())

            let file =
                (truth (synthetic [ "default.truth.json" ])).GetProperty("expected_per_file")[0]

            // The planted bad frames raise safetyRxInvalid (0 → 1 → 2); the RX checks flag each.
            let planted =
                file.GetProperty("panda").GetProperty("safetyRxInvalid_changes").EnumerateArray()
                |> Seq.filter (fun c -> c.GetProperty("safetyRxInvalid").GetInt32() > 0)
                |> Seq.map (fun c ->
                    Math.Round(c.GetProperty("t_s").GetDouble(), 3), c.GetProperty("safetyRxInvalid").GetUInt64())
                |> List.ofSeq

            Expect.equal
                (raised
                 |> List.map (fun f -> f["log_time_s"].GetValue<float>(), f["safety_rx_invalid"].GetValue<uint64>()))
                planted
                "a raised flag at each planted increment"

            let ages = raised.Head["ages"].AsArray() |> Seq.map _.AsObject() |> List.ofSeq

            let age (key: string) =
                ages |> List.find (fun o -> keyOf o = key)
            // Wheel_Speeds runs at 50 Hz on bus 1 (GEN2); on bus 0 it is never seen.
            let wheels = age "0x13A/1"
            Expect.isLessThan (wheels["age_s"].GetValue<float>()) 0.03 "seen just before"
            Expect.isNull (age "0x13A/0").["age_s"] "never seen on bus 0"
            let brake = age "0x13C/1"
            Expect.equal (brake["name"].GetValue<string>()) "Brake_Status" "named"
        }
        test "signal_watch gives each signal per bus and each field: last, count, and the window's range" {
            let log = synthetic [ "default.rlog.zst" ]

            let given = [ "signals", "Wheel_Speeds.FL"; "fields", "carState.vEgo,selfdriveState.state" ]

            let _, messages = replay "signal_watch" given log 1000

            let values =
                (List.last messages).Data["values"].AsArray()
                |> Seq.map _.AsObject()
                |> List.ofSeq

            let named (n: string) =
                values |> List.filter (fun o -> o["name"].GetValue<string>() = n)

            // Wheel_Speeds is on bus 1 only on this car (GEN2), at 50 Hz.
            let wheel = named "Wheel_Speeds.FL"

            Expect.equal
                (wheel
                 |> List.map (fun o -> o["bus"].GetValue<int>(), o["count"].GetValue<int64>()))
                [ 1, 3000L ]
                "one bus"

            Expect.equal (wheel.Head["unit"].GetValue<string>()) "kph" "the DBC's unit"

            // The field read independently, through the log source.
            let samples = ResizeArray<int64 * float>()
            use source = new LogSource([ log ], LogSourceOptions.Of ReaderOptions.Default)
            let carState = Event.discriminantOf layout "carState" |> Option.get

            source.Iter(fun r ->
                if Event.which r.Message layout r.Event = carState then
                    match FieldPath.read schema r.Message layout.Event r.Event "carState.vEgo" with
                    | Ok(FieldValue.Float v) -> samples.Add(int64 (Event.logMonoTime r.Message layout r.Event), v)
                    | other -> failtestf "%A" other

                true)
            |> Result.defaultWith (failtestf "%A")
            |> ignore

            let v = (named "carState.vEgo").Head
            let lastNs, lastValue = samples[samples.Count - 1]
            Expect.equal (v["last"].GetValue<float>()) lastValue "the last sample"
            Expect.equal (v["count"].GetValue<int64>()) (int64 samples.Count) "every sample"

            // The window is 20 slices of 0.5 s up to the current one: between 9.5 and 10 s back.
            let over (seconds: float) =
                samples
                |> Seq.filter (fun (ns, _) -> float (lastNs - ns) / 1e9 <= seconds)
                |> Seq.map snd

            let lo, hi = v["min"].GetValue<float>(), v["max"].GetValue<float>()
            Expect.isTrue (lo >= Seq.min (over 10.0) && lo <= Seq.min (over 9.5)) $"min {lo}"
            Expect.isTrue (hi <= Seq.max (over 10.0) && hi >= Seq.max (over 9.5)) $"max {hi}"

            let state = (named "selfdriveState.state").Head
            Expect.equal (state["text"].GetValue<string>()) "enabled" "an enum's name"

            let _, onBus0 =
                replay "signal_watch" [ "signals", "Wheel_Speeds.FL"; "bus", "0" ] log 1000

            let none = (List.last onBus0).Data["values"].AsArray()
            Expect.equal none.Count 0 "not on bus 0"
        }
        test "signal_watch names an unknown signal or service" {
            let monitor = CtsLite.Monitors.Catalog.tryFind "signal_watch" |> Option.get

            let startWith given =
                let parameters =
                    given
                    |> List.map (fun (k, v) -> k, ParameterInput.Text v)
                    |> CtsLite.Monitors.Catalog.validate monitor

                match parameters with
                | Error e -> Error(ToolError.InvalidParameters e)
                | Ok p ->
                    monitor.Start {
                        Parameters = p
                        ResolveFile = Ok
                        Schema = schema
                        Layout = layout
                    }
                    |> Result.map ignore

            let text r =
                match r with
                | Error e -> ToolError.describe e
                | Ok() -> failtest "started"

            Expect.stringContains (text (startWith [])) "at least one" "nothing to watch"
            Expect.stringContains (text (startWith [ "signals", "Wheel_Speeds.Nope" ])) "Nope" "the signal"
            Expect.stringContains (text (startWith [ "fields", "carStat.vEgo" ])) "carStat" "the service"
        }
        test "bad monitor parameters are named" {
            let monitor = CtsLite.Monitors.Catalog.tryFind "can_bus_check" |> Option.get

            match
                CtsLite.Monitors.Catalog.validate monitor [
                    "addresses", ParameterInput.Items [ ParameterInput.Text "0x13A"; ParameterInput.Text "wheel" ]
                    "window_s", ParameterInput.Text "0"
                ]
            with
            | Error errors ->
                let text = ToolError.describe (ToolError.InvalidParameters errors)
                Expect.stringContains text "window_s" "the window"

                Expect.isOk
                    (CtsLite.Monitors.Catalog.validate monitor [ "addresses", ParameterInput.Text "0x13A,0x40" ])
                    "a comma list"
            | Ok _ -> failtest "accepted a zero window"

            match CtsLite.Monitors.Catalog.validate monitor [ "addresses", ParameterInput.Text "0x13A,wheel" ] with
            | Error [ e ] ->
                Expect.equal e.Parameter "addresses" "named"
                Expect.stringContains e.Detail "'wheel'" "the bad item quoted"
            | other -> failtestf "%A" other
        }
        test "the catalog's ids are the monitors' wire names, each in the monitor category" {
            for d in CtsLite.Monitors.Catalog.descriptors do
                Expect.equal d.Category ToolCategory.Monitor d.Id
                Expect.isMatch d.Id "^[a-z0-9]+(_[a-z0-9]+)*$" d.Id
        }
    ]
