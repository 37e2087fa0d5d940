namespace CtsLite.Monitors

open System
open System.IO
open System.Text
open System.Text.Json.Nodes
open System.Threading
open NetMQ
open NetMQ.Sockets
open CtsLite.Capnp
open CtsLite.Logs

/// openpilot's ZMQ message bridge: one PUB socket per service on the device.
[<RequireQualifiedAccess>]
module Bridge =

    /// The port of a service: 8023 + (FNV-1a 64 of its UTF-8 name mod (65535 − 8023)), as
    /// openpilot's msgq computes it (`can` → 62300, `carState` → 9041).
    let port (service: string) : int =
        let mutable hash = 0xcbf29ce484222325UL

        for b in Encoding.UTF8.GetBytes service do
            hash <- (hash ^^^ uint64 b) * 0x100000001b3UL

        8023 + int (hash % uint64 (65535 - 8023))

    /// The address a host name or IP resolves to, as a ZMQ endpoint's host part, or why not. The
    /// name is resolved here, once: ZMQ would resolve it on its I/O thread, where a failure is
    /// not the caller's to report.
    let resolve (host: string) : Result<string, string> =
        let show (a: Net.IPAddress) =
            if a.AddressFamily = Net.Sockets.AddressFamily.InterNetworkV6 then
                $"[{a}]"
            else
                string a

        match Net.IPAddress.TryParse host with
        | true, a -> Ok(show a)
        | false, _ when
            host.Length = 0
            || host.Length > 253
            || host |> Seq.exists (fun c -> not (Char.IsLetterOrDigit c || c = '-' || c = '.'))
            ->
            Error
                $"'{host}' is not a host name or IP address (the device's, e.g. 192.168.1.20; no port: each service has its own)"
        | false, _ ->
            try
                match
                    Net.Dns.GetHostAddresses host
                    |> Array.sortBy (fun a ->
                        if a.AddressFamily = Net.Sockets.AddressFamily.InterNetwork then
                            0
                        else
                            1)
                with
                | [||] -> Error $"'{host}' has no address"
                | addresses -> Ok(show addresses[0])
            with :? Net.Sockets.SocketException as e ->
                Error $"cannot resolve '{host}': {e.Message}"

/// How a live session records what it receives.
type RecordOptions = {
    /// The first file; later ones are `…--1.rlog.zst`, `--2` … beside it.
    Path: string
    /// A new file once one holds this many bytes of events.
    MaxBytes: int64
    /// A new file at least this often (openpilot's segments are a minute; None: by size only).
    SegmentLength: TimeSpan option
    /// Called with each file once it is complete and closed, on the source's thread (keep it short).
    Closed: string -> unit
}

/// How a live bridge is watched.
type BridgeOptions = {
    /// An update every this many milliseconds (wall time).
    UpdateMs: int
    /// No message for this long is reported as `silent`.
    SilentAfter: TimeSpan
    /// Stop after this long (None: until cancelled).
    Duration: TimeSpan option
    /// Record what is received to zstd rlogs (None: no recording).
    Record: RecordOptions option
    Reader: ReaderOptions
    Cancellation: CancellationToken
}

/// What a live session received.
type BridgeOutcome = {
    /// Messages decoded and given to the monitor.
    Received: int64
    /// Messages whose event is not their socket's service (counted, never stepped).
    Foreign: int64
    /// Messages that do not decode (counted and skipped).
    Corrupt: int64
    /// The recording's files, in order (empty without recording).
    Recorded: string list
}

