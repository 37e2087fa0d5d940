/// CtsLite benchmarks: `dotnet fsi build.fsx bench`. Each benchmark prints throughput and
/// allocations; the figures go into docs/benchmarks.md. Benchmarks measure, tests check.
module CtsLite.Bench.Program

open System
open System.Diagnostics
open System.IO
open Microsoft.AspNetCore.Http
open Microsoft.Extensions.DependencyInjection
open CtsLite.Server
open CtsLite.Server.Http

type Result = {
    Name: string
    Operations: int64
    Seconds: float
    BytesAllocated: int64
}

let private measure (name: string) (iterations: int) (operation: unit -> unit) : Result =
    for _ in 1 .. min 10_000 iterations do
        operation ()

    GC.Collect()
    GC.WaitForPendingFinalizers()
    let allocatedBefore = GC.GetAllocatedBytesForCurrentThread()
    let started = Stopwatch.GetTimestamp()

    for _ in 1..iterations do
        operation ()

    let seconds = Stopwatch.GetElapsedTime(started).TotalSeconds

    {
        Name = name
        Operations = int64 iterations
        Seconds = seconds
        BytesAllocated = GC.GetAllocatedBytesForCurrentThread() - allocatedBefore
    }

let private report (r: Result) =
    let perOp = r.Seconds * 1e9 / float r.Operations
    let opsPerSecond = float r.Operations / r.Seconds
    let bytesPerOp = float r.BytesAllocated / float r.Operations
    printfn "| %-40s | %12.0f | %10.1f | %10.1f |" r.Name opsPerSecond perOp bytesPerOp

/// The `/v1` pipeline dispatching in process: routing, handler and JSON body, no network.
let private pipelineBenchmarks (iterations: int) =
    let dataDir = Path.Combine(Path.GetTempPath(), $"ctslite-bench-{Guid.NewGuid():N}")
    Directory.CreateDirectory dataDir |> ignore

    use store =
        match SqliteStore.openIn dataDir with
        | Ok s -> s
        | Error e -> failwith (StoreError.describe e)

    let context =
        Startup.createContext
            {
                Config.defaults () with
                    DataDir = dataDir
                    // Measures the pipeline, not the limiter's 429s.
                    RateLimitPerMinute = 0
            }
            store
            TimeProvider.System

    let services = ServiceCollection()
    Startup.configureServices context services
    use provider = services.BuildServiceProvider()
    let pipeline = Routes.pipeline Routes.endpoints earlyReturn

    let request (method: string) (path: string) () =
        let ctx = DefaultHttpContext(RequestServices = provider)
        ctx.Request.Method <- method
        ctx.Request.Path <- PathString path
        ctx.Response.Body <- Stream.Null
        (pipeline ctx).GetAwaiter().GetResult() |> ignore

    [
        measure "GET /v1/version (route + JSON)" iterations (request "GET" "/v1/version")
        measure "GET /v1/capabilities (route + JSON)" iterations (request "GET" "/v1/capabilities")
        measure "GET /v1/unknown (404 problem)" iterations (request "GET" "/v1/unknown")
        measure "POST /v1/health (405 problem)" iterations (request "POST" "/v1/health")
    ]

/// Peak resident set size of this process (VmHWM), in MiB.
let private peakRssMiB () =
    File.ReadAllLines "/proc/self/status"
    |> Array.tryFind (fun l -> l.StartsWith "VmHWM:")
    |> Option.map (fun l -> float (l.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) / 1024.0)
    |> Option.defaultValue nan

type LogResult = {
    Name: string
    Seconds: float
    RawBytes: int64
    Events: int64
    Frames: int64
    Allocated: int64
}

