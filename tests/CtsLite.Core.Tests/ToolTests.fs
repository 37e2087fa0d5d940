module CtsLite.Core.Tests.ToolTests

open System
open System.IO
open System.Text.Json
open System.Threading
open Expecto
open FsCheck
open FsCheck.FSharp
open CtsLite.Tools
open CtsLite.Tests

let synthetic (parts: string list) =
    Path.Combine(Array.ofList (TestEnv.sharedDir () :: "data" :: "rlogs" :: "synthetic" :: parts))

let routeName = "5ca1ab1e5ca1ab1e|2025-01-16--07-45-12"

let defaultLog () = synthetic [ "default.rlog.zst" ]

let segment (n: int) =
    synthetic [ "route"; $"{routeName}--{n}"; "rlog.zst" ]

let route () = synthetic [ "route"; routeName ]

/// Runs a tool through the one run path with text parameters; returns the outcome, the output
/// folder and the log lines.
let runTool
    (tool: Tool)
    (input: string)
    (given: (string * string) list)
    (token: CancellationToken)
    : Result<ToolOutput, ToolError> * string * string list =
    let dir = TestEnv.tempDir tool.Descriptor.Id
    let log = ResizeArray<string>()

    let request = {
        ToolRunner.request
            tool.Descriptor.Id
            (ToolInput.Path input)
            (given |> List.map (fun (k, v) -> k, ParameterInput.Text v))
            dir with
            Log = fun level line -> lock log (fun () -> log.Add $"{level}: {line}")
            Cancellation = token
    }

    match ToolRunner.prepare request.ToolId request.Parameters with
    | Error e -> failtestf "parameters rejected: %A" e
    | Ok prepared -> ToolRunner.execute request prepared |> Result.map _.Output, dir, List.ofSeq log

let completed (result, dir, _) =
    match result with
    | Ok(output: ToolOutput) -> output, dir
    | Error e -> failtestf "run failed: %A" e

let json (path: string) =
    JsonDocument.Parse(File.ReadAllText path).RootElement

let truth (file: string) =
    JsonDocument.Parse(File.ReadAllText file).RootElement

let tNs (e: JsonElement) =
    Int64.Parse(e.GetProperty("t_ns").GetString())

let items (e: JsonElement) = e.EnumerateArray() |> List.ofSeq

/// The analyzer's findings must equal one truth entry (`expected_per_file[i]` or `expected_route_level`).
let checkAgainstTruth (summary: JsonElement) (expected: JsonElement) =
    let ns (e: JsonElement) =
        e.GetProperty("log_mono_time_ns").GetInt64()

    for ours, theirs in
        [
            "set_presses", "set_presses"
            "resume_presses", "resume_presses"
            "main_presses", "main_presses"
        ] do
        Expect.equal
            (items (summary.GetProperty ours) |> List.map ns)
            (items (expected.GetProperty theirs) |> List.map tNs)
            ours

    for p, e in List.zip (items (summary.GetProperty "set_presses")) (items (expected.GetProperty "set_presses")) do
        Expect.floatClose
            Accuracy.medium
            (p.GetProperty("speed_mph").GetDouble())
            (e.GetProperty("nearest_speed_mph").GetDouble())
            "speed of the nearest sample"

        Expect.equal
            (p.GetProperty("speed_in_band").GetBoolean())
            (e.GetProperty("nearest_speed_in_band").GetBoolean())
            "in band"

    let activations =
        items (expected.GetProperty "status_0x241_activation_events")
        @ items (expected.GetProperty "es_brake_0x220_activation_events")
        |> List.map tNs
        |> List.sort

    Expect.equal
        (items (summary.GetProperty "cruise_activations") |> List.map ns |> List.sort)
        activations
        "activations"

    let ms (x: float) = Math.Round(x * 1000.0)

    let targets (e: JsonElement) =
        e.GetProperty("start_abs").GetDouble() |> ms, e.GetProperty("end_abs").GetDouble() |> ms

    Expect.equal
        (items (summary.GetProperty "target_speed_events") |> List.map targets)
        (items (expected.GetProperty "target_speed_events")
         |> List.map (fun e ->
             e.GetProperty("start").GetProperty("t_s").GetDouble() |> ms,
             e.GetProperty("end").GetProperty("t_s").GetDouble() |> ms))
        "target-speed events to the millisecond"

    let window (e: JsonElement) =
        ms (e.GetProperty("start_abs").GetDouble()),
        ms (e.GetProperty("stop_abs").GetDouble()),
        ms (e.GetProperty("window_start_abs").GetDouble()),
        ms (e.GetProperty("window_end_abs").GetDouble()),
        e.GetProperty("partial").GetBoolean()

    Expect.equal
        (items (summary.GetProperty "marker_windows") |> List.map window)
        (items (expected.GetProperty "marker_windows")
         |> List.map (fun e ->
             ms (e.GetProperty("start_time").GetProperty("t_s").GetDouble()),
             ms (e.GetProperty("stop_time").GetProperty("t_s").GetDouble()),
             ms (e.GetProperty("window_start_s").GetDouble()),
             ms (e.GetProperty("window_end_s").GetDouble()),
             e.GetProperty("partial").GetBoolean()))
        "marker windows to the millisecond"

    let counts (e: JsonElement) =
        e.EnumerateObject()
        |> Seq.map (fun p -> p.Name, p.Value.GetInt64())
        |> Map.ofSeq

    Expect.equal
        (counts (summary.GetProperty "message_counts"))
        (counts (expected.GetProperty "message_counts_by_address_src"))
        "frames per (address, bus)"

    match expected.TryGetProperty "integrity" with
    | true, integrity ->
        let bad (e: JsonElement) (time: string) (bus: string) =
            e.GetProperty("address").GetString(),
            e.GetProperty(bus).GetInt32(),
            e.GetProperty("hex").GetString().ToUpperInvariant(),
            time

        Expect.equal
            (items (summary.GetProperty("integrity").GetProperty "frames_with_bad_checksum")
             |> List.map (fun e -> bad e (string (ms (e.GetProperty("ts_abs").GetDouble()))) "bus"))
            (items (integrity.GetProperty "frames_with_bad_checksum")
             |> List.map (fun e -> bad e (string (ms (e.GetProperty("t_s").GetDouble()))) "src"))
            "bad checksums"
    | _ -> ()

