namespace CtsLite.Server

open System
open System.Buffers
open System.Collections.Concurrent
open System.IO
open System.Security.Cryptography
open System.Text.Json
open System.Threading
open System.Threading.Channels
open System.Threading.Tasks
open Microsoft.Extensions.Hosting
open Microsoft.Extensions.Logging
open CtsLite.Capnp
open CtsLite.Logs
open CtsLite.Monitors
open CtsLite.Tools

/// One stream message, its `data` serialized once for every watcher.
type StreamItem = {
    Kind: MonitorMessageKind
    Seq: int64
    T: float
    /// The `data` object as JSON text.
    Data: string
}

/// Stream messages as the bytes a watcher receives.
[<RequireQualifiedAccess>]
module StreamItem =

    /// `{"type", "seq", "t", "dropped", "data"}` as UTF-8 JSON; `dropped` is the watcher's own count.
    let render (item: StreamItem) (dropped: int64) : byte array =
        let buffer = ArrayBufferWriter<byte>(item.Data.Length + 96)
        use w = new Utf8JsonWriter(buffer)
        w.WriteStartObject()
        w.WriteString("type", MonitorMessage.kindName item.Kind)
        w.WriteNumber("seq", item.Seq)
        w.WriteNumber("t", Math.Round(item.T, 3))
        w.WriteNumber("dropped", dropped)
        w.WritePropertyName "data"
        w.WriteRawValue(item.Data, skipInputValidation = true)
        w.WriteEndObject()
        w.Flush()
        buffer.WrittenSpan.ToArray()

    /// A heartbeat after `last`.
    let heartbeat (last: StreamItem) : StreamItem = {
        Kind = MonitorMessageKind.Heartbeat
        Seq = last.Seq
        T = float (DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()) / 1000.0
        Data = "{}"
    }

/// One watcher of a session: a bounded queue that drops its oldest message when the watcher
/// reads too slowly, so neither the monitor nor the other watchers ever wait for it.
[<Sealed>]
type Watcher(capacity: int) =
    let dropped = ref 0L

    let channel =
        Channel.CreateBounded<StreamItem>(
            BoundedChannelOptions(
                capacity,
                FullMode = BoundedChannelFullMode.DropOldest,
                SingleReader = true,
                SingleWriter = false
            ),
            fun (_: StreamItem) -> Interlocked.Increment(&dropped.contents) |> ignore
        )

    /// Messages dropped so far.
    member _.Dropped: int64 = Interlocked.Read(&dropped.contents)

    /// What the watcher reads; completed after the session's `end`.
    member _.Reader: ChannelReader<StreamItem> = channel.Reader

    /// What the watcher is sent before anything of `Reader`: the state when it joined. Kept out
    /// of the queue, so a watcher that falls behind at once still starts with its snapshot.
    member val Initial: StreamItem list = [] with get, set

    member internal _.Offer(item: StreamItem) = channel.Writer.TryWrite item |> ignore
    member internal _.Complete() = channel.Writer.TryComplete() |> ignore

/// Why a watcher was not added.
[<RequireQualifiedAccess>]
type WatchRefusal =
    /// `max_stream_clients` watch the session already.
    | Full of limit: int

/// What a session needs to run, validated.
type SessionPlan = {
    Monitor: Monitor
    Parameters: ToolParameters
    ResolveFile: string -> Result<string, string>
    Source: MonitorSource
    RecordMaxBytes: int64 option
}