/// One pass over `files` at a given depth: 0 decompression only, 1 + framing, tag and
/// logMonoTime of every event, 2 + address, src and payload of every CAN frame.
let private logPass (files: string list) (depth: int) : LogResult =
    let schema = CtsLite.Capnp.Schema.cereal ()
    let layout = CtsLite.Logs.EventLayout.ofSchema schema |> Result.defaultWith failwith
    let options = CtsLite.Capnp.ReaderOptions.Default
    let scratch = Array.zeroCreate<byte>(1 <<< 16)
    let mutable raw = 0L
    let mutable events = 0L
    let mutable frames = 0L
    let mutable checksum = 0UL
    GC.Collect()
    let before = GC.GetAllocatedBytesForCurrentThread()
    let started = Stopwatch.GetTimestamp()

    for file in files do
        match depth with
        | 0 ->
            match CtsLite.Logs.Compression.openFile file options with
            | Ok(stream, _) ->
                use stream = stream
                let mutable n = stream.Read(scratch, 0, scratch.Length)

                while n > 0 do
                    raw <- raw + int64 n
                    n <- stream.Read(scratch, 0, scratch.Length)
            | Error e -> failwith e
        | _ ->
            match CtsLite.Logs.LogReader.Open(file, options) with
            | Ok reader ->
                use reader = reader

                while reader.Next() do
                    let m = reader.Message
                    let e = reader.Event
                    events <- events + 1L

                    checksum <-
                        checksum
                        + CtsLite.Logs.Event.logMonoTime m layout e
                        + uint64 (CtsLite.Logs.Event.which m layout e)

                    if depth >= 2 then
                        let batch = CtsLite.Logs.Event.canBatch m layout e
                        let mutable cursor = CtsLite.Logs.CanCursor(m, layout, batch)

                        while cursor.MoveNext() do
                            let payload = cursor.Payload

                            checksum <-
                                checksum
                                + uint64 cursor.Address
                                + uint64 cursor.Src
                                + uint64 payload.Length
                                + (if payload.Length > 0 then uint64 payload[0] else 0UL)

                            frames <- frames + 1L

                raw <- raw + reader.Position
            | Error e -> failwith e

    let seconds = Stopwatch.GetElapsedTime(started).TotalSeconds
    let allocated = GC.GetAllocatedBytesForCurrentThread() - before

    if checksum = 42UL then
        printfn "(checksum)"

    {
        Name = ""
        Seconds = seconds
        RawBytes = raw
        Events = events
        Frames = frames
        Allocated = allocated
    }

let private logBenchmarks (shared: string) (repeats: int) =
    let rlogs = Path.Combine(shared, "data", "rlogs")

    let rav4 =
        Path.Combine(rlogs, "derived", "comma2k19_rav4_b0c9d2329ad1606b_2018-08-02--08-34-47--40.rlog")

    let subaru = Path.Combine(rlogs, "synthetic", "default.rlog.zst")

    let route = [
        for n in 0..2 ->
            Path.Combine(rlogs, "synthetic", "route", $"5ca1ab1e5ca1ab1e|2025-01-16--07-45-12--{n}", "rlog.zst")
    ]

    // Each measurement reads the files `passes` times (long enough to rise above timer and
    // scheduling noise); the best of `repeats` measurements is reported, per pass.
    let passes = if repeats = 1 then 2 else 10

    let run name files depth =
        logPass files depth |> ignore // warm-up
        let many = List.replicate passes files |> List.concat
        let results = [ for _ in 1..repeats -> logPass many depth ]
        let best = results |> List.minBy (fun r -> r.Seconds)

        {
            best with
                Name = name
                Seconds = best.Seconds / float passes
                RawBytes = best.RawBytes / int64 passes
                Events = best.Events / int64 passes
                Frames = best.Frames / int64 passes
                Allocated = best.Allocated / int64 passes
        }

    let table = [
        for label, files in
            [
                "comma2k19 rlog (zst)", [ rav4 + ".zst" ]
                "Subaru synthetic (zst)", [ subaru ]
            ] do
            run $"{label} (a) zstd only" files 0
            run $"{label} (b) + tag, logMonoTime" files 1
            run $"{label} (c) + CAN frames" files 2
        run "comma2k19 rlog (bz2) (c) + CAN frames" [ rav4 + ".bz2" ] 2
        run "Subaru 1 segment (c)" [ route.Head ] 2
        run "Subaru 3-segment route (c)" route 2
    ]

    printfn ""

    printfn
        "| %-42s | %9s | %9s | %12s | %12s | %8s | %8s |"
        "log pass"
        "ms"
        "MB/s"
        "events/s"
        "frames/s"
        "B/event"
        "B/frame"

    printfn
        "|%s|%s|%s|%s|%s|%s|%s|"
        (String('-', 44))
        (String('-', 11))
        (String('-', 11))
        (String('-', 14))
        (String('-', 14))
        (String('-', 10))
        (String('-', 10))

    for r in table do
        let perSecond (n: int64) =
            if n = 0L then "-" else $"{float n / r.Seconds:N0}"

        let per (n: int64) =
            if n = 0L then "-" else $"{float r.Allocated / float n:F3}"

        printfn
            "| %-42s | %9.1f | %9.1f | %12s | %12s | %8s | %8s |"
            r.Name
            (r.Seconds * 1000.0)
            (float r.RawBytes / 1e6 / r.Seconds)
            (perSecond r.Events)
            (perSecond r.Frames)
            (per r.Events)
            (per r.Frames)

    let find (prefix: string) =
        table |> List.find (fun r -> r.Name.StartsWith prefix)

    for label in [ "comma2k19 rlog (zst)"; "Subaru synthetic (zst)" ] do
        let a = find $"{label} (a)"
        let c = find $"{label} (c)"
        printfn ""
        printfn "%s: (c) / (a) time = %.2f" label (c.Seconds / a.Seconds)

    let one = find "Subaru 1 segment"
    let three = find "Subaru 3-segment"

    printfn
        "Route growth: 1 segment allocates %d B in total, 3 segments %d B (per event %.3f vs %.3f)"
        one.Allocated
        three.Allocated
        (float one.Allocated / float one.Events)
        (float three.Allocated / float three.Events)

    printfn "Peak RSS of the benchmark process: %.1f MiB" (peakRssMiB ())
    (find "Subaru synthetic (zst) (c)").Seconds

