namespace CtsLite.Tools

open System
open System.Text.Json.Nodes
open CtsLite.Can

/// A table cell: CSV prints it, the JSON twin keeps its type; `Empty` is an empty cell / null.
[<RequireQualifiedAccess>]
type internal Cell =
    | S of string
    | N of value: float * decimals: int
    | I of int64
    /// A float printed with 15 significant digits (hides binary noise such as 48.507000000000005).
    | F of float
    | Empty

/// One table artifact: CSV and JSON rows from the same cells.
type internal Table = {
    Name: string
    Columns: string list
    Rows: Cell list list
}

/// The cruise-control analyzer's tables (schema v1) and summary.
[<RequireQualifiedAccess>]
module internal CruiseArtifacts =

    /// A cell's CSV text.
    let text (c: Cell) =
        match c with
        | Cell.S s -> s
        | Cell.N(v, d) -> Format.decimals d v
        | Cell.I i -> string i
        | Cell.F v -> v.ToString("G15", Globalization.CultureInfo.InvariantCulture)
        | Cell.Empty -> ""

    /// A cell's JSON value.
    let json (c: Cell) : JsonNode =
        match c with
        | Cell.S s -> Artifacts.str s
        | Cell.N(v, d) -> Artifacts.num (Math.Round(v, d))
        | Cell.I i -> Artifacts.int i
        | Cell.F v when Double.IsFinite v ->
            Artifacts.num (
                Double.Parse(
                    v.ToString("G15", Globalization.CultureInfo.InvariantCulture),
                    Globalization.CultureInfo.InvariantCulture
                )
            )
        | Cell.F v -> Artifacts.str (v.ToString(Globalization.CultureInfo.InvariantCulture))
        | Cell.Empty -> null

    /// The CSV lines of a table's rows.
    let csvRows (t: Table) : string list seq = t.Rows |> Seq.map (List.map text)

    /// The JSON array of a table's rows (objects keyed by column).
    let jsonRows (t: Table) : JsonNode =
        Artifacts.arr [
            for row in t.Rows -> Artifacts.obj (List.zip t.Columns (row |> List.map json))
        ]

    /// The six bit columns (bit_global … label_msb), empty when no bit applies.
    let bitCells (bit: int option) : Cell list =
        match bit with
        | Some b -> [
            Cell.I(int64 b)
            Cell.I(int64 (b / 8))
            Cell.I(int64 (b % 8))
            Cell.I(int64 (7 - b % 8))
            Cell.S(Bits.lsbLabel b)
            Cell.S(Bits.msbLabel b)
          ]
        | None -> List.replicate 6 Cell.Empty

    let private bitColumns = [ "bit_global"; "byte_index"; "bit_lsb"; "bit_msb"; "label_lsb"; "label_msb" ]

    let private timeCells (t: LogTime) = [ Cell.N(t.Abs, 3); Cell.N(t.Rel, 3); Cell.S(Format.mmss t.Rel) ]

    let private speedCell (s: float option) =
        match s with
        | Some v -> Cell.N(v, 3)
        | None -> Cell.Empty

    /// `counts_by_segment.csv`: activity per (address, bus) before, inside and after the marker
    /// windows, summed over the windows; delta desc, window desc, address asc.
    let countsBySegment (a: CruiseAnalysis) : Table = {
        Name = "counts_by_segment"
        Columns = [
            "address_hex"
            "bus"
            "pre_count"
            "window_count"
            "post_count"
            "delta"
            "uniq_pre"
            "uniq_window"
            "uniq_post"
        ]
        Rows =
            a.SegmentCounts
            |> List.sortBy (fun c -> -c.Delta, -c.Window, c.Address, c.Bus)
            |> List.map (fun c -> [
                Cell.S(Format.address c.Address)
                Cell.I(int64 c.Bus)
                Cell.I(int64 c.Pre)
                Cell.I(int64 c.Window)
                Cell.I(int64 c.Post)
                Cell.I(int64 c.Delta)
                Cell.I(int64 c.UniquePre)
                Cell.I(int64 c.UniqueWindow)
                Cell.I(int64 c.UniquePost)
            ])
    }

    /// `candidates.csv`: the top 10 bits by toggles of each target address; score desc.
    let candidates (a: CruiseAnalysis) : Table = {
        Name = "candidates"
        Columns =
            [ "address_hex" ]
            @ bitColumns
            @ [ "score"; "rises_set"; "falls_end"; "toggles"; "penalty"; "bus" ]
        Rows =
            a.Candidates
            |> List.sortBy (fun c -> -c.Score, Format.address c.Address, c.Bit)
            |> List.map (fun c ->
                [ Cell.S(Format.address c.Address) ]
                @ bitCells (Some c.Bit)
                @ [
                    Cell.N(c.Score, 3)
                    Cell.I(int64 c.Rises)
                    Cell.I(int64 c.Falls)
                    Cell.I(int64 c.Toggles)
                    Cell.N(c.Penalty, 3)
                    Cell.I(int64 c.Bus)
                ])
    }

    /// Every edge the analysis reports: button presses (rise) and cruise activation changes.
    let allEdges (a: CruiseAnalysis) : SignalEdge list =
        a.SetPresses
        @ a.ResumePresses
        @ a.MainPresses
        @ a.CruiseActivations
        @ a.CruiseDeactivations
        |> List.sortBy (fun e -> e.Time.Ns, Format.address e.Address, e.Bit)

    /// `edges.csv`.
    let edges (keep: float -> bool) (a: CruiseAnalysis) : Table = {
        Name = "edges"
        Columns =
            [ "address_hex" ]
            @ bitColumns
            @ [ "ts_abs"; "ts_rel"; "ts_mmss"; "edge_type"; "speed_mph"; "bus" ]
        Rows = [
            for e in allEdges a do
                if keep e.Time.Rel then
                    [ Cell.S(Format.address e.Address) ]
                    @ bitCells e.Bit
                    @ timeCells e.Time
                    @ [
                        Cell.S(if e.Rising then "rise" else "fall")
                        speedCell e.SpeedMph
                        Cell.I(int64 e.Bus)
                    ]
        ]
    }

    let private intervalColumns =
        [ "address_hex" ]
        @ bitColumns
        @ [
            "start_abs"
            "start_rel"
            "start_mmss"
            "end_abs"
            "end_rel"
            "end_mmss"
            "duration_s"
            "duration_mmss"
            "bus"
        ]

    let private intervalRow (address: uint32) (bit: int option) (bus: int) (s: LogTime) (e: LogTime option) =
        [ Cell.S(Format.address address) ]
        @ bitCells bit
        @ timeCells s
        @ (match e with
           | Some e -> timeCells e @ [ Cell.N(e.Rel - s.Rel, 3); Cell.S(Format.mmss (e.Rel - s.Rel)) ]
           | None -> List.replicate 5 Cell.Empty)
        @ [ Cell.I(int64 bus) ]

    /// The blinker bits' DBC positions.
    type BlinkerBits = {
        Left: int option
        Right: int option
        Bus: int
    }

    /// `runs.csv`: the marker windows (left-on to right-on; a partial window has no end);
    /// duration desc, partial last.
    let runs (keep: float -> bool) (blinkers: BlinkerBits) (a: CruiseAnalysis) : Table = {
        Name = "runs"
        Columns = intervalColumns
        Rows =
            a.MarkerWindows
            |> List.filter (fun w -> keep w.Start.Rel || keep w.Stop.Rel)
            |> List.sortBy (fun w -> w.Partial, -(w.Stop.Rel - w.Start.Rel), w.Start.Ns)
            |> List.map (fun w ->
                intervalRow
                    CtsLite.Can.Subaru.DashlightsAddress
                    blinkers.Left
                    blinkers.Bus
                    w.Start
                    (if w.Partial then None else Some w.Stop))
    }

    /// `engaged_intervals.csv`: where the `engaged_bit` is 1 (not widened by the margin).
    let engagedIntervals (bit: CanBit option) (bus: int option) (a: CruiseAnalysis) : Table = {
        Name = "engaged_intervals"
        Columns = intervalColumns
        Rows =
            match bit, bus with
            | Some { Address = address; Bit = b }, Some bus ->
                a.EngagedIntervals
                |> List.map (fun i -> intervalRow address (Some b) bus i.Start (Some i.End))
            | _ -> []
    }

    /// `timeline.csv`: every event of the analysis in time order.
    let timeline
        (keep: float -> bool)
        (blinkers: BlinkerBits)
        (engagedBit: CanBit option)
        (engagedBus: int option)
        (speedBus: int option)
        (a: CruiseAnalysis)
        : Table =
        let row
            (t: LogTime)
            (address: uint32)
            (bit: int option)
            (event: string)
            (value: Cell)
            (speed: float option)
            bus
            =
            t,
            Format.address address,
            event,
            timeCells t
            @ [ Cell.S(Format.address address) ]
            @ bitCells bit
            @ [ Cell.S event; value; speedCell speed; bus ]

        let busCell (b: int option) =
            match b with
            | Some b -> Cell.I(int64 b)
            | None -> Cell.Empty

        let speedAt (t: LogTime) =
            CruiseControl.nearestSpeed a.Speeds t.Ns

        let rows = [
            for w in a.MarkerWindows do
                row
                    w.Start
                    Subaru.DashlightsAddress
                    blinkers.Left
                    "marker_start"
                    (Cell.I 1L)
                    (speedAt w.Start)
                    (Cell.I(int64 blinkers.Bus))

                if not w.Partial then
                    row
                        w.Stop
                        Subaru.DashlightsAddress
                        blinkers.Right
                        "marker_end"
                        (Cell.I 1L)
                        (speedAt w.Stop)
                        (Cell.I(int64 blinkers.Bus))

            for e in a.TargetSpeedEvents do
                row
                    e.Start
                    Subaru.WheelSpeedsAddress
                    None
                    "target_speed_start"
                    Cell.Empty
                    (speedAt e.Start)
                    (busCell speedBus)

                row
                    e.End
                    Subaru.WheelSpeedsAddress
                    None
                    "target_speed_end"
                    Cell.Empty
                    (speedAt e.End)
                    (busCell speedBus)

            for e in allEdges a do
                let name =
                    match e.Signal, e.Rising with
                    | "Set", _ -> "set_press"
                    | "Resume", _ -> "resume_press"
                    | "Main", _ -> "main_press"
                    | _, true -> "cruise_activated"
                    | _, false -> "cruise_deactivated"

                row e.Time e.Address e.Bit name (Cell.I(if e.Rising then 1L else 0L)) e.SpeedMph (Cell.I(int64 e.Bus))

            match engagedBit with
            | Some { Address = address; Bit = bit } ->
                for i in a.EngagedIntervals do
                    row i.Start address (Some bit) "engaged_start" (Cell.I 1L) (speedAt i.Start) (busCell engagedBus)
                    row i.End address (Some bit) "engaged_end" (Cell.I 0L) (speedAt i.End) (busCell engagedBus)
            | None -> ()
        ]

        {
            Name = "timeline"
            Columns =
                [ "ts_abs"; "ts_rel"; "ts_mmss"; "address_hex" ]
                @ bitColumns
                @ [ "event"; "value"; "speed_mph"; "bus" ]
            Rows =
                rows
                |> List.filter (fun (t, _, _, _) -> keep t.Rel)
                |> List.sortBy (fun (t, address, event, _) -> t.Ns, address, event)
                |> List.map (fun (_, _, _, cells) -> cells)
        }

    let private timeJson (prefix: string) (t: LogTime) = [
        $"{prefix}abs", Artifacts.num t.Abs
        $"{prefix}rel", Artifacts.num t.Rel
    ]

    let private edgeJson (lo: float) (hi: float) (e: SignalEdge) : JsonNode =
        Artifacts.obj [
            yield! timeJson "ts_" e.Time
            "log_mono_time_ns", Artifacts.int e.Time.Ns
            "address", Artifacts.str (Format.address e.Address)
            "bus", Artifacts.int (int64 e.Bus)
            "signal", Artifacts.str e.Signal
            "speed_mph", (e.SpeedMph |> Option.map Artifacts.num |> Option.toObj)
            "speed_in_band",
            (e.SpeedMph
             |> Option.map (fun v -> Artifacts.bool (v >= lo && v <= hi))
             |> Option.toObj)
        ]

    /// `summary.json`: the findings in one object.
    let summary (settings: CruiseSettings) (a: CruiseAnalysis) : JsonNode =
        let edgesJson =
            List.map (edgeJson settings.SpeedMin settings.SpeedMax) >> Artifacts.arr

        Artifacts.obj [
            "set_presses", edgesJson a.SetPresses
            "resume_presses", edgesJson a.ResumePresses
            "main_presses", edgesJson a.MainPresses
            "cruise_activations", edgesJson a.CruiseActivations
            "target_speed_events",
            Artifacts.arr [
                for e in a.TargetSpeedEvents ->
                    Artifacts.obj [
                        yield! timeJson "start_" e.Start
                        yield! timeJson "end_" e.End
                        "duration_s", Artifacts.num (e.End.Rel - e.Start.Rel)
                        "end_reason",
                        Artifacts.str (
                            if e.EndsAtLastSample then
                                "last sample"
                            else
                                "first out-of-band sample"
                        )
                        "samples", Artifacts.int (int64 e.Samples)
                        "min_mph", Artifacts.num e.MinMph
                        "max_mph", Artifacts.num e.MaxMph
                    ]
            ]
            "marker_windows",
            Artifacts.arr [
                for w, activity in List.zip a.MarkerWindows a.WindowActivity ->
                    Artifacts.obj [
                        yield! timeJson "start_" w.Start
                        yield! timeJson "stop_" w.Stop
                        yield! timeJson "window_start_" w.WindowStart
                        yield! timeJson "window_end_" w.WindowEnd
                        "partial", Artifacts.bool w.Partial
                        "most_changed",
                        Artifacts.arr [
                            for x in List.truncate 10 activity ->
                                Artifacts.obj [
                                    "address", Artifacts.str (Format.address x.Address)
                                    "bus", Artifacts.int (int64 x.Bus)
                                    "messages", Artifacts.int (int64 x.Messages)
                                    "changes", Artifacts.int (int64 x.Changes)
                                    "top_bits",
                                    Artifacts.arr [
                                        for struct (bit, n) in x.TopBits ->
                                            Artifacts.obj [
                                                "bit", Artifacts.int (int64 bit)
                                                "flips", Artifacts.int (int64 n)
                                            ]
                                    ]
                                ]
                        ]
                    ]
            ]
            "message_counts",
            Artifacts.obj [
                for c in a.MessageCounts -> $"{Format.address c.Key.Address}/{c.Key.Bus}", Artifacts.int c.Frames
            ]
            "integrity",
            Artifacts.obj [
                "frames_checksum_checked", Artifacts.int a.Integrity.FramesChecksumChecked
                "bad_checksum_count", Artifacts.int a.Integrity.BadChecksumCount
                "frames_with_bad_checksum",
                Artifacts.arr [
                    for b in a.Integrity.BadChecksums ->
                        Artifacts.obj [
                            yield! timeJson "ts_" b.Time
                            "address", Artifacts.str (Format.address b.Address)
                            "bus", Artifacts.int (int64 b.Bus)
                            "hex", Artifacts.str b.Payload
                        ]
                ]
                "frames_counter_checked", Artifacts.int a.Integrity.FramesCounterChecked
                "counter_discontinuities", Artifacts.int a.Integrity.CounterDiscontinuities
                "frames_skipped",
                Artifacts.arr [
                    for s in a.Integrity.SkippedFrames ->
                        Artifacts.obj [
                            "address", Artifacts.str (Format.address s.Key.Address)
                            "bus", Artifacts.int (int64 s.Key.Bus)
                            "count", Artifacts.int s.Frames
                            "first_reason", Artifacts.str s.FirstReason
                        ]
                ]
                "log_warnings", Artifacts.strings a.Warnings
                "truncated_by_max_events", Artifacts.bool a.Truncated
            ]
        ]
