/// can-bitwatch, signal-export and log-summary on the shared data (the helpers are ToolTests').
module CtsLite.Core.Tests.ExportToolTests

open System
open System.IO
open System.Text.Json
open System.Threading
open Expecto
open FsCheck
open FsCheck.FSharp
open CtsLite.Tools
open CtsLite.Tests
open CtsLite.Core.Tests.ToolTests

let private writeCsv (rows: (float * string * string * int * string) list) =
    let dir = TestEnv.tempDir "bitwatch-in"
    let path = Path.Combine(dir, "frames.csv")

    File.WriteAllLines(
        path,
        "window,segment,timestamp,address,bus,data_hex"
        :: [
            for t, seg, a, bus, hex in rows ->
                $"""1,{seg},{t.ToString("F6", Globalization.CultureInfo.InvariantCulture)},{a},{bus},{hex}"""
        ]
    )

    path

let private lines (dir: string) (name: string) =
    File.ReadAllLines(Path.Combine(dir, name)) |> List.ofArray

let bitwatch =
    testList "can-bitwatch" [
        test "the Python comma-tools' first reference run: counts and watched-bit edges" {
            let csv =
                writeCsv [
                    1.0, "pre", "0x123", 0, "0000000000000000"
                    2.0, "window", "0x123", 0, "0000000000000001"
                    2.5, "window", "0x456", 0, "00"
                    4.0, "post", "0x123", 0, "0000000000000000"
                ]

            let output, dir =
                completed (runTool CanBitwatch.tool csv [ "watch", "0x123:B7b7" ] CancellationToken.None)

            Expect.equal output.Artifacts.Length 5 "five outputs"

            Expect.equal
                (lines dir "analysis.counts.csv")
                [ "address,pre,window,post,delta"; "0x123,1,1,1,0"; "0x456,0,1,0,1" ]
                "counts"

            Expect.equal
                (lines dir "analysis.bit_edges.csv")
                [
                    "address,byte,msb_bit,lsb_bit,global_idx,timestamp,rel,edge,segment"
                    "0x123,7,7,0,56,2.000000,00:00.000,0->1,window"
                    "0x123,7,7,0,56,4.000000,00:02.000,1->0,post"
                ]
                "edges relative to the first window row"

            Expect.equal
                (lines dir "analysis.candidates_window_only.csv")
                [ "address,global_idx,toggles" ]
                "no candidate"
        }
        test "the Python comma-tools' second reference run: three 2 s pulses in the window" {
            let rows = [
                for k in 0..250 do
                    let t = float k / 10.0

                    let seg =
                        if k < 50 then "pre"
                        elif k <= 200 then "window"
                        else "post"

                    let high = (k >= 60 && k < 81) || (k >= 100 && k < 122) || (k >= 140 && k < 158)
                    t, seg, "0x321", 0, (if high then "0000000000020000" else "0000000000000000")
            ]

            let _, dir =
                completed (runTool CanBitwatch.tool (writeCsv rows) [ "output_prefix", "hunt" ] CancellationToken.None)

            Expect.equal
                (lines dir "hunt.candidates_window_only.csv")
                [ "address,global_idx,toggles"; "0x321,41,6" ]
                "candidate"

            Expect.equal
                (lines dir "hunt.accel_hunt.csv")
                [
                    "address,global_idx,pulses,valid_three_2s"
                    "0x321,41,\"[2.1, 2.2, 1.8]\",True"
                ]
                "pulses"

            let perAddress = json (Path.Combine(dir, "hunt.per_address.json"))
            let window = perAddress.GetProperty("0x321").GetProperty("window")
            Expect.equal (window.GetProperty("unique_payloads").GetInt32()) 2 "two payloads in the window"
        }
        test "a log input with a window gives the same counts as its rlog-to-csv CSV" {
            let window = [ "window_start", "4.5"; "window_dur", "5" ]

            let _, csvDir =
                completed (runTool RlogToCsv.tool (defaultLog ()) window CancellationToken.None)

            let csv = Path.Combine(csvDir, RlogToCsv.OutputName)
            let watch = "watch", "0x390:B6b5"

            let _, fromCsv =
                completed (runTool CanBitwatch.tool csv [ watch; "window_start", "4.5" ] CancellationToken.None)

            let _, fromLog =
                completed (runTool CanBitwatch.tool (defaultLog ()) (watch :: window) CancellationToken.None)

            Expect.equal (lines fromLog "analysis.counts.csv") (lines fromCsv "analysis.counts.csv") "same counts"
            Expect.equal (lines fromLog "analysis.bit_edges.csv") (lines fromCsv "analysis.bit_edges.csv") "same edges"

            let edges = lines fromLog "analysis.bit_edges.csv" |> List.tail
            // Left blinker: 4 flashes from 5.0 s, 2 edges each, inside the window (bus 0 only).
            Expect.equal (edges |> List.filter (fun l -> l.EndsWith ",window")).Length 8 "blinker flashes in the window"
            Expect.isTrue (edges |> List.forall (fun l -> l.StartsWith "0x390,6,5,2,50,")) "watched bit"
        }
        test "bad input is named: a log without a window, a path as prefix, a bad watch spec" {
            match runTool CanBitwatch.tool (defaultLog ()) [] CancellationToken.None with
            | Error(ToolError.InvalidParameters _ as e), _, _ ->
                Expect.stringContains (ToolError.describe e) "window_start" "needs a window"
            | other, _, _ -> failtestf "%A" other

            match
                Parameters.validateFor CanBitwatch.tool [
                    "output_prefix", ParameterInput.Text "../../etc/x"
                    "watch", ParameterInput.Text "0x123:b7"
                ]
            with
            | Error errors -> Expect.equal (errors |> List.map _.Parameter) [ "output_prefix"; "watch" ] "both"
            | Ok _ -> failtest "accepted"

            let bad = writeCsv [ 1.0, "middle", "0x1", 0, "00" ]

            match runTool CanBitwatch.tool bad [] CancellationToken.None with
            | Error(ToolError.InputInvalid reason), _, _ -> Expect.stringContains reason "frames.csv:2" "file and line"
            | other, _, _ -> failtestf "%A" other
        }
        testProperty
            "pulses lie inside the window, rise before fall, and validity means three of 2 ± 0.5 s"
            (fun (steps: (PositiveInt * bool) list) ->
                let mutable t = 0.0

                let transitions = [
                    for PositiveInt dt, v in steps do
                        t <- t + float (dt % 40) / 10.0
                        t, v
                ]

                let ps = CanBitwatch.pulses 2.0 20.0 false transitions

                ps |> List.forall (fun p -> p.Rise >= 2.0 && p.Fall <= 20.0 && p.Rise <= p.Fall)
                && CanBitwatch.validThree ps =
                    (ps.Length = 3
                     && ps
                        |> List.forall (fun p -> p.Fall - p.Rise >= 1.5 - 1e-9 && p.Fall - p.Rise <= 2.5 + 1e-9)))
    ]