/// Whole tool runs in process (reading, analysis, every artifact written), best of `repeats`,
/// against the time to decode the same log with every CAN frame (`decodeSeconds`).
/// Runs one tool `n` times on the 1-minute Subaru rlog with default parameters: a steady load to
/// attach a profiler to (`dotnet-trace collect -- dotnet CtsLite.Bench.dll --tool-loop ID N`).
let private toolLoop (shared: string) (toolId: string) (n: int) =
    let log = Path.Combine(shared, "data", "rlogs", "synthetic", "default.rlog.zst")
    let tool = (CtsLite.Tools.Catalog.tryFind toolId).Value
    let out = Path.Combine(Path.GetTempPath(), $"ctslite-loop-{Guid.NewGuid():N}")
    Directory.CreateDirectory out |> ignore

    let parameters =
        CtsLite.Tools.Parameters.validateFor tool []
        |> Result.defaultWith (failwithf "%A")

    let started = Stopwatch.GetTimestamp()
    let allocated = GC.GetTotalAllocatedBytes true
    let collections = GC.CollectionCount 0

    for i in 1..n do
        match
            tool.Run {
                Input = CtsLite.Tools.ToolInput.Path log
                Parameters = parameters
                // A fresh folder each time, as in the service and the CLI.
                OutputDir = Path.Combine(out, string i)
                Progress = ignore
                Log = fun _ _ -> ()
                Cancellation = Threading.CancellationToken.None
                ResolveFile = Ok
                ShowPath = id
            }
        with
        | Ok _ -> ()
        | Error e -> failwithf "%A" e


    printfn
        "%s: %d runs, %.1f ms, %.1f MB allocated and %.1f gen-0 collections each"
        toolId
        n
        (Stopwatch.GetElapsedTime(started).TotalMilliseconds / float n)
        (float (GC.GetTotalAllocatedBytes true - allocated) / 1e6 / float n)
        (float (GC.CollectionCount 0 - collections) / float n)

    Directory.Delete(out, true)