/// What a live session received, written as openpilot writes a log: the events back to back,
/// zstd-compressed, a new file when one reaches its size, so any tool can read the drive later
/// (a route's files in order, or joined).
[<AllowNullLiteral>]
type internal Recorder(options: RecordOptions) =
    let path = options.Path
    let files = ResizeArray<string>()
    let mutable file: FileStream = null
    let mutable zstd: ZstdSharp.CompressionStream = null
    let mutable written = 0L
    let mutable opened = DateTime.MinValue

    let close () =
        if not (isNull zstd) then
            zstd.Dispose()
            file.Dispose()
            zstd <- null
            file <- null
            options.Closed files[files.Count - 1]

    let nameOf (n: int) =
        if n = 0 then
            path
        else
            let name = Path.GetFileName path

            let stem, extension =
                match name.IndexOf '.' with
                | -1 -> name, ""
                | dot -> name.Substring(0, dot), name.Substring dot

            Path.Combine(Path.GetDirectoryName(Path.GetFullPath path), $"{stem}--{n}{extension}")

    let openNext () =
        close ()
        let name = nameOf files.Count
        file <- new FileStream(name, FileMode.CreateNew, FileAccess.Write)
        zstd <- new ZstdSharp.CompressionStream(file, 3)
        files.Add name
        written <- 0L
        opened <- DateTime.UtcNow

    /// The files written so far.
    member _.Files: string list = List.ofSeq files

    /// Appends one event message (its segment table and segments, as received).
    member _.Write(message: byte array) =
        let full =
            written > 0L
            && (written + int64 message.Length > options.MaxBytes
                || options.SegmentLength |> Option.exists (fun l -> DateTime.UtcNow - opened >= l))

        if isNull zstd || full then
            openNext ()

        zstd.Write(message, 0, message.Length)
        written <- written + int64 message.Length

    interface IDisposable with
        member _.Dispose() = close ()

/// One message's bytes as the stream a frame reader reads: fed a message at a time, it gives
/// exactly that message's bytes and then nothing.
type private Feed() =
    inherit Stream()
    let mutable bytes: byte array = [||]
    let mutable at = 0

    member _.Set(b: byte array) =
        bytes <- b
        at <- 0

    override _.CanRead = true
    override _.CanSeek = false
    override _.CanWrite = false
    override _.Length = raise (NotSupportedException())

    override _.Position
        with get () = raise (NotSupportedException())
        and set _ = raise (NotSupportedException())

    override _.Flush() = ()

    override _.Read(buffer: byte array, offset: int, count: int) =
        let n = min count (bytes.Length - at)
        Buffer.BlockCopy(bytes, at, buffer, offset, n)
        at <- at + n
        n

    override _.Seek(_, _) = raise (NotSupportedException())
    override _.SetLength _ = raise (NotSupportedException())
    override _.Write(_, _, _) = raise (NotSupportedException())

