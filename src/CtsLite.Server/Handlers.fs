namespace CtsLite.Server

open System
open System.Diagnostics
open System.IO
open System.Threading
open System.Threading.Tasks
open Microsoft.AspNetCore.Http
open Microsoft.Extensions.DependencyInjection
open CtsLite
open CtsLite.Tools
open CtsLite.Server.Http

/// Work in progress counted against a limit (uploads streaming at once), across all callers.
[<Sealed>]
type ConcurrencyGate(limit: int) =
    let mutable inUse = 0

    /// The limit this gate enforces.
    member _.Limit = limit

    /// How many holders there are now.
    member _.InUse = Volatile.Read &inUse

    /// Takes a slot; false (and nothing taken) when all are in use.
    member _.TryEnter() : bool =
        if Interlocked.Increment &inUse > limit then
            Interlocked.Decrement &inUse |> ignore
            false
        else
            true

    /// Gives back a slot taken by `TryEnter`.
    member _.Exit() : unit = Interlocked.Decrement &inUse |> ignore

/// Slots per caller: at most `limit` held by one caller at once.
[<Sealed>]
type CallerGate(limit: int) =
    let held = Collections.Generic.Dictionary<string, int>()

    /// Takes one of `caller`'s slots; false (and nothing taken) when it holds all of them.
    member _.TryEnter(caller: string) : bool =
        lock held (fun () ->
            match held.TryGetValue caller with
            | true, n when n >= limit -> false
            | true, n ->
                held[caller] <- n + 1
                true
            | false, _ ->
                held[caller] <- 1
                true)

    /// Gives back a slot taken by `TryEnter`.
    member _.Exit(caller: string) : unit =
        lock held (fun () ->
            match held.TryGetValue caller with
            | true, n when n > 1 -> held[caller] <- n - 1
            | _ -> held.Remove caller |> ignore)

/// Which limit refused a slot.
[<RequireQualifiedAccess>]
type SlotRefusal =
    /// The caller holds all of its own slots.
    | CallerFull
    /// Every slot of the service is held.
    | AllFull

/// Slots of one kind (uploads, log streams): at most `total` held at once, at most `perCaller` by
/// one caller. A refused slot takes nothing; `Exit` gives back what `TryEnter` took.
[<Sealed>]
type SlotGate(total: int, perCaller: int) =
    let all = ConcurrencyGate total
    let callers = CallerGate perCaller

    /// The service-wide limit.
    member _.Limit = total
    /// The per-caller limit.
    member _.PerCaller = perCaller
    /// How many slots are held now.
    member _.InUse = all.InUse

    /// Takes a slot for `caller`, or says which limit refuses it.
    member _.TryEnter(caller: string) : Result<unit, SlotRefusal> =
        if not (callers.TryEnter caller) then
            Error SlotRefusal.CallerFull
        elif not (all.TryEnter()) then
            callers.Exit caller
            Error SlotRefusal.AllFull
        else
            Ok()

    /// Gives back a slot `TryEnter` took for `caller`.
    member _.Exit(caller: string) : unit =
        all.Exit()
        callers.Exit caller

/// What the handlers need from the running service; one instance per service.
type ServiceContext = {
    Config: ServiceConfig
    Store: IStore
    /// Runs, their logs and artifacts (same database as `Store`).
    Runs: IRunStore
    Time: TimeProvider
    StartedAt: DateTimeOffset
    /// Features the service really offers, as listed by `/v1/capabilities`.
    Features: string list
    /// Uploads streaming now, against `max_concurrent_uploads` and `max_uploads_per_caller`.
    Uploads: SlotGate
    /// Log streams open now, against `max_sse_streams` and `max_sse_streams_per_caller`.
    Streams: SlotGate
    /// Monitor sessions (same database as `Store`).
    Sessions: IMonitorStore
    /// Creates a new file to write an upload into (the seam for storage-fault tests: a disk
    /// that fills up is a stream that fails, since tests run as root).
    CreateFile: string -> IO.Stream
}