/// Each tool on the 1-minute Subaru rlog, all artifacts written, each run into a fresh folder (as
/// the service and `cts run` do). Runs alternate with a decode pass (c) of the same log, so each
/// ratio compares two figures taken under the same load; the table gives the best tool time, the
/// best decode time and the median of the paired ratios.
let private toolBenchmarks (shared: string) (repeats: int) =
    let log = Path.Combine(shared, "data", "rlogs", "synthetic", "default.rlog.zst")

    let root =
        Path.Combine(Path.GetTempPath(), $"ctslite-bench-tools-{Guid.NewGuid():N}")

    Directory.CreateDirectory root |> ignore

    let runOnce (tool: CtsLite.Tools.Tool) (given: (string * string) list) =
        let parameters =
            CtsLite.Tools.Parameters.validateFor
                tool
                (given |> List.map (fun (k, v) -> k, CtsLite.Tools.ParameterInput.Text v))
            |> Result.defaultWith (failwithf "%A")

        let out = Path.Combine(root, Guid.NewGuid().ToString("N"))

        let ctx: CtsLite.Tools.ToolContext = {
            Input = CtsLite.Tools.ToolInput.Path log
            Parameters = parameters
            OutputDir = out
            Progress = ignore
            Log = fun _ _ -> ()
            Cancellation = Threading.CancellationToken.None
            ResolveFile = Ok
            ShowPath = id
        }

        let started = Stopwatch.GetTimestamp()

        let seconds =
            match tool.Run ctx with
            | Ok _ -> Stopwatch.GetElapsedTime(started).TotalSeconds
            | Error e -> failwithf "%A" e

        if Directory.Exists out then
            Directory.Delete(out, true)

        seconds

    printfn ""

    printfn
        "| %-52s | %9s | %10s | %15s |"
        "tool run on the 1-minute Subaru rlog (all artifacts)"
        "best ms"
        "decode ms"
        "× decode (med.)"

    printfn "|%s|%s|%s|%s|" (String('-', 54)) (String('-', 11)) (String('-', 12)) (String('-', 17))

    // The analyzer's reading and findings alone (no files): what the analysis costs apart from
    // creating its 22 files, which on some file systems costs more than the analysis.
    let findingsOnly: CtsLite.Tools.Tool =
        let dbc =
            CtsLite.Can.Dbc.parseWith
                CtsLite.Can.Dbc.readFile
                (Path.Combine(shared, "reference", "opendbc", "generated", CtsLite.Tools.CruiseTool.DefaultDbc))
            |> Result.defaultWith (failwithf "%A")

        {
            CtsLite.Tools.CruiseTool.tool with
                Run =
                    fun ctx ->
                        CtsLite.Tools.CruiseTool.analyse ctx (CtsLite.Tools.CruiseTool.settings ctx.Parameters) dbc
                        |> Result.map (fun a -> {
                            Artifacts = []
                            Summary = $"{a.CanFrames} frames"
                            Facts = [ "can_frames", float a.CanFrames ]
                            Warnings = []
                        })
        }

    for name, tool, given in
        [
            "cruise-control-analyzer", CtsLite.Tools.CruiseTool.tool, []
            "analyzer: reading + findings only (no files)", findingsOnly, []
            "rlog-to-csv", CtsLite.Tools.RlogToCsv.tool, []
            "log-summary", CtsLite.Tools.LogSummary.tool, []
            "signal-export (3 signals + 1 field, 100 Hz)",
            CtsLite.Tools.SignalExport.tool,
            [
                "dbc", CtsLite.Tools.CruiseTool.DefaultDbc
                "signals", "Wheel_Speeds.FL,Wheel_Speeds.FR,Cruise_Buttons.Set"
                "fields", "carState.vEgo"
                "rate_hz", "100"
            ]
        ] do
        runOnce tool given |> ignore // warm-up
        logPass [ log ] 2 |> ignore

        let pairs = [
            for _ in 1..repeats ->
                let decode = (logPass [ log ] 2).Seconds
                let run = runOnce tool given
                run, decode
        ]

        let ratios = pairs |> List.map (fun (r, d) -> r / d) |> List.sort
        let median = ratios[ratios.Length / 2]

        printfn
            "| %-52s | %9.1f | %10.1f | %15.2f |"
            name
            ((pairs |> List.map fst |> List.min) * 1000.0)
            ((pairs |> List.map snd |> List.min) * 1000.0)
            median

    Directory.Delete(root, true)

/// Decoding every WHEEL_SPEEDS signal of the real comma2k19 frames (8 signals, Motorola, scaled).
let private signalBenchmark (shared: string) (quick: bool) =
    let dbc =
        Path.Combine(shared, "reference", "opendbc", "generated", "toyota_nodsu_pt_generated.dbc")

    let log =
        Path.Combine(
            shared,
            "data",
            "rlogs",
            "derived",
            "comma2k19_rav4_b0c9d2329ad1606b_2018-08-02--08-34-47--40.rlog.zst"
        )

    let db =
        match CtsLite.Can.Dbc.loadFile dbc with
        | Ok db -> db
        | Error es -> failwithf "%A" es

    let message = db.TryMessage 0xAAu |> Option.get
    let signals = message.Signals |> Array.ofList

    let payloads =
        match CtsLite.Logs.Log.canFrames CtsLite.Capnp.ReaderOptions.Default log with
        | Ok frames ->
            frames
            |> List.filter (fun f -> f.Address = 0xAAu)
            |> List.map (fun f -> f.Payload)
            |> Array.ofList
        | Error e -> failwith e

    let passes = if quick then 20 else 200
    let mutable sum = 0.0

    let run () =
        for _ in 1..passes do
            for p in payloads do
                let span = ReadOnlySpan p

                for s in signals do
                    sum <- sum + (CtsLite.Can.Signal.decode s span).Physical

    run ()
    GC.Collect()
    let before = GC.GetAllocatedBytesForCurrentThread()
    let started = Stopwatch.GetTimestamp()
    run ()
    let seconds = Stopwatch.GetElapsedTime(started).TotalSeconds
    let allocated = GC.GetAllocatedBytesForCurrentThread() - before
    let decodes = float (passes * payloads.Length * signals.Length)
    printfn ""

    printfn
        "| signal decode (WHEEL_SPEEDS, 8 Motorola signals, real frames) | %.1f ns/signal | %.0f signals/s | %.3f B/decode |"
        (seconds * 1e9 / decodes)
        (decodes / seconds)
        (float allocated / decodes)

    if sum = 42.0 then
        printfn "(checksum)"

