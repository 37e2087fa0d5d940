namespace CtsLite.Server

open System
open System.Globalization
open System.Text.Json
open System.Threading.Tasks
open Microsoft.Data.Sqlite
open CtsLite

/// Where a run is in its life.
[<RequireQualifiedAccess>]
type RunStatus =
    | Queued
    | Running
    | Completed
    | Failed
    | Canceled

/// Wire names of run states.
[<RequireQualifiedAccess>]
module RunStatus =

    /// `queued`, `running`, `completed`, `failed` or `canceled`.
    let name (s: RunStatus) : string =
        match s with
        | RunStatus.Queued -> "queued"
        | RunStatus.Running -> "running"
        | RunStatus.Completed -> "completed"
        | RunStatus.Failed -> "failed"
        | RunStatus.Canceled -> "canceled"

    /// The state of a wire name.
    let tryParse (text: string) : RunStatus option =
        match text with
        | "queued" -> Some RunStatus.Queued
        | "running" -> Some RunStatus.Running
        | "completed" -> Some RunStatus.Completed
        | "failed" -> Some RunStatus.Failed
        | "canceled" -> Some RunStatus.Canceled
        | _ -> None

    /// Completed, failed and canceled runs never change again.
    let isTerminal (s: RunStatus) : bool =
        match s with
        | RunStatus.Completed
        | RunStatus.Failed
        | RunStatus.Canceled -> true
        | RunStatus.Queued
        | RunStatus.Running -> false

/// One run as stored.
type RunRecord = {
    RunId: string
    ToolId: string
    Name: string option
    Status: RunStatus
    /// The parameters after validation and coercion, as a JSON object.
    ParamsJson: string
    /// What the run reads, as the request named it.
    Input: InputRef
    /// The names the user knows the input's files by, one per upload (the upload's file name)
    /// or the path's last part; kept with the run, so a removed upload still has its name.
    InputNames: string list
    CreatedAt: DateTimeOffset
    StartedAt: DateTimeOffset option
    CompletedAt: DateTimeOffset option
    Progress: float
    Error: string option
    CancelRequested: bool
    /// How many times a worker has claimed the run (1 on its first run; more after a worker died
    /// or the store could not record how the run ended).
    Attempts: int
}

/// Building run records.
[<RequireQualifiedAccess>]
module RunRecord =

    /// The page cursor that continues a newest-first listing after `run` (`GET /v1/runs`).
    let cursorAfter (run: RunRecord) : string =
        let created =
            run.CreatedAt.ToUniversalTime().ToString("yyyy-MM-dd'T'HH:mm:ss.fffffff'Z'", CultureInfo.InvariantCulture)

        $"{created}|{run.RunId}"

    /// About how many bytes the run takes as JSON: what bounds a listing's size.
    let approximateJsonBytes (run: RunRecord) : int =
        400
        + run.ParamsJson.Length
        + (run.InputNames |> List.sumBy (fun n -> 2 * n.Length + 4))
        + (run.Name |> Option.map (fun n -> 2 * n.Length) |> Option.defaultValue 0)
        + (run.Error |> Option.map (fun e -> 2 * e.Length) |> Option.defaultValue 0)

    /// A new run of `toolId`, queued at `now`, with a fresh id.
    let queued
        (toolId: string)
        (paramsJson: string)
        (input: InputRef)
        (name: string option)
        (now: DateTimeOffset)
        : RunRecord = {
        RunId = Guid.NewGuid().ToString()
        ToolId = toolId
        Name = name
        Status = RunStatus.Queued
        ParamsJson = paramsJson
        Input = input
        InputNames = []
        CreatedAt = now
        StartedAt = None
        CompletedAt = None
        Progress = 0.0
        Error = None
        CancelRequested = false
        Attempts = 0
    }

/// One line of a run's log.
type LogRecord = {
    RunId: string
    Seq: int64
    Timestamp: DateTimeOffset
    Level: string
    Message: string
    /// `tool` or `engine`.
    Source: string
}

/// One file a run produced.
type ArtifactRecord = {
    ArtifactId: string
    RunId: string
    Filename: string
    ContentType: string
    Size: int64
    Sha256: string
    Path: string
    CreatedAt: DateTimeOffset
}

