namespace CtsLite.Server

open System
open System.Text.Json
open System.Threading.Tasks
open Microsoft.Data.Sqlite

/// Where a monitor session is in its life.
[<RequireQualifiedAccess>]
type SessionStatus =
    | Running
    /// Its source ended (a replay reached its end, a live session its duration).
    | Ended
    /// Stopped by a request, by having no watcher for `monitor_idle_timeout_s`, or because its
    /// service stopped or is gone.
    | Stopped
    /// It could not start or its source failed.
    | Failed

/// Wire names of session states.
[<RequireQualifiedAccess>]
module SessionStatus =

    /// `running`, `ended`, `stopped` or `failed`.
    let name (s: SessionStatus) : string =
        match s with
        | SessionStatus.Running -> "running"
        | SessionStatus.Ended -> "ended"
        | SessionStatus.Stopped -> "stopped"
        | SessionStatus.Failed -> "failed"

    /// The state of a wire name.
    let tryParse (text: string) : SessionStatus option =
        match text with
        | "running" -> Some SessionStatus.Running
        | "ended" -> Some SessionStatus.Ended
        | "stopped" -> Some SessionStatus.Stopped
        | "failed" -> Some SessionStatus.Failed
        | _ -> None

/// What a session counted.
type SessionCounts = {
    Events: int64
    Foreign: int64
    Corrupt: int64
    Dropped: int64
    Seq: int64
} with

    /// Nothing yet.
    static member Zero = {
        Events = 0L
        Foreign = 0L
        Corrupt = 0L
        Dropped = 0L
        Seq = 0L
    }

/// One monitor session as stored. The session itself (its sockets, its monitor, its watchers)
/// lives in the process that owns it; the store keeps what outlives it and what other processes
/// may list.
type SessionRecord = {
    SessionId: string
    MonitorId: string
    /// The parameters after validation, as a JSON object.
    ParamsJson: string
    /// The source as the request named it (`Api.MonitorSourceDto` as JSON).
    SourceJson: string
    Record: bool
    UpdateMs: int
    Status: SessionStatus
    SourceStatus: string
    CreatedAt: DateTimeOffset
    StoppedAt: DateTimeOffset option
    Reason: string option
    /// The process that runs it (`host/pid/instance`).
    Owner: string
    Counts: SessionCounts
    /// The final state (an update's `data`), once it ended.
    FinalJson: string option
    /// The uploads holding its recording.
    Recordings: string list
}

/// Monitor sessions, in the same database as runs. A session's owner renews a lease on its
/// sessions; sessions whose owner is gone (its lease expired, or it is a process of this host
/// that no longer runs) are marked stopped by whichever process looks next.
type IMonitorStore =
    abstract AddSession: SessionRecord -> Task
    abstract GetSession: sessionId: string -> Task<SessionRecord option>
    /// Newest first, at most `limit`, optionally of one state.
    abstract ListSessions: status: SessionStatus option * limit: int -> Task<SessionRecord list>
    /// How many sessions are running (over every process).
    abstract CountRunning: unit -> Task<int>

    /// Records how a running session of `owner` ended; false when it was not running (any more).
    abstract FinishSession:
        sessionId: string *
        owner: string *
        status: SessionStatus *
        reason: string *
        counts: SessionCounts *
        finalJson: string option *
        recordings: string list *
        now: DateTimeOffset ->
            Task<bool>

    /// Keeps the sessions of `owner` alive until `until`.
    abstract RenewSessions: owner: string * until: DateTimeOffset -> Task
    /// Marks running sessions stopped with `reason` when `isGone owner leaseExpiresAt` says their
    /// owner is gone; how many.
    abstract StopOrphans: isGone: (string -> DateTimeOffset -> bool) * reason: string * now: DateTimeOffset -> Task<int>