/// The synthetic segment decompressed in memory, its schema and layout, and each event as
/// (its union discriminant, logMonoTime, the message's bytes): what the monitor benchmarks feed.
let private syntheticSegment (shared: string) =
    let file = Path.Combine(shared, "data", "rlogs", "synthetic", "default.rlog.zst")
    let raw = new MemoryStream()

    do
        use z = new ZstdSharp.DecompressionStream(File.OpenRead file)
        z.CopyTo raw

    let bytes = raw.ToArray()
    let schema = CtsLite.Capnp.Schema.cereal ()
    let layout = CtsLite.Logs.EventLayout.ofSchema schema |> Result.defaultWith failwith

    let messages = [|
        use reader =
            CtsLite.Logs.LogReader.OfStream(
                new MemoryStream(bytes),
                "memory",
                CtsLite.Capnp.ReaderOptions.Default,
                CtsLite.Logs.Compression.Raw
            )

        let mutable at = 0L

        while reader.Next() do
            let which = CtsLite.Logs.Event.which reader.Message layout reader.Event
            let mono = int64 (CtsLite.Logs.Event.logMonoTime reader.Message layout reader.Event)
            yield which, mono, bytes[int at .. int reader.Position - 1]
            at <- reader.Position
    |]

    bytes, schema, layout, messages