let analyze (input: string) (given: (string * string) list) =
    let output, dir =
        completed (runTool CruiseTool.tool input given CancellationToken.None)

    output, dir, json (Path.Combine(dir, "summary.json"))

/// The CSV's metadata lines (key, value), header and rows.
let readCsv (path: string) =
    let lines = File.ReadAllLines path
    let meta = lines |> Array.takeWhile (fun l -> l.StartsWith "# ")

    let pairs =
        meta
        |> Array.map (fun l ->
            let i = l.IndexOf(':')
            l.Substring(2, i - 2), l.Substring(i + 1).TrimStart())
        |> List.ofArray

    let rest = lines |> Array.skip meta.Length
    pairs, rest[0].Split(','), rest |> Array.skip 1 |> Array.map (fun l -> l.Split(','))

let goldenColumns = [
    "counts_by_segment", "address_hex,bus,pre_count,window_count,post_count,delta,uniq_pre,uniq_window,uniq_post"
    "candidates",
    "address_hex,bit_global,byte_index,bit_lsb,bit_msb,label_lsb,label_msb,score,rises_set,falls_end,toggles,penalty,bus"
    "edges",
    "address_hex,bit_global,byte_index,bit_lsb,bit_msb,label_lsb,label_msb,ts_abs,ts_rel,ts_mmss,edge_type,speed_mph,bus"
    "runs",
    "address_hex,bit_global,byte_index,bit_lsb,bit_msb,label_lsb,label_msb,start_abs,start_rel,start_mmss,end_abs,end_rel,end_mmss,duration_s,duration_mmss,bus"
    "timeline",
    "ts_abs,ts_rel,ts_mmss,address_hex,bit_global,byte_index,bit_lsb,bit_msb,label_lsb,label_msb,event,value,speed_mph,bus"
    "engaged_intervals",
    "address_hex,bit_global,byte_index,bit_lsb,bit_msb,label_lsb,label_msb,start_abs,start_rel,start_mmss,end_abs,end_rel,end_mmss,duration_s,duration_mmss,bus"
]

let goldenMetaKeys = [
    "schema_version"
    "analysis_id"
    "tool_version"
    "input_files"
    "input_hashes"
    "time_origin"
    "time_origin_abs_s"
    "speed_band_mph"
    "main_source"
    "set_source"
    "speed_source"
    "bus_policy"
    "id_bus_map"
    "engaged_mode"
    "engaged_bit"
    "engaged_bus"
    "engaged_margin_s"
    "engaged_intervals_count"
    "scoring"
    "parameters"
    "meta_json"
]

/// A naive model of target-speed events for the property test.
let modelEvents (lo: float) (hi: float) (speeds: float list) =
    let inBand v = v >= lo && v <= hi
    let indexed = List.indexed speeds

    [
        for i, v in indexed do
            if inBand v && (i = 0 || not (inBand speeds[i - 1])) then
                let rest =
                    indexed |> List.skip (i + 1) |> List.tryFind (fun (_, w) -> not (inBand w))

                match rest with
                | Some(j, _) -> i, j, false
                | None -> i, speeds.Length - 1, true
    ]

let internal at (rel: float) : LogTime = {
    Ns = int64 (rel * 1e9)
    Abs = rel
    Rel = rel
}

