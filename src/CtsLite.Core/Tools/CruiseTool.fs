namespace CtsLite.Tools

open System
open System.IO
open System.Reflection
open System.Text.Json.Nodes
open CtsLite
open CtsLite.Can
open CtsLite.Logs

/// `cruise-control-analyzer`: Subaru Set presses, target-speed events, marker windows, candidate bits.
[<RequireQualifiedAccess>]
module internal CruiseTool =

    /// The DBC used when the `dbc` parameter is not given (embedded in CtsLite.Core).
    [<Literal>]
    let DefaultDbc = ToolSupport.SubaruDbc

    let private spec = ParameterSpec.create

    let descriptor: ToolDescriptor = {
        Id = "cruise-control-analyzer"
        Name = "Cruise Control Analyzer"
        Description =
            "Subaru cruise control from a log or route: Set/Resume/Main presses, cruise activations, time in a target speed band, blinker-marked windows with per-address activity, candidate CAN bits; CSV/JSON tables, summary.json and an HTML report."
        Category = ToolCategory.Analyzer
        Parameters = [
            spec "speed_min" ParameterType.Float (Some(ParameterValue.Float 55.0)) "Minimum target speed in MPH"
            spec "speed_max" ParameterType.Float (Some(ParameterValue.Float 56.0)) "Maximum target speed in MPH"
            {
                spec
                    "marker_type"
                    ParameterType.Str
                    (Some(ParameterValue.Str "blinkers"))
                    "Marker strategy: blinkers (left on starts a window, right on ends it) or none" with
                    Choices = [ "blinkers"; "none" ]
            }
            {
                spec
                    "marker_pre"
                    ParameterType.Float
                    (Some(ParameterValue.Float 1.5))
                    "Seconds added before a marker start" with
                    Min = Some 0.0
            }
            {
                spec
                    "marker_post"
                    ParameterType.Float
                    (Some(ParameterValue.Float 1.5))
                    "Seconds added after a marker stop" with
                    Min = Some 0.0
            }
            {
                spec
                    "marker_timeout"
                    ParameterType.Float
                    (Some(ParameterValue.Float 15.0))
                    "Maximum seconds from left-blinker-on to right-blinker-on" with
                    Min = Some 0.0
            }
            spec
                "engaged_bit"
                ParameterType.Str
                None
                "Bit marking 'engaged': 0xADDR:bN (global LSB index) or 0xADDR:B<byte>b<msb>; legacy 0xADDR:MSB Bnn (bit 63-nn)"
            {
                spec "engaged_bus" ParameterType.Int None "Bus of the engaged bit (default: the address's default bus)" with
                    Min = Some 0.0
                    Max = Some 255.0
            }
            {
                spec
                    "engaged_mode"
                    ParameterType.Str
                    (Some(ParameterValue.Str "annotate"))
                    "annotate: report engaged intervals; filter: keep only edges, runs, timeline rows and bit statistics inside them" with
                    Choices = [ "annotate"; "filter" ]
            }
            {
                spec
                    "engaged_margin"
                    ParameterType.Float
                    (Some(ParameterValue.Float 0.5))
                    "Seconds that widen each engaged interval on both sides (filter mode)" with
                    Min = Some 0.0
            }
            spec
                "dbc"
                ParameterType.File
                (Some(ParameterValue.File DefaultDbc))
                "DBC with the Subaru messages: an upload id or a path (default: the built-in opendbc Subaru global DBC)"
            {
                spec
                    "bus"
                    ParameterType.Int
                    None
                    "Bus for every analysed address (default per address: most frames, receive buses first)" with
                    Min = Some 0.0
                    Max = Some 255.0
            }
            {
                spec "max_events" ParameterType.Int None "Stop after this many events (default: the whole input)" with
                    Min = Some 1.0
            }
        ]
        InputTypes = [ "rlog"; "qlog"; "route" ]
        OutputTypes = [ "csv"; "json"; "html" ]
    }

    let private check (p: ToolParameters) : ParameterError list = [
        match p.Float "speed_min", p.Float "speed_max" with
        | Some lo, Some hi when lo > hi -> {
            Parameter = "speed_max"
            Detail = $"must not be below speed_min ({lo})"
          }
        | _ -> ()

        match p.Str "engaged_bit" with
        | Some s ->
            match Bits.parseSelector s with
            | Error e -> {
                Parameter = "engaged_bit"
                Detail = e
              }
            | Ok _ -> ()
        | None -> ()
    ]

    /// The settings of a validated parameter set.
    let settings (p: ToolParameters) : CruiseSettings = {
        SpeedMin = p.FloatOf "speed_min"
        SpeedMax = p.FloatOf "speed_max"
        Markers = p.Str "marker_type" <> Some "none"
        MarkerPre = p.FloatOf "marker_pre"
        MarkerPost = p.FloatOf "marker_post"
        MarkerTimeout = p.FloatOf "marker_timeout"
        EngagedBit =
            p.Str "engaged_bit"
            |> Option.bind (fun s ->
                match Bits.parseSelector s with
                | Ok x -> Some x
                | Error _ -> None)
        EngagedBus = p.Int "engaged_bus" |> Option.map int
        EngagedFilter = p.Str "engaged_mode" = Some "filter"
        EngagedMargin = p.FloatOf "engaged_margin"
        Bus = p.Int "bus" |> Option.map int
        MaxEvents = p.Int "max_events"
    }

    /// Reads the input and analyses it (no files written).
    let analyse (ctx: ToolContext) (s: CruiseSettings) (dbc: Database) : Result<CruiseAnalysis, ToolError> =
        match Subaru.ofDatabase dbc with
        | Error e -> Error(ToolError.InvalidFile("dbc", e))
        | Ok decoder ->
            match LogInput.files ctx with
            | Error e -> Error e
            | Ok files ->
                let layout = LogInput.layout ()
                use stream = new CruiseStream(s, decoder, dbc, IntegrityCheck dbc)
                let mutable truncated = false
                let max = s.MaxEvents |> Option.defaultValue Int64.MaxValue

                LogInput.iter ctx files 0.0 80.0 (fun reader ->
                    if stream.Events >= max then
                        truncated <- true
                        false
                    else
                        let m = reader.Message
                        let e = reader.Event
                        let ns = stream.Event(int64 (Event.logMonoTime m layout e))

                        if Event.which m layout e = layout.CanDiscriminant then
                            let mutable frames = CanCursor(m, layout, Event.canBatch m layout e)

                            while frames.MoveNext() do
                                stream.Frame(ns, frames.Address, int frames.Src, frames.Payload)

                        true)
                |> Result.map (fun warnings -> stream.Finish(files, warnings, truncated))

    let private run (ctx: ToolContext) : Result<ToolOutput, ToolError> =
        let p = ctx.Parameters
        let s = settings p

        match ToolSupport.loadDbc ctx "dbc" (p.StrOf "dbc") with
        | Error e -> Error e
        | Ok dbc ->
            match analyse ctx s dbc with
            | Error e -> Error e
            | Ok a ->
                ctx.Cancellation.ThrowIfCancellationRequested()
                let analysisId = Guid.NewGuid().ToString()
                // Hashed on another core while the tables are built (not during the reading, where
                // the decompression thread has that core: measured slower).
                let hashing =
                    Threading.Tasks.Task.Run(fun () -> a.Files |> List.map Artifacts.sha256)

                let busOf address =
                    a.BusByAddress
                    |> List.tryFind (fun k -> k.Address = address)
                    |> Option.map _.Bus

                let signalBit (address: uint32) (name: string) =
                    dbc.TryMessage address
                    |> Option.bind (fun m -> m.Signals |> List.tryFind (fun x -> x.Name = name))
                    |> Option.map _.StartBit

                let blinkers: CruiseArtifacts.BlinkerBits = {
                    Left = signalBit Subaru.DashlightsAddress "LEFT_BLINKER"
                    Right = signalBit Subaru.DashlightsAddress "RIGHT_BLINKER"
                    Bus = busOf Subaru.DashlightsAddress |> Option.defaultValue 0
                }

                let engagedBus = a.EngagedBus
                let keep = CruiseControl.keeps s a.EngagedIntervals

                let warnings = [
                    yield! a.Warnings

                    if a.Truncated then
                        $"stopped after max_events = {s.MaxEvents.Value} events"

                    if a.CanFrames = 0L then
                        "the input has no CAN frames"
                    elif a.Speeds.Length = 0 then
                        "no Wheel_Speeds (0x13A) frames: no speed, no target-speed events"

                    if s.Markers && a.MarkerWindows.IsEmpty then
                        "no marker windows (no left blinker followed by a right blinker within the timeout)"

                    if a.MarkerWindowsDropped > 0 then
                        $"{a.MarkerWindowsDropped} pending marker window(s) dropped by the {s.MarkerTimeout} s timeout"

                    if a.TargetSpeedEvents.IsEmpty && a.Speeds.Length > 0 then
                        $"no speed sample inside {s.SpeedMin}-{s.SpeedMax} mph"

                    match s.EngagedBit with
                    | None -> "no engaged_bit given: engaged_intervals.csv has no rows"
                    | Some { Address = address } when a.EngagedIntervals.IsEmpty ->
                        let bus = engagedBus |> Option.map string |> Option.defaultValue "none"
                        $"the engaged bit never was 1 on {Format.address address} (bus {bus})"
                    | Some _ -> ()

                    if a.Integrity.BadChecksumCount > 0L then
                        $"{a.Integrity.BadChecksumCount} frame(s) with a bad checksum (reported, still used)"

                    for s in a.Integrity.SkippedFrames do
                        $"{s.Frames} frame(s) of {Format.address s.Key.Address} bus {s.Key.Bus} skipped: {s.FirstReason}"
                ]

                for w in warnings |> List.skip a.Warnings.Length do
                    ctx.Log ToolLogLevel.Warning w

                let paramPairs = [ for KeyValue(k, v) in p.Values -> k, Parameters.render v ]

                // Fresh nodes for every use: a JSON node has one parent, and files are written in parallel.
                let paramsJson () = Artifacts.parameters p

                let idBusMap () =
                    Artifacts.obj [
                        for k in a.BusByAddress -> Format.address k.Address, Artifacts.int (int64 k.Bus)
                    ]

                let meta (schema: string) = [
                    "schema_version", Artifacts.str schema
                    "analysis_id", Artifacts.str analysisId
                    "tool_version", Artifacts.str Product.version
                    "input_files", Artifacts.strings (a.Files |> List.map ctx.ShowPath)
                    "input_hashes", Artifacts.strings hashing.Result
                    "time_origin", Artifacts.str "first_event"
                    "time_origin_abs_s", Artifacts.num (float a.FirstNs / 1e9)
                    "speed_band_mph", Artifacts.arr [ Artifacts.num s.SpeedMin; Artifacts.num s.SpeedMax ]
                    "main_source", Artifacts.str "0x146 Cruise_Buttons.Main"
                    "set_source", Artifacts.str "0x146 Cruise_Buttons.Set"
                    "speed_source", Artifacts.str "0x13A Wheel_Speeds (mean of 4 wheels x 0.621371)"
                    "bus_policy",
                    Artifacts.str (
                        match s.Bus with
                        | Some b -> $"fixed: {b}"
                        | None ->
                            "per address: the src with most frames, receive buses (<128) first, ties to the lowest"
                    )
                    "id_bus_map", idBusMap ()
                    "engaged_mode", Artifacts.str (if s.EngagedFilter then "filter" else "annotate")
                    "engaged_bit", (p.Str "engaged_bit" |> Option.map Artifacts.str |> Option.toObj)
                    "engaged_bus", (engagedBus |> Option.map (int64 >> Artifacts.int) |> Option.toObj)
                    "engaged_margin_s", Artifacts.num s.EngagedMargin
                    "engaged_intervals_count", Artifacts.int (int64 a.EngagedIntervals.Length)
                    "scoring",
                    Artifacts.obj [
                        "chatter_penalty_start", Artifacts.int (int64 CruiseControl.PenaltyStart)
                        "chatter_penalty_slope", Artifacts.num CruiseControl.PenaltySlope
                    ]
                    "parameters", paramsJson ()
                ]

                let tables = [
                    CruiseArtifacts.countsBySegment a
                    CruiseArtifacts.candidates a
                    CruiseArtifacts.edges keep a
                    CruiseArtifacts.runs keep blinkers a
                    CruiseArtifacts.timeline keep blinkers s.EngagedBit engagedBus (busOf Subaru.WheelSpeedsAddress) a
                    CruiseArtifacts.engagedIntervals s.EngagedBit engagedBus a
                ]

                let dataFiles =
                    (tables |> List.collect (fun t -> [ $"{t.Name}.csv"; $"{t.Name}.json" ]))
                    @ [ "summary.json"; "config_snapshot.json" ]

                // The configuration (with the input hashes) feeds two files; built once, when the
                // hashes are in.
                let config =
                    lazy
                        (Artifacts.obj [
                            "timestamp", Artifacts.str (DateTimeOffset.UtcNow.ToString "o")
                            "analysis_id", Artifacts.str analysisId
                            "tool_id", Artifacts.str descriptor.Id
                            "tool_version", Artifacts.str Product.version
                            "input", Artifacts.str (ToolInput.describeWith ctx.ShowPath ctx.Input)
                            "input_files",
                            Artifacts.arr [
                                for file, hash in List.zip a.Files hashing.Result ->
                                    Artifacts.obj [
                                        "path", Artifacts.str (ctx.ShowPath file)
                                        "size", Artifacts.int (FileInfo(file).Length)
                                        "sha256", Artifacts.str hash
                                    ]
                            ]
                            "parameters", paramsJson ()
                            "bus_selection", idBusMap ()
                            "marker_config",
                            Artifacts.obj [
                                "marker_type", Artifacts.str (if s.Markers then "blinkers" else "none")
                                "pre_time", Artifacts.num s.MarkerPre
                                "post_time", Artifacts.num s.MarkerPost
                                "timeout", Artifacts.num s.MarkerTimeout
                                "enabled", Artifacts.bool s.Markers
                            ]
                         ]
                         |> Artifacts.jsonText)

                // Every file is independent of the others: written on all cores at once.
                let writes: (unit -> unit) list = [
                    fun () ->
                        let html =
                            CruiseHtml.report
                                s
                                a
                                (ToolInput.describeWith ctx.ShowPath ctx.Input)
                                paramPairs
                                dataFiles
                                warnings
                                config.Value

                        Artifacts.writeWith ctx.OutputDir "analysis_report.html" (fun w -> w.Write html)
                    fun () -> Artifacts.writeWith ctx.OutputDir "config_snapshot.json" (fun w -> w.Write config.Value)
                    fun () ->
                        Artifacts.writeJson ctx.OutputDir "summary.json" (CruiseArtifacts.summary s a)

                        Artifacts.writeWith ctx.OutputDir "summary.analysis_meta.json" (fun w ->
                            w.Write(Artifacts.jsonText (Artifacts.obj (meta "summary.v1"))))
                    for t in tables do
                        fun () ->
                            Artifacts.writeCsv
                                ctx.OutputDir
                                $"{t.Name}.csv"
                                (meta $"{t.Name}.v1")
                                t.Columns
                                (CruiseArtifacts.csvRows t)

                        fun () -> Artifacts.writeJson ctx.OutputDir $"{t.Name}.json" (CruiseArtifacts.jsonRows t)
                ]

                Threading.Tasks.Parallel.ForEach(writes, (fun (write: unit -> unit) -> write ()))
                |> ignore

                ctx.Progress 100.0

                let found =
                    match a.SetPresses with
                    | [] -> "no Set press"
                    | presses -> $"{presses.Length} Set press(es)"

                Ok {
                    Artifacts =
                        [ "analysis_report.html"; "summary.json" ]
                        @ (tables |> List.collect (fun t -> [ $"{t.Name}.csv"; $"{t.Name}.json" ]))
                        @ (tables |> List.map (fun t -> $"{t.Name}.analysis_meta.json"))
                        @ [ "summary.analysis_meta.json"; "config_snapshot.json" ]
                    Summary =
                        $"{found}, {a.TargetSpeedEvents.Length} target-speed event(s), {a.MarkerWindows.Length} marker window(s), {a.CanFrames} CAN frames"
                    Facts = [
                        "set_presses", float a.SetPresses.Length
                        "target_speed_events", float a.TargetSpeedEvents.Length
                        "marker_windows", float a.MarkerWindows.Length
                        "can_frames", float a.CanFrames
                    ]
                    Warnings = warnings
                }

    /// The tool.
    let tool: Tool = {
        Descriptor = descriptor
        Check = check
        Run = run
    }