/// A running session: the monitor on its own thread fed by its source, the latest state, and
/// the watchers it sends to. Only the source's thread steps the monitor; watchers get rendered
/// messages, never the state.
[<Sealed>]
type LiveSession
    internal
    (
        record: SessionRecord,
        plan: SessionPlan,
        config: ServiceConfig,
        registerRecording: string -> Task<string option>,
        paths: ServerPaths,
        logger: ILogger
    ) =
    let gate = obj ()
    let watchers = ResizeArray<Watcher>()
    let events = EventCounter()
    let cancel = new CancellationTokenSource()

    let finished =
        TaskCompletionSource<SessionRecord>(TaskCreationOptions.RunContinuationsAsynchronously)

    let mutable latest = {
        Kind = MonitorMessageKind.Snapshot
        Seq = 0L
        T = float (record.CreatedAt.ToUnixTimeMilliseconds()) / 1000.0
        Data = "{}"
    }

    let mutable latestStatus: StreamItem option = None

    let mutable sourceStatus =
        match plan.Source with
        | MonitorSource.Replay _ -> "replaying"
        | MonitorSource.Bridge _ -> "connecting"

    let mutable foreign = 0L
    let mutable corrupt = 0L
    let mutable droppedByGone = 0L
    let mutable stopReason: string option = None
    let mutable lastWatched = DateTime.UtcNow
    let mutable ended = false
    let recordings = ResizeArray<string>()
    let mutable registrations = Task.CompletedTask

    let emit (m: MonitorMessage) =
        let item = {
            Kind = m.Kind
            Seq = m.Seq
            T = m.T
            Data = m.Data.ToJsonString()
        }

        lock gate (fun () ->
            match m.Kind with
            | MonitorMessageKind.SourceStatus ->
                latestStatus <- Some item

                let read (name: string) =
                    match m.Data[name] with
                    | null -> 0L
                    | v -> v.GetValue<int64>()

                sourceStatus <- m.Data["status"].GetValue<string>()
                foreign <- read "foreign"
                corrupt <- read "corrupt"
            | MonitorMessageKind.Heartbeat -> ()
            | MonitorMessageKind.Snapshot
            | MonitorMessageKind.Update
            | MonitorMessageKind.End -> latest <- item

            // `end` goes out once the session's end is on record (below), so a watcher that saw
            // it finds the final status when it asks.
            if m.Kind <> MonitorMessageKind.End then
                for w in watchers do
                    w.Offer item)

    // A finished recording file becomes an upload, in order, off the source's thread.
    let closed (file: string) =
        lock gate (fun () ->
            registrations <-
                registrations
                    .ContinueWith(
                        (fun (_: Task) ->
                            task {
                                match! registerRecording file with
                                | Some uploadId -> lock gate (fun () -> recordings.Add uploadId)
                                | None -> ()
                            }
                            :> Task),
                        TaskScheduler.Default
                    )
                    .Unwrap())

    let counts () =
        lock gate (fun () -> {
            Events = events.Value
            Foreign = foreign
            Corrupt = corrupt
            Dropped = droppedByGone + (watchers |> Seq.sumBy _.Dropped)
            Seq = latest.Seq
        })

    let run () =
        let options: SessionOptions = {
            UpdateMs = record.UpdateMs
            SilentAfter = TimeSpan.FromSeconds 2.0
            Duration = None
            Record =
                plan.RecordMaxBytes
                |> Option.map (fun maxBytes ->
                    let dir = Path.Combine(config.DataDir, "recordings", record.SessionId)
                    Directory.CreateDirectory dir |> ignore
                    let stamp = record.CreatedAt.UtcDateTime.ToString "yyyy-MM-dd--HH-mm-ss"

                    {
                        Path = Path.Combine(dir, $"{stamp}.rlog.zst")
                        MaxBytes = maxBytes
                        SegmentLength = Some(TimeSpan.FromMinutes 1.0)
                        Closed = closed
                    })
            Reader = ReaderOptions.Default
            Events = events
            Cancellation = cancel.Token
        }

        let outcome =
            try
                MonitorSession.run plan.Monitor plan.Parameters plan.ResolveFile plan.Source options emit
            with e ->
                logger.LogError(e, "Monitor session {SessionId} failed", record.SessionId)
                Error(ToolError.InputInvalid "the session failed (see the service's log)")

        let status, reason =
            match outcome, stopReason with
            | Ok o, Some reason when o.Stopped -> SessionStatus.Stopped, reason
            | Ok _, _ ->
                SessionStatus.Ended,
                match plan.Source with
                | MonitorSource.Replay _ -> "the replay reached the end of its log"
                | MonitorSource.Bridge _ -> "the live source ended"
            | Error e, _ -> SessionStatus.Failed, paths.Mask(ToolError.describe e)

        // A session that failed before its source sent `end` still ends every watcher's stream.
        if latest.Kind <> MonitorMessageKind.End then
            emit {
                Kind = MonitorMessageKind.End
                Seq = latest.Seq + 1L
                T = float (DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()) / 1000.0
                Data = Nodes.JsonNode.Parse(latest.Data).AsObject()
            }

        status, reason

    /// The stored record this session started from.
    member _.Record = record

    /// The session's id.
    member _.SessionId = record.SessionId

    /// The source's state now.
    member _.SourceStatus = lock gate (fun () -> sourceStatus)

    /// What it counted so far.
    member _.Counts: SessionCounts = counts ()

    /// Watchers now.
    member _.Clients = lock gate (fun () -> watchers.Count)

    /// The latest state (an update's `data`) as JSON text.
    member _.Latest = lock gate (fun () -> latest.Data)

    /// The uploads of the recording so far.
    member _.Recordings = lock gate (fun () -> List.ofSeq recordings)

    /// True once its source ended (its watchers got `end`).
    member _.HasEnded = lock gate (fun () -> ended)

    /// Completes with the stored record once the session ended and everything it held is freed.
    member _.Finished: Task<SessionRecord> = finished.Task

    /// Since when nobody watches (now, while someone does).
    member _.UnwatchedFor: TimeSpan =
        lock gate (fun () ->
            if watchers.Count > 0 then
                TimeSpan.Zero
            else
                DateTime.UtcNow - lastWatched)

    /// A new watcher, first sent the latest state as `snapshot` (and the source's last status);
    /// for a session that ended, those and `end`.
    member _.Watch(capacity: int) : Result<Watcher, WatchRefusal> =
        lock gate (fun () ->
            if watchers.Count >= config.MaxStreamClients then
                Error(WatchRefusal.Full config.MaxStreamClients)
            else
                let w = Watcher(max capacity 4)

                w.Initial <- [
                    {
                        latest with
                            Kind = MonitorMessageKind.Snapshot
                    }
                    yield! Option.toList latestStatus
                    if ended then
                        latest
                ]

                if ended then w.Complete() else watchers.Add w

                Ok w)

    /// Removes a watcher (its stream closed).
    member _.Unwatch(w: Watcher) =
        lock gate (fun () ->
            if watchers.Remove w then
                droppedByGone <- droppedByGone + w.Dropped
                lastWatched <- DateTime.UtcNow)

    /// Asks the session to stop (the first reason is kept); `Finished` says when it has.
    member _.Stop(reason: string) =
        lock gate (fun () ->
            if stopReason.IsNone then
                stopReason <- Some reason)

        cancel.Cancel()

    /// Runs the session on a thread of its own; `finish` records how it ended.
    member internal _.Start
        (finish: SessionStatus -> string -> SessionCounts -> string -> string list -> Task<SessionRecord>)
        =
        let thread () =
            let status, reason = run ()

            task {
                // The recording's last file is registered before the session is recorded as over.
                let pending = lock gate (fun () -> registrations)

                try
                    do! pending
                with e ->
                    logger.LogError(e, "Registering the recording of session {SessionId} failed", record.SessionId)

                // Every finished file moved into uploads: the session's folder is left empty.
                let folder = Path.Combine(config.DataDir, "recordings", record.SessionId)

                if
                    Directory.Exists folder
                    && Seq.isEmpty (Directory.EnumerateFileSystemEntries folder)
                then
                    try
                        Directory.Delete folder
                    with :? IOException ->
                        ()

                let final = lock gate (fun () -> latest.Data)

                let! stored =
                    finish status reason (counts ()) final (lock gate (fun () -> List.ofSeq recordings))

                lock gate (fun () ->
                    ended <- true

                    for w in watchers do
                        w.Offer latest
                        w.Complete())

                cancel.Dispose()
                finished.TrySetResult stored |> ignore
            }
            |> fun t -> t.Wait()

        // A thread of its own, named (`cts-mon <id>` in /proc), that ends with the session.
        let t =
            Thread(thread, IsBackground = true, Name = $"cts-mon {record.SessionId.Substring(0, 8)}")

        t.Start()