/// The handlers of the `/v1` endpoints.
[<RequireQualifiedAccess>]
module Handlers =

    /// The request's service context (every handler module reads it through this).
    let service (ctx: HttpContext) =
        ctx.RequestServices.GetRequiredService<ServiceContext>()

    /// The handler `f` for the record the route argument `arg` names (found by `find`), or a 404
    /// problem naming the `noun` and the id.
    let withRecord
        (arg: string)
        (noun: string)
        (find: ServiceContext -> string -> Task<'T option>)
        (args: RouteArgs)
        (f: ServiceContext -> 'T -> HttpHandler)
        : HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) -> task {
            let svc = service ctx
            let id = args[arg]

            match! find svc id with
            | None -> return! Problem.notFound $"no {noun} '{id}'" next ctx
            | Some record -> return! f svc record next ctx
        }

    /// A query parameter's value, when given and not empty.
    let query (ctx: HttpContext) (name: string) : string option =
        ctx.Request.Query[name].ToString() |> Option.ofObj |> Option.filter ((<>) "")

    /// `?limit=` of a listing: 1 to 500, `fallback` when absent.
    let limit (ctx: HttpContext) (fallback: int) : Result<int, string> =
        match query ctx "limit" |> Option.map Int32.TryParse with
        | None -> Ok fallback
        | Some(true, n) when n >= 1 && n <= 500 -> Ok n
        | Some _ -> Error "limit must be an integer from 1 to 500"

    /// 422 with every field error, each with its JSON pointer.
    let unprocessable (errors: Api.FieldError list) : HttpHandler =
        let detail =
            String.Join("; ", errors |> List.map (fun e -> $"{e.Pointer}: {e.Detail}"))

        Problem.write StatusCodes.Status422UnprocessableEntity detail [ "errors", box errors ]

    /// `"{d}d {h}h {m}m {s}s"`.
    let formatUptime (uptime: TimeSpan) : string =
        $"{uptime.Days}d {uptime.Hours}h {uptime.Minutes}m {uptime.Seconds}s"

    let private checkTimeout = TimeSpan.FromSeconds 5.0

    let private runCheck
        (name: string)
        (check: CancellationToken -> Task<Result<unit, string>>)
        (cancellationToken: CancellationToken)
        : Task<Api.HealthCheck> = task {
        let started = Stopwatch.GetTimestamp()
        use timeout = CancellationTokenSource.CreateLinkedTokenSource cancellationToken
        timeout.CancelAfter checkTimeout

        let! outcome = task {
            try
                return! check timeout.Token
            with :? OperationCanceledException ->
                return Error $"timed out after {checkTimeout.TotalSeconds:F0} s"
        }

        let durationMs = Stopwatch.GetElapsedTime(started).TotalMilliseconds

        let check: Api.HealthCheck =
            match outcome with
            | Ok() -> {
                Name = name
                Status = "pass"
                DurationMs = durationMs
                Detail = "ok"
              }
            | Error detail -> {
                Name = name
                Status = "fail"
                DurationMs = durationMs
                Detail = detail
              }

        return check
    }

    /// Writes, reads back and deletes a probe file in the data folder.
    let checkDataDir (dataDir: string) (cancellationToken: CancellationToken) : Task<Result<unit, string>> = task {
        let probe = Path.Combine(dataDir, $".health-{Guid.NewGuid():N}")

        try
            try
                do! File.WriteAllBytesAsync(probe, [| 1uy |], cancellationToken)
                let! back = File.ReadAllBytesAsync(probe, cancellationToken)

                return
                    match back with
                    | [| 1uy |] -> Ok()
                    | _ -> Error "data dir probe file read back wrong"
            with
            | :? UnauthorizedAccessException -> return Error "data dir is not writable (permission denied)"
            | :? DirectoryNotFoundException -> return Error "data dir does not exist"
            | :? IOException -> return Error "data dir is not writable (I/O error)"
        finally
            try
                File.Delete probe
            with _ ->
                ()
    }

    /// What the health checks found, and when.
    type internal HealthSnapshot = {
        Checks: Api.HealthCheck array
        DatabaseBytes: int64
        Totals: StorageTotals
        Taken: int64
    }

    /// How long a health snapshot answers: probes and monitors polling at any rate cost the disk
    /// and the database at most one round of checks a second.
    let healthMaxAge = TimeSpan.FromSeconds 1.0

    let private takeSnapshot (svc: ServiceContext) : Task<HealthSnapshot> = task {
        let storeCheck (ct: CancellationToken) = task {
            let! result = svc.Store.Check ct
            return result |> Result.mapError StoreError.describe
        }

        let storeWrite (ct: CancellationToken) = task {
            let! result = svc.Store.CheckWrite ct
            return result |> Result.mapError StoreError.describe
        }

        // Shared by every caller: no single caller's disconnect may cancel it.
        let! checks =
            Task.WhenAll(
                runCheck "data_dir_writable" (checkDataDir svc.Config.DataDir) CancellationToken.None,
                runCheck "store_reachable" storeCheck CancellationToken.None,
                runCheck "store_writable" storeWrite CancellationToken.None
            )

        let healthy = checks |> Array.forall (fun c -> c.Status = "pass")

        // The totals come from the store; when it is down the checks already say so.
        let! totals = task {
            if healthy then
                try
                    return! svc.Runs.Storage()
                with :? Data.Common.DbException ->
                    return StorageTotals.Empty
            else
                return StorageTotals.Empty
        }

        return {
            Checks = checks
            DatabaseBytes = svc.Store.SizeBytes()
            Totals = totals
            Taken = svc.Time.GetTimestamp()
        }
    }

    /// The service's last health snapshot (or the one being taken), shared by every caller: one
    /// per service, a DI singleton.
    [<Sealed>]
    type HealthMonitor(svc: ServiceContext) =
        let gate = obj ()
        let mutable current: Task<HealthSnapshot> option = None

        member internal _.Snapshot() : Task<HealthSnapshot> =
            lock gate (fun () ->
                match current with
                | Some t when
                    not t.IsCompleted
                    || (t.IsCompletedSuccessfully
                        && svc.Time.GetElapsedTime t.Result.Taken < healthMaxAge)
                    ->
                    t
                | _ ->
                    let t = takeSnapshot svc
                    current <- Some t
                    t)

    let private snapshot (ctx: HttpContext) : Task<HealthSnapshot> =
        ctx.RequestServices.GetRequiredService<HealthMonitor>().Snapshot()

    /// `GET /v1/health`: 200 when every check passes, 503 otherwise. The checks run at most once
    /// per `healthMaxAge`; callers in between share the last result.
    let health: HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) -> task {
            let svc = service ctx
            let! snap = snapshot ctx
            let healthy = snap.Checks |> Array.forall (fun c -> c.Status = "pass")
            let now = svc.Time.GetUtcNow()
            let uptime = now - svc.StartedAt
            let totals = snap.Totals

            let body: Api.HealthResponse = {
                Status = if healthy then "healthy" else "unhealthy"
                Version = Product.version
                Uptime = formatUptime uptime
                UptimeSeconds = Math.Round(uptime.TotalSeconds, 3)
                Timestamp = now
                StoreSizeBytes = snap.DatabaseBytes + totals.UploadBytes + totals.ArtifactBytes
                Storage = {
                    DatabaseBytes = snap.DatabaseBytes
                    Uploads = totals.Uploads
                    UploadBytes = totals.UploadBytes
                    Artifacts = totals.Artifacts
                    ArtifactBytes = totals.ArtifactBytes
                    RetentionDays = svc.Config.RetentionDays
                }
                Checks = List.ofArray snap.Checks
            }

            let status =
                if healthy then
                    StatusCodes.Status200OK
                else
                    StatusCodes.Status503ServiceUnavailable

            return! (setStatusCode status >=> json body) next ctx
        }

    /// `GET /v1/version`.
    let version: HttpHandler =
        let body: Api.VersionResponse = {
            ApiVersion = Product.ApiVersion
            MinClientVersion = Product.MinClientVersion
            ServerVersion = Product.version
        }

        json body

    /// The `/v1/capabilities` body: it cannot change while the service runs, so it is serialized
    /// once (a DI singleton).
    type CapabilitiesDocument = {
        Bytes: byte array
    } with

        /// The document of `svc`, serialized with `options`.
        static member Of (svc: ServiceContext) (options: Text.Json.JsonSerializerOptions) : CapabilitiesDocument =
            let body: Api.CapabilitiesResponse = {
                Tools = Catalog.descriptors |> List.map Api.toolCapability
                Monitors = CtsLite.Monitors.Catalog.descriptors |> List.map Api.toolCapability
                ApiVersion = Product.ApiVersion
                Features = svc.Features
            }

            {
                Bytes = Text.Json.JsonSerializer.SerializeToUtf8Bytes(body, options)
            }

    /// `GET /v1/capabilities`: only tools and monitors that actually run.
    let capabilities: HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) ->
            let document = ctx.RequestServices.GetRequiredService<CapabilitiesDocument>()
            setBody "application/json; charset=utf-8" document.Bytes next ctx