let exports =
    testList "signal-export and log-summary" [
        test "signals and fields on one grid, zero-order held" {
            let output, dir =
                completed (
                    runTool
                        SignalExport.tool
                        (defaultLog ())
                        [
                            "dbc", CruiseTool.DefaultDbc
                            "signals", "Cruise_Buttons.Set,0x13A.FL"
                            "fields", "carState.vEgo"
                            "rate_hz", "100"
                        ]
                        CancellationToken.None
                )

            Expect.equal output.Artifacts [ "signals.csv" ] "artifact"
            let lines = File.ReadAllLines(Path.Combine(dir, "signals.csv"))
            Expect.equal lines[0] "time_s,log_mono_time_ns,Cruise_Buttons.Set,0x13A.FL,carState.vEgo" "header"
            let rows = lines[1..] |> Array.map (fun l -> l.Split(','))
            Expect.equal rows.Length 6001 "60 s at 100 Hz, both ends included"

            let at (t: float) =
                rows |> Array.find (fun r -> abs (float r[0] - t) < 1e-9)
            // The Set press of the truth is at +28.007 s (held for about 0.2 s).
            Expect.equal (at 28.0).[2] "0" "before the press"
            Expect.equal (at 28.02).[2] "1" "during the press"

            Expect.isTrue
                (rows |> Array.skip 10 |> Array.forall (fun r -> r[3] <> "" && r[4] <> ""))
                "held after the first sample"
        }
        test "align_to uses one column's own timestamps; JSON lines keep types" {
            let _, dir =
                completed (
                    runTool
                        SignalExport.tool
                        (defaultLog ())
                        [
                            "fields", "pandaStates[0].controlsAllowed,carState.vEgo"
                            "align_to", "pandaStates[0].controlsAllowed"
                            "format", "jsonl"
                        ]
                        CancellationToken.None
                )

            let rows =
                File.ReadAllLines(Path.Combine(dir, "signals.jsonl"))
                |> Array.map (fun l -> JsonDocument.Parse(l).RootElement)

            let t = truth (synthetic [ "default.truth.json" ])
            let panda = t.GetProperty("expected_per_file").Item(0).GetProperty("panda")

            Expect.equal
                rows.Length
                (panda.GetProperty("pandaStates_events").GetInt32())
                "one row per pandaStates event"

            let changes =
                rows
                |> Array.pairwise
                |> Array.filter (fun (a, b) ->
                    a.GetProperty("pandaStates[0].controlsAllowed").GetInt32()
                    <> b.GetProperty("pandaStates[0].controlsAllowed").GetInt32())
                |> Array.map (fun (_, b) -> b.GetProperty("log_mono_time_ns").GetInt64())

            Expect.equal
                (List.ofArray changes)
                (items (panda.GetProperty "controlsAllowed_changes") |> List.tail |> List.map tNs)
                "controlsAllowed changes at the truth's times"

            Expect.equal (rows[5].GetProperty("carState.vEgo").ValueKind) JsonValueKind.Number "numbers stay numbers"
        }
        testProperty
            "zero-order hold: each grid time gets the latest sample at or before it"
            (fun (samples: (int * int) list) (grid: int list) ->
                let samples =
                    samples
                    |> List.map (fun (t, v) -> int64 (abs t % 1000), Cell.I(int64 v))
                    |> List.sortBy fst
                    |> Array.ofList

                let grid =
                    grid |> List.map (fun t -> int64 (abs t % 1000)) |> List.sort |> Array.ofList

                let held = SignalExport.hold grid samples

                Array.forall2
                    (fun (g: int64) (h: Cell) ->
                        match samples |> Array.filter (fun (t, _) -> t <= g) |> Array.tryLast with
                        | Some(_, v) -> h = v
                        | None -> h = Cell.Empty)
                    grid
                    held)
        test "bad names are reported: message, signal, service, missing dbc" {
            let failsWith given (text: string) =
                match runTool SignalExport.tool (defaultLog ()) given CancellationToken.None with
                | Error(ToolError.InvalidFile _ | ToolError.InvalidParameters _ as e), _, _ ->
                    Expect.stringContains (ToolError.describe e) text text
                | other, _, _ -> failtestf "%A" other

            failsWith [ "dbc", CruiseTool.DefaultDbc; "signals", "No_Such.X" ] "no message 'No_Such'"
            failsWith [ "dbc", CruiseTool.DefaultDbc; "signals", "Wheel_Speeds.XX" ] "no signal 'XX'"
            failsWith [ "fields", "carStat.vEgo" ] "no service 'carStat'"

            match
                Parameters.validateFor SignalExport.tool [
                    "signals", ParameterInput.Text "Wheel_Speeds.FL"
                    "rate_hz", ParameterInput.Text "5"
                    "align_to", ParameterInput.Text "x"
                ]
            with
            | Error errors ->
                Expect.equal (errors |> List.map _.Parameter) [ "dbc"; "align_to" ] "dbc missing, both grids"
            | Ok _ -> failtest "accepted"
        }
        test "log-summary: the log info facts plus per-address rates" {
            let _, dir =
                completed (runTool LogSummary.tool (defaultLog ()) [] CancellationToken.None)

            let s = json (Path.Combine(dir, "log_summary.json"))
            let t = truth (synthetic [ "default.truth.json" ])
            let expected = t.GetProperty("expected_per_file").Item(0)

            Expect.equal
                (s.GetProperty("can_frames").GetInt64())
                (expected.GetProperty("can_frames").GetInt64())
                "frames"

            let rates = s.GetProperty("can_rates").EnumerateArray() |> List.ofSeq

            Expect.equal
                (rates |> List.sumBy (fun r -> r.GetProperty("frames").GetInt64()))
                (s.GetProperty("can_frames").GetInt64())
                "rates cover every frame"

            let counts =
                rates
                |> List.map (fun r ->
                    $"""{r.GetProperty("address").GetString()}/{r.GetProperty("bus").GetInt32()}""",
                    r.GetProperty("frames").GetInt64())
                |> Map.ofList

            let truthCounts =
                expected.GetProperty("message_counts_by_address_src").EnumerateObject()
                |> Seq.map (fun p -> p.Name, p.Value.GetInt64())
                |> Map.ofSeq

            Expect.equal counts truthCounts "per (address, bus)"

            let wheel =
                rates |> List.find (fun r -> r.GetProperty("address").GetString() = "0x13A")

            Expect.floatClose Accuracy.low (wheel.GetProperty("hz").GetDouble()) 50.0 "Wheel_Speeds at 50 Hz"

            Expect.stringContains
                (File.ReadAllText(Path.Combine(dir, "log_summary.html")))
                "0x13A"
                "HTML lists addresses"
        }
    ]

let all = testList "Tools (bitwatch, export)" [ bitwatch; exports ]