/// Why a session was not started.
[<RequireQualifiedAccess>]
type SessionStartRefusal =
    /// `max_monitors` sessions run already.
    | TooMany of limit: int

/// Which process owns a session, and when it is gone.
[<RequireQualifiedAccess>]
module SessionOwners =

    /// How long a process's claim on its sessions lasts without renewal (renewed every 10 s).
    let lease = TimeSpan.FromSeconds 30.0

    /// This process's name in the store: `host/pid/instance`.
    let create () =
        $"{Environment.MachineName}/{Environment.ProcessId}/{Guid.NewGuid():N}"

    /// Whether the process `owner` names is gone (seen from `self` at `now`): its lease expired,
    /// or it is a process of this machine that no longer runs (a restart after a crash finds its
    /// sessions at once, not a lease later).
    let isGone (self: string) (now: DateTimeOffset) (owner: string) (leaseExpires: DateTimeOffset) : bool =
        if owner = self then
            false
        elif leaseExpires < now then
            true
        else
            match owner.Split '/' with
            | [| host; pid; _ |] when host = Environment.MachineName ->
                match Int32.TryParse pid with
                | true, pid when pid <> Environment.ProcessId ->
                    try
                        use p = Diagnostics.Process.GetProcessById pid
                        p.HasExited
                    with :? ArgumentException ->
                        true
                | _ -> false
            | _ -> false