let parameters =
    testList "tool parameters" [
        test "defaults fill what is not given, text is coerced to the declared type" {
            match
                Parameters.validate CruiseTool.descriptor [
                    "speed_min", ParameterInput.Text "50"
                    "bus", ParameterInput.Text "0x1"
                    "marker_type", ParameterInput.Text "none"
                ]
            with
            | Ok p ->
                Expect.equal (p.Float "speed_min") (Some 50.0) "coerced"
                Expect.equal (p.Float "speed_max") (Some 56.0) "default"
                Expect.equal (p.Int "bus") (Some 1L) "hex int"
                Expect.equal (p.Str "marker_type") (Some "none") "choice"
                Expect.isNone (p.Int "max_events") "optional without default stays absent"
            | Error e -> failtestf "%A" e
        }
        test "every bad parameter is reported, each with its name" {
            match
                Parameters.validate CruiseTool.descriptor [
                    "speed_min", ParameterInput.Text "fast"
                    "marker_type", ParameterInput.Text "lights"
                    "marker_pre", ParameterInput.Number -1.0
                    "colour", ParameterInput.Text "red"
                    "bus", ParameterInput.Number 1.5
                ]
            with
            | Ok _ -> failtest "accepted"
            | Error errors ->
                Expect.equal
                    (errors |> List.map _.Parameter |> List.sort)
                    [ "bus"; "colour"; "marker_pre"; "marker_type"; "speed_min" ]
                    "one error per bad parameter"

                let detail name =
                    (errors |> List.find (fun e -> e.Parameter = name)).Detail

                Expect.stringContains (detail "colour") "unknown parameter" "unknown"
                Expect.stringContains (detail "marker_type") "blinkers, none" "choices listed"
                Expect.stringContains (detail "marker_pre") "at least 0" "minimum"
                Expect.stringContains (detail "speed_min") "'fast'" "the bad value is quoted"
        }
        test "the tool's own checks: selector syntax and band order" {
            match
                Parameters.validateFor CruiseTool.tool [
                    "engaged_bit", ParameterInput.Text "0x241:bit55"
                    "speed_min", ParameterInput.Number 60.0
                ]
            with
            | Ok _ -> failtest "accepted"
            | Error errors ->
                Expect.equal (errors |> List.map _.Parameter |> List.sort) [ "engaged_bit"; "speed_max" ] "both"
        }
        test "rlog-to-csv wants window_start and window_dur together, and real buses and addresses" {
            match
                Parameters.validateFor RlogToCsv.tool [
                    "window_start", ParameterInput.Text "3"
                    "buses", ParameterInput.Items [ ParameterInput.Text "1"; ParameterInput.Text "300" ]
                    "addresses", ParameterInput.Text "0x146,zz"
                ]
            with
            | Ok _ -> failtest "accepted"
            | Error errors ->
                Expect.equal
                    (errors |> List.map _.Parameter |> List.sort)
                    [ "addresses"; "buses"; "window_dur" ]
                    "three"
        }
        testProperty "a float inside [min, max] is accepted as given; below min it is refused" (fun (NormalFloat x) ->
            let result =
                Parameters.validate CruiseTool.descriptor [ "marker_pre", ParameterInput.Number x ]

            match result with
            | Ok p -> x >= 0.0 && p.Float "marker_pre" = Some x
            | Error [ e ] -> x < 0.0 && e.Parameter = "marker_pre"
            | Error _ -> false)
        testProperty "an unknown name is always one error naming it" (fun (name: NonEmptyString) ->
            let name = "x_" + name.Get

            match Parameters.validate CruiseTool.descriptor [ name, ParameterInput.Text "1" ] with
            | Error [ e ] -> e.Parameter = name
            | _ -> false)
    ]