/// A monitor's step on real frames: the synthetic segment decompressed once into memory, its
/// events decoded and fed to `can_bus_check` (and, for comparison, only decoded), so the figures
/// are the monitor's ingest rate and its allocation per frame.
let private monitorBenchmark (shared: string) (quick: bool) =
    let bytes, schema, layout, segment = syntheticSegment shared
    let monitor = CtsLite.Monitors.Catalog.tryFind "can_bus_check" |> Option.get

    let parameters =
        CtsLite.Monitors.Catalog.validate monitor []
        |> Result.defaultWith (failwithf "%A")

    let state =
        monitor.Start {
            Parameters = parameters
            ResolveFile = Ok
            Schema = schema
            Layout = layout
        }
        |> Result.defaultWith (failwithf "%A")

    let pass (step: bool) =
        use reader =
            CtsLite.Logs.LogReader.OfStream(
                new MemoryStream(bytes),
                "memory",
                CtsLite.Capnp.ReaderOptions.Default,
                CtsLite.Logs.Compression.Raw
            )

        let mutable frames = 0L

        while reader.Next() do
            let m = reader.Message
            let e = reader.Event

            if CtsLite.Logs.Event.which m layout e = layout.CanDiscriminant then
                frames <- frames + int64 (CtsLite.Logs.Event.canList m layout e).Count

                if step then
                    state.Step(m, e)

        frames

    let frames = pass false

    let measure (step: bool) (passes: int) =
        pass step |> ignore
        GC.Collect()
        let before = GC.GetAllocatedBytesForCurrentThread()
        let started = Stopwatch.GetTimestamp()
        let mutable frames = 0L

        for _ in 1..passes do
            frames <- frames + pass step

        let seconds = Stopwatch.GetElapsedTime(started).TotalSeconds
        let allocated = GC.GetAllocatedBytesForCurrentThread() - before
        float frames / seconds, float allocated / float frames

    let passes = if quick then 3 else 10
    let decodeRate, decodeBytes = measure false passes
    let stepRate, stepBytes = measure true passes
    printfn ""
    printfn "| monitor ingest (1-min synthetic segment, in memory) | frames/s | B/frame |"
    printfn "|---|---:|---:|"
    printfn "| decode only | %.0f | %.3f |" decodeRate decodeBytes
    printfn "| decode + `can_bus_check` step | %.0f | %.3f |" stepRate stepBytes

    // Live: the segment's `can` messages published on loopback as fast as a PUB socket sends them,
    // into `can_bus_check` through the bridge source; frames/s until the last one is counted.
    let canMessages = [|
        for which, _, m in segment do
            if which = layout.CanDiscriminant then
                yield m
    |]

    let repeats = if quick then 3 else 10
    use pub = new NetMQ.Sockets.PublisherSocket()
    pub.Options.SendHighWatermark <- 0
    let canPort = CtsLite.Monitors.Bridge.port "can"
    pub.Bind $"tcp://127.0.0.1:{canPort}"

    let live =
        monitor.Start {
            Parameters = parameters
            ResolveFile = Ok
            Schema = schema
            Layout = layout
        }
        |> Result.defaultWith (failwithf "%A")

    let latest = ref 0L
    let connected = new Threading.ManualResetEventSlim()
    use cancel = new Threading.CancellationTokenSource()

    let emit (m: CtsLite.Monitors.MonitorMessage) =
        match m.Kind with
        | CtsLite.Monitors.MonitorMessageKind.Update -> latest.Value <- m.Data["frames"].GetValue<int64>()
        | CtsLite.Monitors.MonitorMessageKind.SourceStatus when m.Data["status"].GetValue<string>() = "connected" ->
            connected.Set()
        | _ -> ()

    let options: CtsLite.Monitors.BridgeOptions = {
        UpdateMs = 5
        SilentAfter = TimeSpan.FromSeconds 10.0
        Duration = None
        Record = None
        Reader = CtsLite.Capnp.ReaderOptions.Default
        Cancellation = cancel.Token
    }

    let session =
        Threading.Tasks.Task.Run(fun () ->
            CtsLite.Monitors.BridgeSource.run [ "can" ] layout live "127.0.0.1" options emit)

    // The subscriber joins late: one message until it is seen (the count starts after).
    while not (connected.Wait 20) do
        NetMQ.OutgoingSocketExtensions.SendFrame(pub, canMessages[0])

    Threading.Thread.Sleep 200
    let before = latest.Value
    let perPass = frames
    let started = Stopwatch.GetTimestamp()

    for _ in 1..repeats do
        for m in canMessages do
            NetMQ.OutgoingSocketExtensions.SendFrame(pub, m)

    let expected = before + int64 repeats * perPass
    let deadline = DateTime.UtcNow.AddSeconds 60.0

    while latest.Value < expected && DateTime.UtcNow < deadline do
        Threading.Thread.Sleep 1

    let seconds = Stopwatch.GetElapsedTime(started).TotalSeconds
    cancel.Cancel()
    session.Wait()

    printfn
        "| loopback ZMQ bridge → `can_bus_check` (%d × the segment's can messages) | %.0f | %s |"
        repeats
        (float (latest.Value - before) / seconds)
        (if latest.Value = expected then
             "no loss"
         else
             $"LOST {expected - latest.Value} frames")

