namespace CtsLite.Server

open System
open System.IO
open System.Threading
open System.Threading.Tasks
open Microsoft.Data.Sqlite

/// Why the store cannot serve.
[<RequireQualifiedAccess>]
type StoreError =
    | Unavailable of reason: string
    | SchemaTooNew of found: int * supported: int

/// The database itself: its schema version, a round trip for the health check, its size on
/// disk. What it holds (runs, log entries, uploads, artifacts) is reached through `IRunStore`;
/// the split keeps health reporting free of the run contract. Implementations must not assume
/// they are the only process using the database (several workers, a PostgreSQL store).
type IStore =
    inherit IDisposable

    /// The schema version the store is at.
    abstract SchemaVersion: int

    /// A round trip to the store, for health checks.
    abstract Check: CancellationToken -> Task<Result<unit, StoreError>>

    /// A write the store takes and then rolls back, for health checks: a store that reads but
    /// cannot write (a read-only file, a full disk) fails here, not on the next run.
    abstract CheckWrite: CancellationToken -> Task<Result<unit, StoreError>>

    /// Bytes the store occupies on disk.
    abstract SizeBytes: unit -> int64

/// Describing store errors.
[<RequireQualifiedAccess>]
module StoreError =

    /// One line naming the problem.
    let describe (error: StoreError) : string =
        match error with
        | StoreError.Unavailable reason -> $"store unavailable: {reason}"
        | StoreError.SchemaTooNew(found, supported) ->
            $"store schema version {found} is newer than this build supports ({supported}); upgrade CtsLite"