let logic =
    testList "analysis logic" [
        testProperty
            "target-speed events are the maximal in-band runs, ending at the first sample out of band"
            (fun (speeds: NormalFloat list) ->
                let speeds = speeds |> List.map (fun (NormalFloat v) -> 50.0 + (abs v % 10.0))

                let samples =
                    speeds |> List.mapi (fun i v -> struct (at (float i * 0.02), v)) |> Array.ofList

                let events = CruiseControl.targetSpeedEvents 55.0 56.0 samples

                let ours =
                    events
                    |> List.map (fun e ->
                        int (Math.Round(e.Start.Rel / 0.02)), int (Math.Round(e.End.Rel / 0.02)), e.EndsAtLastSample)

                ours = modelEvents 55.0 56.0 speeds)
        test "the Python comma-tools' example: [54.9, 55.1, 56.0, 56.1] gives one event 1 → 3" {
            let samples = [|
                struct (at 0.0, 54.9)
                struct (at 1.0, 55.1)
                struct (at 2.0, 56.0)
                struct (at 3.0, 56.1)
            |]

            match CruiseControl.targetSpeedEvents 55.0 56.0 samples with
            | [ e ] -> Expect.equal (e.Start.Rel, e.End.Rel, e.Samples) (1.0, 3.0, 2) "one event"
            | other -> failtestf "%A" other
        }
        testProperty
            "marker windows: right-on closes the last left-on within the timeout, else nothing"
            (fun (events: (bool * bool * PositiveInt) list) ->
                let mutable t = 0.0
                let mutable left, right = false, false

                let changes = [
                    for l, r, PositiveInt dt in events do
                        t <- t + float (dt % 20)
                        let lc, rc = l <> left, r <> right

                        if lc || rc then
                            at t, l, r, lc, rc

                        left <- l
                        right <- r
                ]

                let windows, _ = CruiseControl.markerWindows 1.5 1.5 15.0 at changes

                windows
                |> List.forall (fun w ->
                    let startIsLeftOn =
                        changes |> List.exists (fun (c, l, _, lc, _) -> c.Rel = w.Start.Rel && l && lc)

                    let stopOk =
                        w.Partial && w.Stop.Rel = w.Start.Rel
                        || changes
                           |> List.exists (fun (c, l, r, lc, rc) ->
                               c.Rel = w.Stop.Rel && r && rc && not (l && lc) && c.Rel - w.Start.Rel <= 15.0)

                    startIsLeftOn
                    && stopOk
                    && abs (w.WindowStart.Rel - max 0.0 (w.Start.Rel - 1.5)) < 1e-9
                    && abs (w.WindowEnd.Rel - (w.Stop.Rel + 1.5)) < 1e-9))
        test "a pending window past the timeout is dropped" {
            let changes = [
                at 1.0, true, false, true, false
                at 1.3, false, false, true, false
                at 17.0, false, true, false, true
            ]

            let windows, dropped = CruiseControl.markerWindows 1.5 1.5 15.0 at changes
            Expect.isEmpty windows "no window"
            Expect.equal dropped 1 "one dropped"
        }
        test "engaged intervals: 0→1 opens, 1→0 closes, an open one ends at the last sample; margins merge" {
            let samples = [ at 0.0, false; at 1.0, true; at 2.0, false; at 2.6, true; at 4.0, true ]
            let intervals = CruiseControl.engagedIntervals samples
            Expect.equal (intervals |> List.map (fun i -> i.Start.Rel, i.End.Rel)) [ 1.0, 2.0; 2.6, 4.0 ] "raw"
            Expect.equal (CruiseControl.widen 0.5 intervals) [ 0.5, 4.5 ] "widened and merged"
            Expect.equal (CruiseControl.widen 0.2 intervals) [ 0.8, 2.2; 2.4, 4.2 ] "kept apart"
        }
        test "default bus: most frames, receive buses first, ties to the lowest" {
            Expect.equal (ToolSupport.defaultBus [ 0, 10L; 130, 50L ]) (Some 0) "receive first"
            Expect.equal (ToolSupport.defaultBus [ 2, 10L; 1, 10L ]) (Some 1) "tie"
            Expect.equal (ToolSupport.defaultBus [ 130, 3L; 128, 3L ]) (Some 128) "only TX"
            Expect.equal (ToolSupport.defaultBus []) None "none"
        }
        test "scores: chatter penalty above 40 toggles" {
            Expect.equal (CruiseControl.score 40) (0.0, 40.0) "no penalty"
            let penalty, score = CruiseControl.score 50
            Expect.floatClose Accuracy.high penalty 1.0 "penalty"
            Expect.floatClose Accuracy.high score 49.0 "score"
        }
        test "mm:ss formatting" {
            Expect.equal (Format.mmss 0.0) "00:00.000" "zero"
            Expect.equal (Format.mmss 61.5) "01:01.500" "minute"
            Expect.equal (Format.mmss 3599.9996) "60:00.000" "rounds up"
            Expect.equal (Format.mmss 5999.0) "99:59.000" "not capped"
        }
        test "a window still pending when the log ends keeps its ranges, however long ago it opened" {
            // The left blinker goes on at 20 s and stays on: the window is pending to the end. Its
            // ranges are [15.5, 18.5) before, [18.5, 21.5] inside, (21.5, 24.5] after. A log ending
            // at 30 s keeps them in the look-back ring (57 s); one ending at 200 s has long dropped
            // them from it, so the stream must take them before they go.
            let dbc =
                ToolSupport.builtInText ToolSupport.SubaruDbc
                |> Option.get
                |> CtsLite.Can.Dbc.parseText "subaru"
                |> Result.defaultWith (failwithf "%A")

            let decoder = CtsLite.Can.Subaru.ofDatabase dbc |> Result.defaultWith failwith

            let left =
                dbc.TryMessage CtsLite.Can.Subaru.DashlightsAddress
                |> Option.bind (fun m -> m.Signals |> List.tryFind (fun s -> s.Name = "LEFT_BLINKER"))
                |> Option.get

            let settings: CruiseSettings = {
                SpeedMin = 0.0
                SpeedMax = 200.0
                Markers = true
                MarkerPre = 1.5
                MarkerPost = 1.5
                MarkerTimeout = 15.0
                EngagedBit = None
                EngagedBus = None
                EngagedFilter = false
                EngagedMargin = 0.5
                Bus = None
                MaxEvents = None
            }

            let countsUntil (seconds: int) =
                use stream = new CruiseStream(settings, decoder, dbc, IntegrityCheck dbc)

                let dash = Array.zeroCreate<byte> 8
                let counter = Array.zeroCreate<byte> 8

                // An event every 10 ms with a counter frame (0x100, 16 payloads); the dashlights
                // every 100 ms.
                for i in 0 .. seconds * 100 do
                    let ns = stream.Event(1_000_000_000L + int64 i * 10_000_000L)
                    counter[0] <- byte (i % 16)
                    stream.Frame(ns, 0x100u, 0, ReadOnlySpan counter)

                    if i % 10 = 0 then
                        let on = i >= 2000
                        dash[left.StartBit / 8] <- if on then 1uy <<< (left.StartBit % 8) else 0uy
                        stream.Frame(ns, CtsLite.Can.Subaru.DashlightsAddress, 0, ReadOnlySpan dash)

                let a = stream.Finish([], [], false)

                Expect.equal
                    (a.MarkerWindows |> List.map (fun w -> w.Partial, w.Start.Rel))
                    [ true, 20.0 ]
                    "one pending window"

                a.SegmentCounts |> List.find (fun c -> c.Address = 0x100u)

            for seconds in [ 30; 200 ] do
                let c = countsUntil seconds

                Expect.equal
                    (c.Pre, c.Window, c.Post, c.UniquePre, c.UniqueWindow, c.UniquePost)
                    (300, 301, 300, 16, 16, 16)
                    $"the ranges' frames, log of {seconds} s"
        }
    ]