/// One uploaded file.
type UploadRecord = {
    UploadId: string
    Filename: string
    Size: int64
    Sha256: string
    /// `rlog`, `csv` or `dbc`, from the content.
    ContentType: string
    Path: string
    CreatedAt: DateTimeOffset
}

/// What creating a run gave.
[<RequireQualifiedAccess>]
type CreateOutcome =
    | Created of RunRecord
    /// The same idempotency key and body was seen: the run it created.
    | Existing of RunRecord
    /// The same idempotency key came with another body.
    | Conflict
    /// `maxQueued` runs are already waiting.
    | QueueFull

/// What the store holds in files, from its records.
type StorageTotals = {
    Uploads: int
    UploadBytes: int64
    Artifacts: int
    ArtifactBytes: int64
} with

    /// Nothing stored (or nothing known).
    static member Empty = {
        Uploads = 0
        UploadBytes = 0L
        Artifacts = 0
        ArtifactBytes = 0L
    }

/// The SQLite calls are synchronous (an in-process database): their results as completed tasks
/// and their failures as faulted ones, so callers await every store the same way.
[<RequireQualifiedAccess>]
module internal Completed =

    let value (f: unit -> 'a) : Task<'a> =
        try
            Task.FromResult(f ())
        with e ->
            Task.FromException<'a> e

    let unit (f: unit -> unit) : Task =
        try
            f ()
            Task.CompletedTask
        with e ->
            Task.FromException e

/// Runs, their logs, artifacts and uploads: the data of the service, asynchronous so that a
/// database on the network (PostgreSQL) fits the same contract. Every state change is one
/// conditional statement, so several workers (in one or several processes) can share the store;
/// a worker holds a run through a lease it renews, and a run whose lease expired can be claimed
/// again. (`IStore` is the database itself: its schema version, its health check and its size.)
type IRunStore =
    /// Queues a run unless `maxQueued` runs already wait; an idempotent replay is answered first.
    abstract CreateRun: run: RunRecord * idempotency: (string * string) option * maxQueued: int -> Task<CreateOutcome>
    abstract GetRun: runId: string -> Task<RunRecord option>

    /// Newest first; the cursor is opaque (the last run's `created_at|run_id`).
    abstract ListRuns:
        status: RunStatus option * toolId: string option * cursor: string option * limit: int ->
            Task<RunRecord list * string option>

    /// Takes the oldest queued run (or a running one whose lease expired) for `owner`.
    abstract ClaimNext: owner: string * now: DateTimeOffset * leaseUntil: DateTimeOffset -> Task<RunRecord option>
    /// False when the run is no longer this owner's (lease lost, or finished elsewhere).
    abstract RenewLease: runId: string * owner: string * leaseUntil: DateTimeOffset -> Task<bool>
    abstract SetProgress: runId: string * owner: string * progress: float -> Task
    /// Puts a run this owner holds back in the queue (a graceful shutdown).
    abstract Requeue: runId: string * owner: string -> Task

    /// Ends a run this owner holds; false when it is not (any more).
    abstract Finish:
        runId: string * owner: string * status: RunStatus * error: string option * now: DateTimeOffset -> Task<bool>

    /// Queued runs are canceled at once; running ones are flagged for their worker. None: no such run.
    abstract RequestCancel: runId: string * now: DateTimeOffset -> Task<RunRecord option>

    abstract AppendLog:
        runId: string * level: string * message: string * source: string * now: DateTimeOffset -> Task<int64>

    abstract GetLogs: runId: string * afterSeq: int64 -> Task<LogRecord list>
    abstract AddArtifacts: ArtifactRecord list -> Task
    abstract ListArtifacts: runId: string option -> Task<ArtifactRecord list>
    abstract GetArtifact: artifactId: string -> Task<ArtifactRecord option>
    /// Records an upload; when the same content (sha256) is already stored, returns that one and false.
    abstract AddUpload: UploadRecord -> Task<UploadRecord * bool>
    abstract GetUpload: uploadId: string -> Task<UploadRecord option>
    /// The newest `limit` uploads, newest first.
    abstract ListUploads: limit: int -> Task<UploadRecord list>
    abstract DeleteUpload: uploadId: string -> Task<bool>
    /// Marks an upload as used now (a run named it, or its content was uploaded again).
    abstract TouchUpload: uploadId: string * now: DateTimeOffset -> Task
    /// Uploads neither created nor used since `cutoff`, and named by no queued or running run.
    abstract ExpiredUploads: cutoff: DateTimeOffset -> Task<UploadRecord list>
    /// Deletes the upload's record if it is still expired and unnamed (one statement, so a run
    /// queued or an upload repeated since `ExpiredUploads` keeps it); false when it was kept.
    abstract DeleteExpiredUpload: uploadId: string * cutoff: DateTimeOffset -> Task<bool>
    /// Artifacts created before `cutoff`.
    abstract ExpiredArtifacts: cutoff: DateTimeOffset -> Task<ArtifactRecord list>
    abstract DeleteArtifact: artifactId: string -> Task<bool>
    abstract Storage: unit -> Task<StorageTotals>

/// The statements every SQLite store runs: a connection per call (pooled), named parameters,
/// times as ISO 8601 UTC text.
[<RequireQualifiedAccess>]
module internal SqliteAccess =

    /// `t` as stored: UTC, 100 ns digits, so text order is time order.
    let iso (t: DateTimeOffset) =
        t.ToUniversalTime().ToString("yyyy-MM-dd'T'HH:mm:ss.fffffff'Z'", CultureInfo.InvariantCulture)

    /// A stored time.
    let parseTime (s: string) =
        DateTimeOffset.Parse(
            s,
            CultureInfo.InvariantCulture,
            DateTimeStyles.AssumeUniversal ||| DateTimeStyles.AdjustToUniversal
        )

    /// A nullable text column.
    let optText (r: SqliteDataReader) (i: int) =
        if r.IsDBNull i then None else Some(r.GetString i)

    /// An open connection with the store's pragmas.
    let connect (connectionString: string) =
        let c = new SqliteConnection(connectionString)
        c.Open()
        use pragma = c.CreateCommand()
        pragma.CommandText <- "PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON"
        pragma.ExecuteNonQuery() |> ignore
        c

    /// A command on `c` with named parameters (None/null as SQL NULL).
    let command (c: SqliteConnection) (sql: string) (parameters: (string * obj) list) =
        let cmd = c.CreateCommand()
        cmd.CommandText <- sql

        for name, value in parameters do
            cmd.Parameters.AddWithValue(name, (if isNull value then box DBNull.Value else value))
            |> ignore

        cmd

    /// The rows of a query, each read by `read`.
    let query
        (connectionString: string)
        (sql: string)
        (parameters: (string * obj) list)
        (read: SqliteDataReader -> 'T)
        : 'T list =
        use c = connect connectionString
        use cmd = command c sql parameters
        use r = cmd.ExecuteReader()

        [
            while r.Read() do
                read r
        ]

    /// The rows a statement changed.
    let execute (connectionString: string) (sql: string) (parameters: (string * obj) list) : int =
        use c = connect connectionString
        use cmd = command c sql parameters
        cmd.ExecuteNonQuery()

    /// An option as a parameter value.
    let opt (o: 'T option) : obj =
        match o with
        | Some v -> box v
        | None -> null

/// The SQLite implementation, in the same database as `SqliteStore`.
[<RequireQualifiedAccess>]
module SqliteRunStore =

    let private iso = SqliteAccess.iso
    let private parseTime = SqliteAccess.parseTime
    let private optText = SqliteAccess.optText

    let private runColumns =
        "run_id, tool_id, name, status, params_json, input_json, created_at, started_at, completed_at, progress, error, cancel_requested, attempts, input_names_json"

    let private readRun (r: SqliteDataReader) : RunRecord =
        // Stored as the wire's input object; a row this build cannot read names nothing, so
        // the engine fails the run with that reason instead of guessing.
        let input =
            optText r 5
            |> Option.bind (fun json ->
                try
                    JsonSerializer.Deserialize<Api.RunInputDto>(json, ApiJson.options)
                    |> InputRef.ofDto "/input"
                    |> Result.toOption
                with :? JsonException ->
                    None)
            |> Option.defaultValue (InputRef.Uploads [])

        {
            RunId = r.GetString 0
            ToolId = r.GetString 1
            Name = optText r 2
            Status = RunStatus.tryParse (r.GetString 3) |> Option.defaultValue RunStatus.Failed
            ParamsJson = r.GetString 4
            Input = input
            CreatedAt = parseTime (r.GetString 6)
            StartedAt = optText r 7 |> Option.map parseTime
            CompletedAt = optText r 8 |> Option.map parseTime
            Progress = if r.IsDBNull 9 then 0.0 else r.GetDouble 9
            Error = optText r 10
            CancelRequested = r.GetInt64 11 <> 0L
            Attempts = int (r.GetInt64 12)
            InputNames =
                optText r 13
                |> Option.bind (fun json ->
                    try
                        JsonSerializer.Deserialize<string list>(json, ApiJson.options) |> Option.ofObj
                    with :? JsonException ->
                        None)
                |> Option.defaultValue []
        }

    let private readArtifact (r: SqliteDataReader) : ArtifactRecord = {
        ArtifactId = r.GetString 0
        RunId = r.GetString 1
        Filename = r.GetString 2
        ContentType = r.GetString 3
        Size = r.GetInt64 4
        Sha256 = r.GetString 5
        Path = r.GetString 6
        CreatedAt = parseTime (r.GetString 7)
    }

    let private uploadColumns =
        "upload_id, filename, size, sha256, content_type, path, created_at"

    let private readUpload (r: SqliteDataReader) : UploadRecord = {
        UploadId = r.GetString 0
        Filename = r.GetString 1
        Size = r.GetInt64 2
        Sha256 = r.GetString 3
        ContentType = r.GetString 4
        Path = r.GetString 5
        CreatedAt = parseTime (r.GetString 6)
    }

    /// An upload (`u`) neither created nor used since `$cutoff` that no queued or running run may
    /// still read, as its input or as a file parameter.
    let private expiredUpload =
        """COALESCE(u.last_used_at, u.created_at) < $cutoff
           AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.status IN ('queued', 'running')
                           AND (instr(r.input_json, u.upload_id) > 0 OR instr(r.params_json, u.upload_id) > 0))"""

    let private artifactColumns =
        "artifact_id, run_id, filename, content_type, size, sha256, path, created_at"

    type private Store(connectionString: string) =
        let connect () = SqliteAccess.connect connectionString
        let command = SqliteAccess.command

        let query sql parameters read =
            SqliteAccess.query connectionString sql parameters read

        let execute sql parameters =
            SqliteAccess.execute connectionString sql parameters

        let opt = SqliteAccess.opt

        let getRun (runId: string) =
            query $"SELECT {runColumns} FROM runs WHERE run_id = $id" [ "$id", box runId ] readRun
            |> List.tryHead

        interface IRunStore with
            member _.CreateRun(run, idempotency, maxQueued) =
                Completed.value (fun () ->
                    use c = connect ()
                    use tx = c.BeginTransaction(deferred = false)

                    let existing =
                        match idempotency with
                        | None -> None
                        | Some(key, hash) ->
                            use cmd =
                                command c "SELECT run_id, request_sha256 FROM runs WHERE idempotency_key = $k" [
                                    "$k", box key
                                ]

                            cmd.Transaction <- tx
                            use r = cmd.ExecuteReader()

                            if r.Read() then
                                Some(r.GetString 0, (if r.IsDBNull 1 then "" else r.GetString 1), hash)
                            else
                                None

                    match existing with
                    | Some(runId, storedHash, hash) ->
                        tx.Commit()

                        if storedHash = hash then
                            match getRun runId with
                            | Some r -> CreateOutcome.Existing r
                            | None -> CreateOutcome.Conflict
                        else
                            CreateOutcome.Conflict
                    | None ->
                        let queued =
                            use cmd = command c "SELECT count(*) FROM runs WHERE status = 'queued'" []
                            cmd.Transaction <- tx
                            Convert.ToInt64(cmd.ExecuteScalar())

                        if queued >= int64 maxQueued then
                            tx.Commit()
                            CreateOutcome.QueueFull
                        else
                            let inputJson = JsonSerializer.Serialize(InputRef.toDto run.Input, ApiJson.options)

                            use cmd =
                                command
                                    c
                                    """INSERT INTO runs (run_id, tool_id, name, status, params_json, input_json, created_at,
                                       progress, idempotency_key, request_sha256, input_names_json)
                                       VALUES ($id, $tool, $name, 'queued', $params, $input, $created, 0, $key, $hash, $names)"""
                                    [
                                        "$id", box run.RunId
                                        "$tool", box run.ToolId
                                        "$name", opt run.Name
                                        "$params", box run.ParamsJson
                                        "$input", box inputJson
                                        "$names", box (JsonSerializer.Serialize(run.InputNames, ApiJson.options))
                                        "$created", box (iso run.CreatedAt)
                                        "$key", opt (idempotency |> Option.map fst)
                                        "$hash", opt (idempotency |> Option.map snd)
                                    ]

                            cmd.Transaction <- tx
                            cmd.ExecuteNonQuery() |> ignore
                            tx.Commit()
                            CreateOutcome.Created { run with Status = RunStatus.Queued })

            member _.GetRun runId =
                Completed.value (fun () -> getRun runId)

            member _.ListRuns(status, toolId, cursor, limit) =
                Completed.value (fun () ->
                    let conditions = [
                        match status with
                        | Some s -> "status = $status", ("$status", box (RunStatus.name s))
                        | None -> ()
                        match toolId with
                        | Some t -> "tool_id = $tool", ("$tool", box t)
                        | None -> ()
                        match cursor |> Option.map (fun c -> c.Split('|', 2)) with
                        | Some [| created; id |] ->
                            "(created_at < $c OR (created_at = $c AND run_id < $cid))", ("$c", box created)
                            "1 = 1", ("$cid", box id)
                        | _ -> ()
                    ]

                    let where =
                        match conditions with
                        | [] -> ""
                        | cs -> " WHERE " + String.Join(" AND ", cs |> List.map fst)

                    let rows =
                        query
                            $"SELECT {runColumns} FROM runs{where} ORDER BY created_at DESC, run_id DESC LIMIT $limit"
                            ((conditions |> List.map snd) @ [ "$limit", box (limit + 1) ])
                            readRun

                    let page = rows |> List.truncate limit

                    let next =
                        if rows.Length > limit then
                            Some(RunRecord.cursorAfter (List.last page))
                        else
                            None

                    page, next)

            member _.ClaimNext(owner, now, leaseUntil) =
                Completed.value (fun () ->
                    // One statement: concurrent claimers (threads or processes) never get the same run.
                    query
                        $"""UPDATE runs SET status = 'running', lease_owner = $owner, lease_expires_at = $until,
                               started_at = COALESCE(started_at, $now), cancel_requested = cancel_requested,
                               attempts = attempts + 1
                            WHERE run_id = (SELECT run_id FROM runs
                                            WHERE status = 'queued' OR (status = 'running' AND lease_expires_at < $now)
                                            ORDER BY created_at, run_id LIMIT 1)
                            RETURNING {runColumns}"""
                        [ "$owner", box owner; "$until", box (iso leaseUntil); "$now", box (iso now) ]
                        readRun
                    |> List.tryHead)

            member _.RenewLease(runId, owner, leaseUntil) =
                Completed.value (fun () ->
                    execute
                        "UPDATE runs SET lease_expires_at = $until WHERE run_id = $id AND lease_owner = $owner AND status = 'running'"
                        [ "$until", box (iso leaseUntil); "$id", box runId; "$owner", box owner ]
                        =
                        1)

            member _.SetProgress(runId, owner, progress) =
                Completed.unit (fun () ->
                    execute
                        "UPDATE runs SET progress = $p WHERE run_id = $id AND lease_owner = $owner AND status = 'running'"
                        [ "$p", box progress; "$id", box runId; "$owner", box owner ]
                    |> ignore)

            member _.Requeue(runId, owner) =
                Completed.unit (fun () ->
                    execute
                        "UPDATE runs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, progress = 0 WHERE run_id = $id AND lease_owner = $owner AND status = 'running'"
                        [ "$id", box runId; "$owner", box owner ]
                    |> ignore)

            member _.Finish(runId, owner, status, error, now) =
                Completed.value (fun () ->
                    execute
                        """UPDATE runs SET status = $status, error = $error, completed_at = $now,
                           progress = CASE WHEN $status = 'completed' THEN 100 ELSE progress END,
                           lease_owner = NULL, lease_expires_at = NULL
                           WHERE run_id = $id AND lease_owner = $owner AND status = 'running'"""
                        [
                            "$status", box (RunStatus.name status)
                            "$error", opt error
                            "$now", box (iso now)
                            "$id", box runId
                            "$owner", box owner
                        ]
                        =
                        1)

            member _.RequestCancel(runId, now) =
                Completed.value (fun () ->
                    execute
                        "UPDATE runs SET status = 'canceled', completed_at = $now, error = 'canceled before it started' WHERE run_id = $id AND status = 'queued'"
                        [ "$id", box runId; "$now", box (iso now) ]
                    |> ignore

                    execute "UPDATE runs SET cancel_requested = 1 WHERE run_id = $id AND status = 'running'" [
                        "$id", box runId
                    ]
                    |> ignore

                    getRun runId)

            member _.AppendLog(runId, level, message, source, now) =
                Completed.value (fun () ->
                    use c = connect ()
                    use tx = c.BeginTransaction(deferred = false)

                    use cmd =
                        command
                            c
                            """INSERT INTO log_entries (run_id, seq, timestamp, level, message, source)
                               VALUES ($id, (SELECT COALESCE(MAX(seq), 0) + 1 FROM log_entries WHERE run_id = $id),
                                       $ts, $level, $message, $source)
                               RETURNING seq"""
                            [
                                "$id", box runId
                                "$ts", box (iso now)
                                "$level", box level
                                "$message", box message
                                "$source", box source
                            ]

                    cmd.Transaction <- tx
                    let seq = Convert.ToInt64(cmd.ExecuteScalar())
                    tx.Commit()
                    seq)

            member _.GetLogs(runId, afterSeq) =
                Completed.value (fun () ->
                    query
                        "SELECT run_id, seq, timestamp, level, message, source FROM log_entries WHERE run_id = $id AND seq > $after ORDER BY seq"
                        [ "$id", box runId; "$after", box afterSeq ]
                        (fun r -> {
                            RunId = r.GetString 0
                            Seq = r.GetInt64 1
                            Timestamp = parseTime (r.GetString 2)
                            Level = r.GetString 3
                            Message = r.GetString 4
                            Source = r.GetString 5
                        }))

            member _.AddArtifacts artifacts =
                Completed.unit (fun () ->
                    use c = connect ()
                    use tx = c.BeginTransaction(deferred = false)

                    for a in artifacts do
                        use cmd =
                            command
                                c
                                $"INSERT INTO artifacts ({artifactColumns}) VALUES ($id, $run, $name, $type, $size, $sha, $path, $created)"
                                [
                                    "$id", box a.ArtifactId
                                    "$run", box a.RunId
                                    "$name", box a.Filename
                                    "$type", box a.ContentType
                                    "$size", box a.Size
                                    "$sha", box a.Sha256
                                    "$path", box a.Path
                                    "$created", box (iso a.CreatedAt)
                                ]

                        cmd.Transaction <- tx
                        cmd.ExecuteNonQuery() |> ignore

                    tx.Commit())

            member _.ListArtifacts runId =
                Completed.value (fun () ->
                    match runId with
                    | Some id ->
                        query
                            $"SELECT {artifactColumns} FROM artifacts WHERE run_id = $id ORDER BY rowid"
                            [ "$id", box id ]
                            readArtifact
                    | None ->
                        query
                            $"SELECT {artifactColumns} FROM artifacts ORDER BY created_at DESC, rowid"
                            []
                            readArtifact)

            member _.GetArtifact artifactId =
                Completed.value (fun () ->
                    query
                        $"SELECT {artifactColumns} FROM artifacts WHERE artifact_id = $id"
                        [ "$id", box artifactId ]
                        readArtifact
                    |> List.tryHead)

            member _.AddUpload upload =
                Completed.value (fun () ->
                    let inserted =
                        execute
                            $"INSERT INTO uploads ({uploadColumns}) VALUES ($id, $name, $size, $sha, $type, $path, $created) ON CONFLICT (sha256) DO NOTHING"
                            [
                                "$id", box upload.UploadId
                                "$name", box upload.Filename
                                "$size", box upload.Size
                                "$sha", box upload.Sha256
                                "$type", box upload.ContentType
                                "$path", box upload.Path
                                "$created", box (iso upload.CreatedAt)
                            ]
                            =
                            1

                    if inserted then
                        upload, true
                    else
                        let existing =
                            query
                                $"SELECT {uploadColumns} FROM uploads WHERE sha256 = $sha"
                                [ "$sha", box upload.Sha256 ]
                                readUpload

                        existing.Head, false)

            member _.GetUpload uploadId =
                Completed.value (fun () ->
                    query
                        $"SELECT {uploadColumns} FROM uploads WHERE upload_id = $id"
                        [ "$id", box uploadId ]
                        readUpload
                    |> List.tryHead)

            member _.ListUploads limit =
                Completed.value (fun () ->
                    query
                        $"SELECT {uploadColumns} FROM uploads ORDER BY created_at DESC, upload_id DESC LIMIT $limit"
                        [ "$limit", box (int64 limit) ]
                        readUpload)

            member _.DeleteUpload uploadId =
                Completed.value (fun () ->
                    execute "DELETE FROM uploads WHERE upload_id = $id" [ "$id", box uploadId ] = 1)

            member _.TouchUpload(uploadId, now) =
                Completed.unit (fun () ->
                    execute "UPDATE uploads SET last_used_at = $now WHERE upload_id = $id" [
                        "$id", box uploadId
                        "$now", box (iso now)
                    ]
                    |> ignore)

            member _.ExpiredUploads cutoff =
                Completed.value (fun () ->
                    query
                        $"SELECT {uploadColumns} FROM uploads u WHERE {expiredUpload} ORDER BY created_at"
                        [ "$cutoff", box (iso cutoff) ]
                        readUpload)

            member _.DeleteExpiredUpload(uploadId, cutoff) =
                Completed.value (fun () ->
                    execute $"DELETE FROM uploads AS u WHERE u.upload_id = $id AND {expiredUpload}" [
                        "$id", box uploadId
                        "$cutoff", box (iso cutoff)
                    ]
                        =
                        1)

            member _.ExpiredArtifacts cutoff =
                Completed.value (fun () ->
                    query
                        $"SELECT {artifactColumns} FROM artifacts WHERE created_at < $cutoff ORDER BY created_at, rowid"
                        [ "$cutoff", box (iso cutoff) ]
                        readArtifact)

            member _.DeleteArtifact artifactId =
                Completed.value (fun () ->
                    execute "DELETE FROM artifacts WHERE artifact_id = $id" [ "$id", box artifactId ] = 1)

            member _.Storage() =
                Completed.value (fun () ->
                    query
                        """SELECT (SELECT count(*) FROM uploads), (SELECT COALESCE(SUM(size), 0) FROM uploads),
                                  (SELECT count(*) FROM artifacts), (SELECT COALESCE(SUM(size), 0) FROM artifacts)"""
                        []
                        (fun r -> {
                            Uploads = int (r.GetInt64 0)
                            UploadBytes = r.GetInt64 1
                            Artifacts = int (r.GetInt64 2)
                            ArtifactBytes = r.GetInt64 3
                        })
                    |> List.head)

    /// The run store over the (already opened and migrated) database in `dataDir`.
    let create (dataDir: string) : IRunStore =
        Store(SqliteStore.connectionString dataDir) :> IRunStore