/// Publish → WebSocket through a real server process: the synthetic segment's `can` and
/// `pandaStates` messages published on loopback at real time (a car's rate, about 3,300 CAN frames
/// a second) into a `can_bus_check` session with 100 ms updates, watched over a WebSocket. Two
/// figures: an update's send to its arrival, and a frame's publish to the first update showing it
/// (at most one update interval plus the service's own delay).
let private sessionLatency (shared: string) (quick: bool) =
    let _, _, layout, segment = syntheticSegment shared

    let pandaStates =
        CtsLite.Logs.Event.discriminantOf layout "pandaStates" |> Option.get

    let messages = [|
        for which, mono, m in segment do
            if which = layout.CanDiscriminant || which = pandaStates then
                yield which = layout.CanDiscriminant, mono, m
    |]

    let dataDir = Directory.CreateTempSubdirectory("ctslite-bench-latency").FullName

    let info =
        ProcessStartInfo("dotnet", [ Path.Combine(AppContext.BaseDirectory, "CtsLite.Server.dll") ])

    info.RedirectStandardOutput <- true
    info.RedirectStandardError <- true
    info.Environment["CTS_API_PORT"] <- "0"
    info.Environment["CTS_DATA_DIR"] <- dataDir
    info.Environment["CTS_LOG_LEVEL"] <- "information"
    use server = Process.Start info
    let url = Threading.Tasks.TaskCompletionSource<string>()

    let watch (line: string) =
        if not (isNull line) then
            let m =
                Text.RegularExpressions.Regex.Match(line, @"listening on (http://127\.0\.0\.1:\d+)")

            if m.Success then
                url.TrySetResult m.Groups[1].Value |> ignore

    server.OutputDataReceived.Add(fun e -> watch e.Data)
    server.ErrorDataReceived.Add(fun e -> watch e.Data)
    server.BeginOutputReadLine()
    server.BeginErrorReadLine()

    try
        if not (url.Task.Wait(TimeSpan.FromSeconds 60.0)) then
            failwith "the server did not start"

        let url = url.Task.Result
        use http = new Net.Http.HttpClient(BaseAddress = Uri url)
        use can = new NetMQ.Sockets.PublisherSocket()
        can.Options.SendHighWatermark <- 0
        let canPort = CtsLite.Monitors.Bridge.port "can"
        can.Bind $"tcp://127.0.0.1:{canPort}"
        use pandas = new NetMQ.Sockets.PublisherSocket()
        pandas.Options.SendHighWatermark <- 0
        let pandasPort = CtsLite.Monitors.Bridge.port "pandaStates"
        pandas.Bind $"tcp://127.0.0.1:{pandasPort}"

        use body =
            new Net.Http.StringContent(
                """{"monitor_id": "can_bus_check", "source": {"type": "zmq", "host": "127.0.0.1"}, "update_ms": 100}""",
                Text.Encoding.UTF8,
                "application/json"
            )

        let created = http.PostAsync("/v1/monitors/start", body).Result
        let text = created.Content.ReadAsStringAsync().Result

        let id =
            Text.Json.JsonDocument.Parse(text).RootElement.GetProperty("session_id").GetString()

        use socket = new Net.WebSockets.ClientWebSocket()

        socket
            .ConnectAsync(
                Uri(url.Replace("http://", "ws://") + $"/v1/monitors/{id}/stream"),
                Threading.CancellationToken.None
            )
            .Wait()

        // (arrival, sent `t`, log time shown, frames) of each update.
        let updates =
            Collections.Concurrent.ConcurrentQueue<float * float * float * int64>()

        let connected = new Threading.ManualResetEventSlim()

        let now () =
            float (DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()) / 1000.0

        let reading =
            Threading.Tasks.Task.Run(fun () ->
                let buffer = Array.zeroCreate<byte>(1 <<< 20)
                let message = new MemoryStream()
                let mutable go = true

                while go do
                    let r =
                        socket.ReceiveAsync(ArraySegment buffer, Threading.CancellationToken.None).Result

                    if r.MessageType = Net.WebSockets.WebSocketMessageType.Close then
                        go <- false
                    else
                        message.Write(buffer, 0, r.Count)

                        if r.EndOfMessage then
                            let at = now ()
                            use doc = Text.Json.JsonDocument.Parse(message.ToArray())
                            message.SetLength 0L
                            let m = doc.RootElement
                            let data = m.GetProperty "data"

                            match m.GetProperty("type").GetString() with
                            | "source_status" when data.GetProperty("status").GetString() = "connected" ->
                                connected.Set()
                            | "update" when data.GetProperty("log_time_s").ValueKind = Text.Json.JsonValueKind.Number ->
                                updates.Enqueue(
                                    at,
                                    m.GetProperty("t").GetDouble(),
                                    data.GetProperty("log_time_s").GetDouble(),
                                    data.GetProperty("frames").GetInt64()
                                )
                            | "end" -> go <- false
                            | _ -> ())

        // ZMQ's subscriber joins late: the first message until the session sees one.
        let _, _, first = messages |> Array.find (fun (isCan, _, _) -> isCan)

        while not (connected.Wait 50) do
            NetMQ.OutgoingSocketExtensions.SendFrame(can, first)

        updates.Clear()
        let seconds = if quick then 10.0 else 30.0
        let _, start, _ = messages[0]
        let clock = Stopwatch.StartNew()
        let published = ResizeArray<float * float>()

        for isCan, mono, m in messages |> Array.filter (fun (_, t, _) -> float (t - start) / 1e9 < seconds) do
            let due = float (mono - start) / 1e9
            let wait = due - clock.Elapsed.TotalSeconds

            if wait > 0.0 then
                Threading.Thread.Sleep(TimeSpan.FromSeconds wait)

            if isCan then
                NetMQ.OutgoingSocketExtensions.SendFrame(can, m)
                published.Add((now (), Math.Round(float mono / 1e9, 3)))
            else
                NetMQ.OutgoingSocketExtensions.SendFrame(pandas, m)

        Threading.Thread.Sleep 500
        http.PostAsync($"/v1/monitors/{id}/stop", null).Result |> ignore
        reading.Wait(TimeSpan.FromSeconds 10.0) |> ignore
        let updates = Array.ofSeq updates

        let delivery =
            updates |> Array.map (fun (at, t, _, _) -> (at - t) * 1000.0) |> Array.sort

        let visible =
            let mutable u = 0

            [|
                for publishedAt, logTime in published do
                    while u < updates.Length && (let _, _, shown, _ = updates[u] in shown < logTime) do
                        u <- u + 1

                    if u < updates.Length then
                        let at, _, _, _ = updates[u]
                        yield (at - publishedAt) * 1000.0
            |]
            |> Array.sort

        let pct (p: float) (xs: float array) =
            xs[min (xs.Length - 1) (int (Math.Ceiling(p * float xs.Length)) - 1)]

        let frames =
            let _, _, _, last = updates[updates.Length - 1]
            let _, _, _, firstSeen = updates[0]
            float (last - firstSeen) / seconds

        printfn ""

        printfn
            "| session latency (real server process, %.0f s at a car's rate: %.0f frames/s, 100 ms updates) | p50 | p99 |"
            seconds
            frames

        printfn "|---|---:|---:|"

        printfn
            "| update sent → WebSocket client (%d updates) | %.1f ms | %.1f ms |"
            delivery.Length
            (pct 0.5 delivery)
            (pct 0.99 delivery)

        printfn
            "| `can` message published → first update showing it (%d messages) | %.1f ms | %.1f ms |"
            visible.Length
            (pct 0.5 visible)
            (pct 0.99 visible)

        printfn "| the same beyond the 100 ms update interval | | %.1f ms |" (pct 0.99 visible - 100.0)
    finally
        if not server.HasExited then
            server.Kill true
            server.WaitForExit 10_000 |> ignore

        try
            Directory.Delete(dataDir, true)
        with _ ->
            ()