let analyzer =
    testList "cruise-control-analyzer" [
        test "the default segment equals its truth" {
            let _, _, summary = analyze (defaultLog ()) []
            let t = truth (synthetic [ "default.truth.json" ])
            checkAgainstTruth summary (t.GetProperty("expected_per_file").Item(0))
        }
        test "each route segment analysed alone equals expected_per_file" {
            let t = truth (synthetic [ "route"; $"{routeName}.truth.json" ])

            for n in 0..2 do
                let _, _, summary = analyze (segment n) []
                checkAgainstTruth summary (t.GetProperty("expected_per_file").Item(n))
        }
        test "the route as one stream equals expected_route_level" {
            let _, _, summary = analyze (route ()) []
            let t = truth (synthetic [ "route"; $"{routeName}.truth.json" ])
            checkAgainstTruth summary (t.GetProperty "expected_route_level")
        }
        test "the route's segments joined into one file (cat) give the route's findings" {
            // zstd frames concatenate: `cat` of the segments is one valid log.
            let dir = TestEnv.tempDir "joined"
            let joined = Path.Combine(dir, "route.rlog.zst")

            File.WriteAllBytes(
                joined,
                [|
                    for n in 0..2 do
                        yield! File.ReadAllBytes(segment n)
                |]
            )

            let _, joinedDir, summary = analyze joined []
            let t = truth (synthetic [ "route"; $"{routeName}.truth.json" ])
            checkAgainstTruth summary (t.GetProperty "expected_route_level")
            let _, routeDir, _ = analyze (route ()) []

            for name in [ "counts_by_segment"; "candidates"; "edges"; "runs"; "timeline" ] do
                let _, _, a = readCsv (Path.Combine(joinedDir, $"{name}.csv"))
                let _, _, b = readCsv (Path.Combine(routeDir, $"{name}.csv"))
                Expect.equal a b $"{name} rows"
        }
        test "a log joined to itself: time steps back, and the copy follows on as a new segment" {
            let dir = TestEnv.tempDir "twice"
            let twice = Path.Combine(dir, "twice.rlog.zst")
            let once = File.ReadAllBytes(defaultLog ())
            File.WriteAllBytes(twice, Array.append once once)
            let _, _, single = analyze (defaultLog ()) []
            let _, outDir, summary = analyze twice []

            let rels (s: JsonElement) (name: string) =
                items (s.GetProperty name)
                |> List.map (fun e -> e.GetProperty("ts_rel").GetDouble())

            let first = rels single "set_presses"
            let both = rels summary "set_presses"
            Expect.equal both.Length (2 * first.Length) "the copy's presses too"
            let duration = List.last first + 1.0
            // The copy's presses follow the first part's, at the same offsets from its start.
            for a, b in List.zip first (List.skip first.Length both) do
                Expect.isTrue (b > duration && abs (b - a - (both[first.Length] - first[0])) < 1e-3) $"{a} → {b}"

            let _, header, runs = readCsv (Path.Combine(outDir, "runs.csv"))
            let duration = Array.IndexOf(header, "duration_s")
            Expect.isNonEmpty runs "runs"

            Expect.isTrue
                (runs |> Array.forall (fun r -> r[duration] = "" || float r[duration] >= 0.0))
                "no negative duration"

            Expect.isTrue (runs |> Array.exists (fun r -> r[duration] <> "")) "runs with a duration"

            for w in items (summary.GetProperty "marker_windows") do
                Expect.isTrue
                    (w.GetProperty("stop_rel").GetDouble() >= w.GetProperty("start_rel").GetDouble())
                    "windows run forward"

            let warnings =
                items (summary.GetProperty("integrity").GetProperty "log_warnings")
                |> List.map _.GetString()

            Expect.exists warnings (fun w -> w.Contains "time steps back") "the join is reported"
        }
        test "every artifact exists, with the golden columns and metadata header" {
            let output, dir, _ = analyze (defaultLog ()) []

            for name in output.Artifacts do
                Expect.isTrue (File.Exists(Path.Combine(dir, name))) name

            let ids = Collections.Generic.HashSet<string>()

            for name, columns in goldenColumns do
                let meta, header, rows = readCsv (Path.Combine(dir, $"{name}.csv"))
                Expect.equal (String.Join(",", header)) columns $"{name} columns"
                Expect.equal (meta |> List.map fst) goldenMetaKeys $"{name} metadata keys"
                Expect.equal (snd meta[0]) $"{name}.v1" "schema version"
                ids.Add(snd meta[1]) |> ignore

                for row in rows do
                    Expect.equal row.Length header.Length $"{name}: every row has every column"

                let sidecar = json (Path.Combine(dir, $"{name}.analysis_meta.json"))
                let metaJson = JsonDocument.Parse(snd (List.last meta)).RootElement
                Expect.equal (JsonSerializer.Serialize metaJson) (JsonSerializer.Serialize sidecar) "sidecar"

                let hashes = metaJson.GetProperty("input_hashes").Item(0).GetString()
                Expect.isMatch hashes "^sha256:[0-9a-f]{64}$" "input hash recorded"

                let jsonRows = json (Path.Combine(dir, $"{name}.json"))
                Expect.equal (jsonRows.GetArrayLength()) rows.Length $"{name}.json has the same rows"

            Expect.equal ids.Count 1 "one analysis id shared by all files"
        }
        test "edges carry the Set bit and the nearest speed; runs and timeline carry the real blinker bus" {
            let _, dir, _ = analyze (defaultLog ()) []
            let _, header, edges = readCsv (Path.Combine(dir, "edges.csv"))

            let col name row =
                row |> Array.item (Array.IndexOf(header, name))

            let sets =
                edges
                |> Array.filter (fun r -> col "address_hex" r = "0x146" && col "bit_global" r = "43")

            Expect.equal (sets |> Array.map (col "speed_mph")) [| "55.606"; "55.536"; "54.579" |] "speeds"

            Expect.equal
                (sets |> Array.map (col "ts_rel"))
                [| "28.007"; "30.007"; "46.508" |]
                "relative to the first event"

            Expect.allEqual (sets |> Array.map (col "bus")) "1" "bus 1"

            let _, runHeader, runs = readCsv (Path.Combine(dir, "runs.csv"))

            let rcol name row =
                row |> Array.item (Array.IndexOf(runHeader, name))

            Expect.allEqual (runs |> Array.map (rcol "address_hex")) "0x390" "blinker address"
            Expect.allEqual (runs |> Array.map (rcol "bus")) "0" "blinker bus"
            let partial = runs |> Array.last
            Expect.equal (rcol "end_abs" partial, rcol "duration_s" partial) ("", "") "a partial window has no end"

            let _, tHeader, timeline = readCsv (Path.Combine(dir, "timeline.csv"))

            let tcol name row =
                row |> Array.item (Array.IndexOf(tHeader, name))

            let markers =
                timeline |> Array.filter (fun r -> (tcol "event" r).StartsWith "marker_")

            Expect.equal markers.Length 5 "2 complete windows × 2 + 1 partial start"
            Expect.allEqual (markers |> Array.map (tcol "address_hex")) "0x390" "marker rows carry 0x390"
            Expect.allEqual (markers |> Array.map (tcol "bus")) "0" "and the real bus"

            let targets =
                timeline |> Array.filter (fun r -> tcol "event" r = "target_speed_start")

            Expect.equal targets.Length 4 "target-speed events are in the timeline"
            Expect.allEqual (targets |> Array.map (tcol "bit_global")) "" "cells that do not apply stay empty"
        }
        test "counts_by_segment compares each window with the intervals before and after it" {
            let _, dir, _ = analyze (defaultLog ()) []
            let _, header, rows = readCsv (Path.Combine(dir, "counts_by_segment.csv"))
            let col name (row: string array) = int (row[Array.IndexOf(header, name)])

            for r in rows do
                Expect.equal
                    (col "delta" r)
                    (col "window_count" r - max (col "pre_count" r) (col "post_count" r))
                    "delta"

                Expect.isLessThanOrEqual (col "uniq_window" r) (col "window_count" r) "unique ≤ count"

            let wheel = rows |> Array.find (fun r -> r[0] = "0x13A" && r[1] = "1")
            // 50 Hz over windows of 5.0, 6.7 and 3.0 s.
            Expect.isTrue
                (abs (col "window_count" wheel - 735) <= 3)
                $"""0x13A window count {col "window_count" wheel}"""

            Expect.isTrue (rows |> Array.forall (fun r -> r[1] <> "")) "bus is always filled"
        }
        test "engaged_bit: intervals from the bit; filter keeps only rows inside them, annotate keeps all" {
            let _, dir, _ =
                analyze (defaultLog ()) [ "engaged_bit", "0x241:b55"; "engaged_mode", "filter" ]

            let _, header, intervals = readCsv (Path.Combine(dir, "engaged_intervals.csv"))

            let col name row =
                row |> Array.item (Array.IndexOf(header, name))

            Expect.equal
                (intervals |> Array.map (fun r -> col "start_rel" r, col "end_rel" r))
                [| "28.357", "36.057"; "41.358", "59.957" |]
                "Cruise_Status.Cruise_Activated intervals (the second ends at the last sample)"

            let _, eHeader, edges = readCsv (Path.Combine(dir, "edges.csv"))

            let rel (row: string array) =
                float row[Array.IndexOf(eHeader, "ts_rel")]

            Expect.isTrue
                (edges
                 |> Array.forall (fun r -> rel r >= 27.857 && rel r <= 36.557 || rel r >= 40.858))
                "every edge inside a widened interval"

            Expect.isFalse (edges |> Array.exists (fun r -> r[1] = "42")) "the Main press at 1.0 s is filtered out"

            let _, _, annotated =
                analyze (defaultLog ()) [ "engaged_bit", "0x241:MSB B8"; "engaged_mode", "annotate" ]

            Expect.equal (annotated.GetProperty("main_presses").GetArrayLength()) 1 "annotate keeps the findings"
        }
        test "buses are never mixed: forcing bus 0 finds no Wheel_Speeds there" {
            let output, _, summary = analyze (defaultLog ()) [ "bus", "0" ]
            Expect.equal (summary.GetProperty("set_presses").GetArrayLength()) 0 "no presses on bus 0"
            Expect.exists output.Warnings (fun w -> w.Contains "Wheel_Speeds") "warned"
        }
        test "max_events stops early and says so" {
            let output, _, summary = analyze (defaultLog ()) [ "max_events", "1000" ]
            Expect.isTrue (summary.GetProperty("integrity").GetProperty("truncated_by_max_events").GetBoolean()) "flag"
            Expect.exists output.Warnings (fun w -> w.Contains "max_events") "warning"
        }
        test "a truncated log is analysed up to the damage, with a warning" {
            let dir = TestEnv.tempDir "truncated"
            let bytes = File.ReadAllBytes(defaultLog ())
            let cut = Path.Combine(dir, "cut.rlog.zst")
            File.WriteAllBytes(cut, bytes[.. bytes.Length / 2])
            let output, _, summary = analyze cut []
            Expect.isNonEmpty output.Warnings "damage reported"

            Expect.stringContains
                (summary.GetProperty("integrity").GetProperty("log_warnings").Item(0).GetString())
                "cut.rlog.zst"
                "names the file"

            Expect.equal (summary.GetProperty("main_presses").GetArrayLength()) 1 "events before the damage are used"
        }
        test "a file that is not a log fails with a clear error and leaves no artifacts" {
            let dir = TestEnv.tempDir "notlog"
            let bad = Path.Combine(dir, "notes.rlog")
            File.WriteAllText(bad, "hello, this is not a log")

            match runTool CruiseTool.tool bad [] CancellationToken.None with
            | Error(ToolError.InputDamaged _ as e), out, _ ->
                Expect.stringContains (ToolError.describe e) "notes.rlog" "names the file"
                Expect.isEmpty (Directory.GetFiles out) "nothing written"
            | other, _, _ -> failtestf "%A" other
        }
        test "a bad DBC is named with its line" {
            let dir = TestEnv.tempDir "baddbc"
            let dbc = Path.Combine(dir, "broken.dbc")
            File.WriteAllText(dbc, "VERSION \"\"\nBO_ x Broken: 8 XXX\n")

            match runTool CruiseTool.tool (defaultLog ()) [ "dbc", dbc ] CancellationToken.None with
            | Error(ToolError.InvalidFile("dbc", reason)), _, _ ->
                Expect.stringContains reason "broken.dbc:2" "file and line"
            | other, _, _ -> failtestf "%A" other
        }
        test "a cancelled run stops and leaves no artifacts" {
            use cts = new CancellationTokenSource()
            cts.Cancel()

            match runTool CruiseTool.tool (defaultLog ()) [] cts.Token with
            | Error ToolError.Canceled, dir, _ -> Expect.isEmpty (Directory.GetFiles dir) "nothing written"
            | other, _, _ -> failtestf "%A" other
        }
        test "runs in parallel give identical findings" {
            let summaries =
                Array.Parallel.init 3 (fun _ ->
                    let _, _, s = analyze (defaultLog ()) []
                    s.GetProperty("set_presses").GetRawText(), s.GetProperty("marker_windows").GetRawText())

            Expect.allEqual summaries summaries[0] "same"
        }
        test "the HTML report is filled in and self-contained" {
            let _, dir, _ = analyze (defaultLog ()) [ "speed_min", "54"; "speed_max", "57" ]
            let html = File.ReadAllText(Path.Combine(dir, "analysis_report.html"))
            Expect.stringContains html "default.rlog.zst" "names the log"
            Expect.isFalse (html.Contains "{self.") "no template placeholders"

            Expect.isFalse
                (html.Contains "http://" && not (html.Contains "http://www.w3.org/2000/svg"))
                "no external links"

            Expect.isFalse (html.Contains "<script src") "no external scripts"
            Expect.stringContains html "Set button found: 3 press(es)" "key finding"
            Expect.stringContains html "data-min=\"54.00\" data-max=\"57.00\"" "the band is the requested one"

            Expect.equal
                (Text.RegularExpressions.Regex.Matches(html, "class=\"set-press\"").Count)
                3
                "Set presses drawn"

            Expect.equal
                (Text.RegularExpressions.Regex.Matches(html, "class=\"marker-window\"").Count)
                3
                "windows drawn"
        }
    ]