/// Watching a live bridge with a monitor: a SUB socket per service the monitor reads, every
/// message one event (with its segment table), on one thread with the updates, so the monitor
/// needs no lock.
[<RequireQualifiedAccess>]
module BridgeSource =

    /// Watches `host`'s bridge (refused when the host does not resolve): `emit` gets a snapshot
    /// first, an update every `UpdateMs`, a `source_status` when the source's state changes
    /// (`connecting`; `connected` while messages arrive; `silent` after `SilentAfter` without one;
    /// `reconnecting` when a connection dropped) and at the end, then the final state as `end`.
    let run
        (services: string list)
        (layout: EventLayout)
        (state: IMonitorState)
        (host: string)
        (options: BridgeOptions)
        (emit: MonitorMessage -> unit)
        : Result<BridgeOutcome, string> =
        match Bridge.resolve host with
        | Error e -> Error e
        | Ok address ->
            use recorder =
                match options.Record with
                | Some record -> new Recorder(record)
                | None -> null

            let mutable seq = 0L
            let mutable received = 0L
            let mutable foreign = 0L
            let mutable corrupt = 0L
            let mutable status = "connecting"
            let mutable lastMessage = DateTime.UtcNow

            let send kind (data: JsonObject) =
                seq <- seq + 1L

                emit {
                    Kind = kind
                    Seq = seq
                    T = MonitorSupport.unixNow ()
                    Data = data
                }

            let sourceStatus () =
                let o = JsonObject()
                o["status"] <- JsonValue.Create status
                o["host"] <- JsonValue.Create host
                o["received"] <- JsonValue.Create received
                o["foreign"] <- JsonValue.Create foreign
                o["corrupt"] <- JsonValue.Create corrupt
                o

            let setStatus (s: string) =
                if s <> status then
                    status <- s
                    send MonitorMessageKind.SourceStatus (sourceStatus ())

            send MonitorMessageKind.Snapshot (state.Snapshot())
            send MonitorMessageKind.SourceStatus (sourceStatus ())

            let subscriptions = [
                for service in services do
                    match Event.discriminantOf layout service with
                    | Some discriminant ->
                        let socket = new SubscriberSocket()
                        // NetMQ drops at 1,000 queued messages by default; a monitor must not lose
                        // frames silently.
                        socket.Options.ReceiveHighWatermark <- 0
                        socket.Options.ReconnectInterval <- TimeSpan.FromMilliseconds 100.0
                        socket.Options.ReconnectIntervalMax <- TimeSpan.FromSeconds 5.0
                        socket.Connect $"tcp://{address}:{Bridge.port service}"
                        socket.SubscribeToAnyTopic()
                        yield socket, discriminant
                    | None -> ()
            ]

            use feed = new Feed()
            let mutable reader = FrameReader(feed, host, options.Reader)

            // Damaged, short or with bytes left over: counted, and a fresh reader for the next
            // message (this one may hold part of it).
            let damaged () =
                corrupt <- corrupt + 1L
                reader <- FrameReader(feed, host, options.Reader)

            let take (discriminant: int) (bytes: byte array) =
                feed.Set bytes
                let before = reader.Position

                match reader.Next() with
                | FrameOutcome.Message when reader.Position - before = int64 bytes.Length ->
                    let m = reader.Message
                    let e = m.Root

                    if Event.which m layout e = discriminant then
                        received <- received + 1L
                        state.Step(m, e)

                        if not (isNull recorder) then
                            recorder.Write bytes
                    else
                        foreign <- foreign + 1L
                | _ -> damaged ()

            use poller = new NetMQPoller()
            let updates = NetMQTimer(TimeSpan.FromMilliseconds(float options.UpdateMs))
            let started = DateTime.UtcNow

            for socket, discriminant in subscriptions do
                socket.ReceiveReady.Add(fun _ ->
                    let mutable bytes: byte array = null
                    let mutable more = false

                    while socket.TryReceiveFrameBytes(&bytes, &more) do
                        // One frame a message; any further frames of a multipart message are not ours.
                        while more do
                            socket.TryReceiveFrameBytes(&bytes, &more) |> ignore

                        lastMessage <- DateTime.UtcNow

                        try
                            take discriminant bytes
                        with :? DecodeException ->
                            damaged ()

                    setStatus "connected")

                poller.Add socket

            // A dropped connection (the device rebooted, Wi-Fi lost) is `reconnecting` while ZMQ
            // retries with back-off; the next message makes it `connected` again.
            let watchers = [
                for socket, _ in subscriptions do
                    let watcher =
                        new NetMQ.Monitoring.NetMQMonitor(
                            socket,
                            $"inproc://cts-bridge-{Guid.NewGuid():N}",
                            SocketEvents.Disconnected
                        )

                    watcher.Disconnected.Add(fun _ -> setStatus "reconnecting")
                    watcher.AttachToPoller poller
                    yield watcher
            ]

            let mutable reported = struct (0L, 0L)

            updates.Elapsed.Add(fun _ ->
                if DateTime.UtcNow - lastMessage > options.SilentAfter && status = "connected" then
                    setStatus "silent"

                // Messages skipped are the source's news too: watchers see the counts as they grow.
                if struct (foreign, corrupt) <> reported then
                    reported <- struct (foreign, corrupt)
                    send MonitorMessageKind.SourceStatus (sourceStatus ())

                send MonitorMessageKind.Update (state.Snapshot())

                match options.Duration with
                | Some d when DateTime.UtcNow - started >= d -> poller.Stop()
                | _ -> ())

            poller.Add updates
            use _ = options.Cancellation.Register(fun () -> poller.StopAsync())

            if not options.Cancellation.IsCancellationRequested then
                poller.Run()

            for watcher in watchers do
                watcher.DetachFromPoller()
                watcher.Dispose()

            for socket, _ in subscriptions do
                socket.Dispose()

            // The recording is complete (and its last file handed over) before the session ends.
            if not (isNull recorder) then
                (recorder :> IDisposable).Dispose()

            status <- "ended"
            send MonitorMessageKind.SourceStatus (sourceStatus ())
            send MonitorMessageKind.End (state.Snapshot())

            let recorded = if isNull recorder then [] else recorder.Files

            Ok {
                Received = received
                Foreign = foreign
                Corrupt = corrupt
                Recorded = recorded
            }