/// The embedded SQLite store in the data folder.
[<RequireQualifiedAccess>]
module SqliteStore =

    /// The database file name inside the data folder.
    [<Literal>]
    let FileName = "cts-lite.db"

    /// Ordered migrations; `PRAGMA user_version` records the last one applied.
    let migrations: (int * string) list = [
        1,
        """
            CREATE TABLE runs (
                run_id TEXT PRIMARY KEY,
                tool_id TEXT NOT NULL,
                name TEXT,
                status TEXT NOT NULL CHECK (status IN ('queued','running','completed','failed','canceled')),
                params_json TEXT NOT NULL,
                input_json TEXT,
                created_at TEXT NOT NULL,
                started_at TEXT,
                completed_at TEXT,
                progress REAL,
                error TEXT,
                lease_owner TEXT,
                lease_expires_at TEXT,
                idempotency_key TEXT UNIQUE,
                request_sha256 TEXT
            );
            CREATE INDEX runs_by_status ON runs (status, created_at);
            CREATE TABLE log_entries (
                run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
                seq INTEGER NOT NULL,
                timestamp TEXT NOT NULL,
                level TEXT NOT NULL,
                message TEXT NOT NULL,
                source TEXT NOT NULL,
                PRIMARY KEY (run_id, seq)
            );
            CREATE TABLE uploads (
                upload_id TEXT PRIMARY KEY,
                filename TEXT NOT NULL,
                size INTEGER NOT NULL,
                sha256 TEXT NOT NULL UNIQUE,
                content_type TEXT NOT NULL,
                path TEXT NOT NULL,
                created_at TEXT NOT NULL
            );
            CREATE TABLE artifacts (
                artifact_id TEXT PRIMARY KEY,
                run_id TEXT NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
                filename TEXT NOT NULL,
                content_type TEXT NOT NULL,
                size INTEGER NOT NULL,
                sha256 TEXT NOT NULL,
                path TEXT NOT NULL,
                created_at TEXT NOT NULL
            );
            CREATE INDEX artifacts_by_run ON artifacts (run_id);
            """
        2,
        """
            ALTER TABLE runs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
            CREATE INDEX runs_by_tool ON runs (tool_id, created_at);
            """
        3,
        """
            ALTER TABLE uploads ADD COLUMN last_used_at TEXT;
            CREATE INDEX artifacts_by_created ON artifacts (created_at);
            """
        4,
        """
            ALTER TABLE runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
            """
        5,
        """
            CREATE TABLE monitor_sessions (
                session_id TEXT PRIMARY KEY,
                monitor_id TEXT NOT NULL,
                params_json TEXT NOT NULL,
                source_json TEXT NOT NULL,
                record INTEGER NOT NULL,
                update_ms INTEGER NOT NULL,
                status TEXT NOT NULL CHECK (status IN ('running','ended','stopped','failed')),
                source_status TEXT NOT NULL,
                created_at TEXT NOT NULL,
                stopped_at TEXT,
                reason TEXT,
                owner TEXT NOT NULL,
                lease_expires_at TEXT NOT NULL,
                events INTEGER NOT NULL DEFAULT 0,
                foreign_messages INTEGER NOT NULL DEFAULT 0,
                corrupt INTEGER NOT NULL DEFAULT 0,
                dropped INTEGER NOT NULL DEFAULT 0,
                seq INTEGER NOT NULL DEFAULT 0,
                final_json TEXT,
                recordings_json TEXT NOT NULL DEFAULT '[]'
            );
            CREATE INDEX monitor_sessions_by_status ON monitor_sessions (status, created_at);
            """
        6,
        """
            ALTER TABLE runs ADD COLUMN input_names_json TEXT;
            """
    ]

    /// The schema version this build creates and understands.
    let supportedVersion: int = migrations |> List.map fst |> List.max

    let private scalar (connection: SqliteConnection) (sql: string) : obj =
        use command = connection.CreateCommand()
        command.CommandText <- sql
        command.ExecuteScalar()

    let private execute (connection: SqliteConnection) (transaction: SqliteTransaction) (sql: string) =
        use command = connection.CreateCommand()
        command.Transaction <- transaction
        command.CommandText <- sql
        command.ExecuteNonQuery() |> ignore

    /// Brings the database to `supportedVersion`, each migration in its own transaction. An
    /// immediate transaction serialises concurrent starters; each re-reads the version inside it.
    let private migrate (connection: SqliteConnection) : Result<int, StoreError> =
        let current () =
            Convert.ToInt32(scalar connection "PRAGMA user_version")

        match current () with
        | v when v > supportedVersion -> Error(StoreError.SchemaTooNew(v, supportedVersion))
        | _ ->
            for version, sql in migrations do
                use transaction = connection.BeginTransaction(deferred = false)

                if Convert.ToInt32(scalar connection "PRAGMA user_version") < version then
                    execute connection transaction sql
                    execute connection transaction $"PRAGMA user_version = {version}"

                transaction.Commit()

            Ok(current ())

    type private Store(connectionString: string, databasePath: string, version: int) =
        interface IStore with
            member _.SchemaVersion = version

            member _.Check(cancellationToken: CancellationToken) = task {
                try
                    use connection = new SqliteConnection(connectionString)
                    do! connection.OpenAsync cancellationToken
                    use command = connection.CreateCommand()
                    command.CommandText <- "SELECT count(*) FROM sqlite_master"
                    let! _ = command.ExecuteScalarAsync cancellationToken
                    return Ok()
                with :? SqliteException as e ->
                    return Error(StoreError.Unavailable $"SQLite error {e.SqliteErrorCode}")
            }

            member _.CheckWrite(cancellationToken: CancellationToken) = task {
                try
                    use connection = new SqliteConnection(connectionString)
                    do! connection.OpenAsync cancellationToken
                    use transaction = connection.BeginTransaction()
                    use command = connection.CreateCommand()
                    command.Transaction <- transaction
                    // Rewriting the header's version is a real write, and changes nothing.
                    command.CommandText <- $"PRAGMA user_version = {version}"
                    let! _ = command.ExecuteNonQueryAsync cancellationToken
                    transaction.Rollback()
                    return Ok()
                with :? SqliteException as e ->
                    let why =
                        match e.SqliteErrorCode with
                        | 8 -> "the database is read-only"
                        | 13 -> "the disk is full"
                        | code -> $"SQLite error {code}"

                    return Error(StoreError.Unavailable $"cannot write: {why}")
            }

            member _.SizeBytes() =
                [ databasePath; databasePath + "-wal"; databasePath + "-shm" ]
                |> List.sumBy (fun p ->
                    match File.Exists p with
                    | true -> FileInfo(p).Length
                    | false -> 0L)

            member _.Dispose() = SqliteConnection.ClearAllPools()

    let private connectionStringWith (mode: SqliteOpenMode) (dataDir: string) : string =
        SqliteConnectionStringBuilder(
            DataSource = Path.Combine(dataDir, FileName),
            Mode = mode,
            Cache = SqliteCacheMode.Private,
            Pooling = true,
            DefaultTimeout = 30
        )
            .ToString()

    /// The connection string of the database in `dataDir`.
    let connectionString (dataDir: string) : string =
        connectionStringWith SqliteOpenMode.ReadWriteCreate dataDir

    /// The existing store in `dataDir` opened read-only: what a read-only file or mount looks like
    /// to the service (the seam for storage-fault tests; tests run as root, which ignores modes).
    let openReadOnly (dataDir: string) : Result<IStore, StoreError> =
        let databasePath = Path.Combine(dataDir, FileName)
        let connectionString = connectionStringWith SqliteOpenMode.ReadOnly dataDir

        try
            use connection = new SqliteConnection(connectionString)
            connection.Open()
            let version = Convert.ToInt32(scalar connection "PRAGMA user_version")
            Ok(new Store(connectionString, databasePath, version) :> IStore)
        with :? SqliteException as e ->
            Error(StoreError.Unavailable $"cannot open {databasePath}: SQLite error {e.SqliteErrorCode}")

    /// Opens (creating and migrating as needed) the store in `dataDir`.
    let openIn (dataDir: string) : Result<IStore, StoreError> =
        let databasePath = Path.Combine(dataDir, FileName)
        let connectionString = connectionString dataDir

        try
            use connection = new SqliteConnection(connectionString)
            connection.Open()
            // WAL lets readers proceed while a writer commits; busy_timeout rides out other writers.
            scalar connection "PRAGMA journal_mode = WAL" |> ignore
            scalar connection "PRAGMA busy_timeout = 5000" |> ignore

            migrate connection
            |> Result.map (fun version -> new Store(connectionString, databasePath, version) :> IStore)
        with :? SqliteException as e ->
            Error(StoreError.Unavailable $"cannot open {databasePath}: SQLite error {e.SqliteErrorCode}")