let rlogToCsv =
    testList "rlog-to-csv" [
        test "every CAN frame, relative times, labelled pre / window / post with an inclusive end" {
            let output, dir =
                completed (
                    runTool
                        RlogToCsv.tool
                        (defaultLog ())
                        [ "window_start", "10"; "window_dur", "5" ]
                        CancellationToken.None
                )

            Expect.equal output.Artifacts [ RlogToCsv.OutputName ] "one artifact"
            let lines = File.ReadAllLines(Path.Combine(dir, RlogToCsv.OutputName))
            Expect.equal lines[0] "window,segment,timestamp,address,bus,data_hex" "header"
            let rows = lines[1..] |> Array.map (fun l -> l.Split(','))
            let t = truth (synthetic [ "default.truth.json" ])

            Expect.equal
                rows.Length
                (t.GetProperty("expected_per_file").Item(0).GetProperty("can_frames").GetInt32())
                "every frame"

            Expect.equal rows.[0].[2] "0.000000" "relative to the first CAN event"

            for r in rows do
                let time = float r[2]

                let expected =
                    if time < 10.0 then "pre"
                    elif time <= 15.0 then "window"
                    else "post"

                Expect.equal r[1] expected $"segment at {time}"

            Expect.isTrue
                (rows
                 |> Array.forall (fun r -> Text.RegularExpressions.Regex.IsMatch(r[3], "^0x[0-9A-F]{3,}$")))
                "address format"

            Expect.isTrue
                (rows
                 |> Array.forall (fun r -> Text.RegularExpressions.Regex.IsMatch(r[5], "^([0-9A-F]{2})*$")))
                "payload hex"
        }
        test "bus and address filters" {
            let _, dir =
                completed (
                    runTool
                        RlogToCsv.tool
                        (defaultLog ())
                        [ "buses", "1"; "addresses", "0x146,0x13A" ]
                        CancellationToken.None
                )

            let rows =
                File.ReadAllLines(Path.Combine(dir, RlogToCsv.OutputName))[1..]
                |> Array.map (fun l -> l.Split(','))

            Expect.equal rows.Length 6000 "3000 + 3000 frames"
            Expect.isTrue (rows |> Array.forall (fun r -> r[4] = "1" && (r[3] = "0x146" || r[3] = "0x13A"))) "filtered"
            Expect.isTrue (rows |> Array.forall (fun r -> r[1] = "")) "no window, no label"
        }
    ]

let all = testList "Tools" [ parameters; logic; analyzer; rlogToCsv ]