/// The monitor sessions of this process: started, watched and stopped here, recorded in the
/// store. A hosted service: at start-up it marks sessions whose process is gone as stopped;
/// while it runs it renews this process's lease, stops sessions nobody watched for
/// `monitor_idle_timeout_s`, and on shutdown stops them all.
[<Sealed>]
type MonitorSessions
    (config: ServiceConfig, store: IMonitorStore, runs: IRunStore, time: TimeProvider, logger: ILogger<MonitorSessions>)
    =
    let owner = SessionOwners.create ()
    let sessions = ConcurrentDictionary<string, LiveSession>()
    let starting = new SemaphoreSlim(1, 1)
    let paths = ServerPaths config
    let stopping = new CancellationTokenSource()
    let mutable loop = Task.CompletedTask

    let register (file: string) : Task<string option> = task {
        try
            let size = FileInfo(file).Length

            if size = 0L then
                File.Delete file
                return None
            else
                let! sha = task {
                    use stream = File.OpenRead file
                    let! hash = SHA256.HashDataAsync stream
                    return Convert.ToHexString(hash).ToLowerInvariant()
                }

                let id = Guid.NewGuid().ToString()
                let uploads = Path.Combine(config.DataDir, "uploads")
                Directory.CreateDirectory uploads |> ignore
                let path = Path.Combine(uploads, id)
                File.Move(file, path)

                let upload: UploadRecord = {
                    UploadId = id
                    Filename = Path.GetFileName file
                    Size = size
                    Sha256 = sha
                    ContentType = FileKind.name FileKind.Rlog
                    Path = path
                    CreatedAt = time.GetUtcNow()
                }

                let! stored, isNew = runs.AddUpload upload

                if not isNew then
                    File.Delete path

                return Some stored.UploadId
        with
        | :? IOException
        | :? UnauthorizedAccessException as e ->
            logger.LogError("Recording file {File} could not be registered: {Reason}", paths.Show file, e.Message)
            return None
    }

    let finish (id: string) status reason counts final recordings = task {
        let now = time.GetUtcNow()

        let! _ =
            store.FinishSession(id, owner, status, reason, counts, Some final, recordings, now)

        sessions.TryRemove id |> ignore

        logger.LogInformation("Monitor session {SessionId} {Status}: {Reason}", id, SessionStatus.name status, reason)

        let! stored = store.GetSession id

        return
            stored
            |> Option.defaultWith (fun () -> invalidOp $"session {id} vanished from the store")
    }

    let sweep () = task {
        let now = time.GetUtcNow()
        do! store.RenewSessions(owner, now + SessionOwners.lease)

        let! orphans =
            store.StopOrphans(SessionOwners.isGone owner now, "the service process that ran it is gone", now)

        if orphans > 0 then
            logger.LogInformation("Marked {Count} monitor session(s) of a gone service process stopped", orphans)
    }

    let tick () = task {
        let mutable last = DateTime.UtcNow

        while not stopping.IsCancellationRequested do
            try
                do! Task.Delay(1000, stopping.Token)

                for KeyValue(_, s) in sessions do
                    if s.UnwatchedFor >= config.MonitorIdleTimeout then
                        s.Stop
                            $"no client watched it for {config.MonitorIdleTimeout.TotalSeconds:F0} s (monitor_idle_timeout_s)"

                if DateTime.UtcNow - last >= TimeSpan.FromSeconds 10.0 then
                    last <- DateTime.UtcNow
                    do! sweep ()
            with
            | :? OperationCanceledException -> ()
            | :? Data.Common.DbException as e ->
                logger.LogWarning("Monitor sessions: the store did not answer ({Reason}); retrying", e.Message)
    }

    /// This process's name in the store.
    member _.Owner = owner

    /// The live session with this id, when this process runs it.
    member _.TryGet(sessionId: string) : LiveSession option =
        match sessions.TryGetValue sessionId with
        | true, s -> Some s
        | false, _ -> None

    /// Sessions running in this process.
    member _.Count = sessions.Count

    /// Starts `plan` as a new session described by `record` (its id, monitor, params, source).
    member _.Start(record: SessionRecord, plan: SessionPlan) : Task<Result<LiveSession, SessionStartRefusal>> = task {
        do! starting.WaitAsync()

        try
            let! running = store.CountRunning()

            if running >= config.MaxMonitors then
                return Error(SessionStartRefusal.TooMany config.MaxMonitors)
            else
                let record = { record with Owner = owner }
                do! store.AddSession record
                let live = new LiveSession(record, plan, config, register, paths, logger)
                sessions[record.SessionId] <- live
                live.Start(finish record.SessionId)

                logger.LogInformation(
                    "Monitor session {SessionId} of {MonitorId} started",
                    record.SessionId,
                    record.MonitorId
                )

                return Ok live
        finally
            starting.Release() |> ignore
    }

    /// Stops every session (the service is stopping) and waits for them, at most `within`.
    member _.StopAll(reason: string, within: TimeSpan) : Task = task {
        let all = List.ofSeq sessions.Values

        for s in all do
            s.Stop reason

        let! _ =
            Task.WhenAny(Task.WhenAll(all |> List.map (fun s -> s.Finished :> Task)), Task.Delay within)

        ()
    }

    interface IHostedService with
        member _.StartAsync(_: CancellationToken) = task {
            try
                do! sweep ()
            with :? Data.Common.DbException as e ->
                logger.LogWarning("Monitor sessions: the store did not answer at start-up ({Reason})", e.Message)

            loop <- tick ()
        }

        member this.StopAsync(_: CancellationToken) = task {
            stopping.Cancel()
            do! this.StopAll("the service stopped", TimeSpan.FromSeconds 10.0)
            do! loop
        }