/// The SQLite implementation.
[<RequireQualifiedAccess>]
module SqliteMonitorStore =

    let private columns =
        "session_id, monitor_id, params_json, source_json, record, update_ms, status, source_status, created_at, stopped_at, reason, owner, events, foreign_messages, corrupt, dropped, seq, final_json, recordings_json"

    let private read (r: SqliteDataReader) : SessionRecord = {
        SessionId = r.GetString 0
        MonitorId = r.GetString 1
        ParamsJson = r.GetString 2
        SourceJson = r.GetString 3
        Record = r.GetInt64 4 <> 0L
        UpdateMs = int (r.GetInt64 5)
        Status =
            SessionStatus.tryParse (r.GetString 6)
            |> Option.defaultValue SessionStatus.Failed
        SourceStatus = r.GetString 7
        CreatedAt = SqliteAccess.parseTime (r.GetString 8)
        StoppedAt = SqliteAccess.optText r 9 |> Option.map SqliteAccess.parseTime
        Reason = SqliteAccess.optText r 10
        Owner = r.GetString 11
        Counts = {
            Events = r.GetInt64 12
            Foreign = r.GetInt64 13
            Corrupt = r.GetInt64 14
            Dropped = r.GetInt64 15
            Seq = r.GetInt64 16
        }
        FinalJson = SqliteAccess.optText r 17
        Recordings =
            try
                JsonSerializer.Deserialize<string list>(r.GetString 18)
                |> Option.ofObj
                |> Option.defaultValue []
            with :? JsonException -> []
    }

    type private Store(connectionString: string, lease: TimeSpan) =
        let query sql parameters read =
            SqliteAccess.query connectionString sql parameters read

        let execute sql parameters =
            SqliteAccess.execute connectionString sql parameters

        let iso = SqliteAccess.iso

        interface IMonitorStore with
            member _.AddSession s =
                Completed.unit (fun () ->
                    execute
                        $"INSERT INTO monitor_sessions ({columns}, lease_expires_at) VALUES ($id, $monitor, $params, $source, $record, $update, $status, $sourceStatus, $created, NULL, NULL, $owner, 0, 0, 0, 0, 0, NULL, '[]', $lease)"
                        [
                            "$id", box s.SessionId
                            "$monitor", box s.MonitorId
                            "$params", box s.ParamsJson
                            "$source", box s.SourceJson
                            "$record", box (if s.Record then 1L else 0L)
                            "$update", box (int64 s.UpdateMs)
                            "$status", box (SessionStatus.name s.Status)
                            "$sourceStatus", box s.SourceStatus
                            "$created", box (iso s.CreatedAt)
                            "$owner", box s.Owner
                            "$lease", box (iso (s.CreatedAt + lease))
                        ]
                    |> ignore)

            member _.GetSession sessionId =
                Completed.value (fun () ->
                    query
                        $"SELECT {columns} FROM monitor_sessions WHERE session_id = $id"
                        [ "$id", box sessionId ]
                        read
                    |> List.tryHead)

            member _.ListSessions(status, limit) =
                Completed.value (fun () ->
                    match status with
                    | Some s ->
                        query
                            $"SELECT {columns} FROM monitor_sessions WHERE status = $status ORDER BY created_at DESC, session_id DESC LIMIT $limit"
                            [ "$status", box (SessionStatus.name s); "$limit", box (int64 limit) ]
                            read
                    | None ->
                        query
                            $"SELECT {columns} FROM monitor_sessions ORDER BY created_at DESC, session_id DESC LIMIT $limit"
                            [ "$limit", box (int64 limit) ]
                            read)

            member _.CountRunning() =
                Completed.value (fun () ->
                    query "SELECT count(*) FROM monitor_sessions WHERE status = 'running'" [] (fun r ->
                        int (r.GetInt64 0))
                    |> List.head)

            member _.FinishSession(sessionId, owner, status, reason, counts, finalJson, recordings, now) =
                Completed.value (fun () ->
                    let changed =
                        execute
                            """UPDATE monitor_sessions SET status = $status, source_status = 'ended', reason = $reason,
                               stopped_at = $now, events = $events, foreign_messages = $foreign, corrupt = $corrupt,
                               dropped = $dropped, seq = $seq, final_json = $final, recordings_json = $recordings
                               WHERE session_id = $id AND owner = $owner AND status = 'running'"""
                            [
                                "$id", box sessionId
                                "$owner", box owner
                                "$status", box (SessionStatus.name status)
                                "$reason", box reason
                                "$now", box (iso now)
                                "$events", box counts.Events
                                "$foreign", box counts.Foreign
                                "$corrupt", box counts.Corrupt
                                "$dropped", box counts.Dropped
                                "$seq", box counts.Seq
                                "$final", SqliteAccess.opt finalJson
                                "$recordings", box (JsonSerializer.Serialize recordings)
                            ]

                    changed = 1)

            member _.RenewSessions(owner, until) =
                Completed.unit (fun () ->
                    execute
                        "UPDATE monitor_sessions SET lease_expires_at = $until WHERE owner = $owner AND status = 'running'"
                        [ "$owner", box owner; "$until", box (iso until) ]
                    |> ignore)

            member _.StopOrphans(isGone, reason, now) =
                Completed.value (fun () ->
                    let owners =
                        query
                            "SELECT owner, max(lease_expires_at) FROM monitor_sessions WHERE status = 'running' GROUP BY owner"
                            []
                            (fun r -> r.GetString 0, SqliteAccess.parseTime (r.GetString 1))

                    owners
                    |> List.filter (fun (owner, until) -> isGone owner until)
                    |> List.sumBy (fun (owner, _) ->
                        execute
                            """UPDATE monitor_sessions SET status = 'stopped', source_status = 'ended', reason = $reason,
                               stopped_at = $now WHERE owner = $owner AND status = 'running'"""
                            [ "$owner", box owner; "$reason", box reason; "$now", box (iso now) ]))

    /// The session store over the (already opened and migrated) database in `dataDir`; an owner's
    /// lease on its sessions lasts `lease` from each renewal.
    let create (dataDir: string) (lease: TimeSpan) : IMonitorStore =
        Store(SqliteStore.connectionString dataDir, lease) :> IMonitorStore