[<EntryPoint>]
let main argv =
    let quick = argv |> Array.contains "--quick"
    let iterations = if quick then 20_000 else 500_000

    printfn
        "CtsLite benchmarks (%s, .NET %s, %d cores, %s)"
        (if quick then "quick" else "full")
        (string Environment.Version)
        Environment.ProcessorCount
        (Runtime.InteropServices.RuntimeInformation.OSDescription)

    let httpLoad = argv |> Array.tryFindIndex ((=) "--http-load")
    let vsNative = argv |> Array.contains "--cts"

    if httpLoad.IsNone && not vsNative then
        printfn ""
        printfn "| %-40s | %12s | %10s | %10s |" "benchmark" "ops/s" "ns/op" "B/op"
        printfn "|%s|%s|%s|%s|" (String('-', 42)) (String('-', 14)) (String('-', 12)) (String('-', 12))

        for r in pipelineBenchmarks iterations do
            report r

    let shared =
        match Environment.GetEnvironmentVariable "CTS_SHARED_DIR" with
        | null
        | "" -> Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "..", "shared"))
        | dir -> dir

    if Directory.Exists shared then
        match argv |> Array.tryFindIndex ((=) "--tool-loop"), argv |> Array.tryFindIndex ((=) "--cts") with
        | Some i, _ when i + 2 < argv.Length -> toolLoop shared argv[i + 1] (int argv[i + 2])
        // `--vs-native` (build.fsx installs the packed tool and adds `--cts <its path>`).
        | _, Some i when i + 1 < argv.Length -> VsNative.run shared argv[i + 1] quick
        | _ ->

            if httpLoad.IsSome then
                // `--http-load [seconds]`: only the loopback load (30 s unless given).
                let seconds =
                    argv
                    |> Array.tryItem (httpLoad.Value + 1)
                    |> Option.bind (fun s ->
                        match Double.TryParse(s, Globalization.CultureInfo.InvariantCulture) with
                        | true, v -> Some v
                        | false, _ -> None)
                    |> Option.defaultValue 30.0

                HttpLoad.run shared 64 (TimeSpan.FromSeconds seconds)
            elif argv |> Array.contains "--monitors" then
                monitorBenchmark shared quick
                sessionLatency shared quick
            elif argv |> Array.contains "--tools" then
                toolBenchmarks shared 25
            else
                logBenchmarks shared (if quick then 1 else 5) |> ignore
                toolBenchmarks shared (if quick then 3 else 15)
                signalBenchmark shared quick
                monitorBenchmark shared quick
                sessionLatency shared quick
    else
        eprintfn "log benchmarks skipped: shared data not found at %s (set CTS_SHARED_DIR)" shared

    0
