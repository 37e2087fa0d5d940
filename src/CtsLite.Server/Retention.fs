namespace CtsLite.Server

open System
open System.IO
open System.Threading
open System.Threading.Tasks
open Microsoft.Extensions.Hosting
open Microsoft.Extensions.Logging

/// What one retention sweep removed.
type SweepReport = {
    Uploads: int
    UploadBytes: int64
    Artifacts: int
    ArtifactBytes: int64
    /// Upload files no record will ever name: `.part` files of uploads that died, and files whose
    /// record was never written (the process died between the rename and the insert).
    StrayFiles: int
}

/// Deleting uploads and artifacts older than `retention_days`, and stray upload files.
[<RequireQualifiedAccess>]
module Retention =

    /// A stray upload file is left this long, so an upload streaming right now (its `.part` file
    /// keeps being written) or about to be recorded is never touched.
    let strayAge = TimeSpan.FromHours 1.0

    let private deleteFile (path: string) =
        try
            File.Delete path
        with
        | :? IOException
        | :? UnauthorizedAccessException -> ()

    /// One sweep at `now`. Records go first, then files: a download racing the sweep gets a 404,
    /// never a file cut short.
    let sweep (config: ServiceConfig) (runs: IRunStore) (now: DateTimeOffset) : Task<SweepReport> = task {
        let mutable report = {
            Uploads = 0
            UploadBytes = 0L
            Artifacts = 0
            ArtifactBytes = 0L
            StrayFiles = 0
        }

        if config.RetentionDays > 0 then
            let cutoff = now - TimeSpan.FromDays(float config.RetentionDays)

            let! expiredUploads = runs.ExpiredUploads cutoff

            for u in expiredUploads do
                let! deleted = runs.DeleteExpiredUpload(u.UploadId, cutoff)

                if deleted then
                    deleteFile u.Path

                    report <- {
                        report with
                            Uploads = report.Uploads + 1
                            UploadBytes = report.UploadBytes + u.Size
                    }

            let runsRoot = Path.Combine(config.DataDir, "runs")

            let! expiredArtifacts = runs.ExpiredArtifacts cutoff

            for a in expiredArtifacts do
                let! deleted = runs.DeleteArtifact a.ArtifactId

                if deleted then
                    deleteFile a.Path

                    report <- {
                        report with
                            Artifacts = report.Artifacts + 1
                            ArtifactBytes = report.ArtifactBytes + a.Size
                    }

            // The folder of a run that finished before the cutoff goes once its artifacts have:
            // with what a failed or canceled run left behind (never recorded as artifacts).
            if Directory.Exists runsRoot then
                for dir in List.ofSeq (Directory.EnumerateDirectories runsRoot) do
                    let! run = runs.GetRun(Path.GetFileName dir)

                    let finishedBefore =
                        match run with
                        | Some run ->
                            RunStatus.isTerminal run.Status
                            && run.CompletedAt |> Option.exists (fun t -> t < cutoff)
                        | None -> Directory.GetLastWriteTimeUtc dir < cutoff.UtcDateTime

                    let! left = runs.ListArtifacts(Some(Path.GetFileName dir))

                    if finishedBefore && List.isEmpty left then
                        try
                            Directory.Delete(dir, true)
                        with
                        | :? IOException
                        | :? UnauthorizedAccessException -> ()

        let uploads = Path.Combine(config.DataDir, "uploads")

        if Directory.Exists uploads then
            for file in List.ofSeq (Directory.EnumerateFiles uploads) do
                let name = Path.GetFileName file
                let stale = now.UtcDateTime - File.GetLastWriteTimeUtc file > strayAge

                let! stray =
                    if name.StartsWith '.' then
                        Task.FromResult(name.EndsWith(".part", StringComparison.Ordinal))
                    else
                        task {
                            let! upload = runs.GetUpload name
                            return upload.IsNone
                        }

                if stale && stray then
                    deleteFile file

                    report <- {
                        report with
                            StrayFiles = report.StrayFiles + 1
                    }

        return report
    }

/// Sweeps at start and then every hour; several processes sweeping the same store is harmless.
[<Sealed>]
type RetentionSweeper(config: ServiceConfig, runs: IRunStore, time: TimeProvider, logger: ILogger<RetentionSweeper>) =
    inherit BackgroundService()

    /// Time between sweeps.
    member val Interval = TimeSpan.FromHours 1.0 with get, set

    override this.ExecuteAsync(stopping: CancellationToken) : Task = task {
        // Off the start-up path: the host is listening before the first sweep runs.
        do! Task.Yield()

        while not stopping.IsCancellationRequested do
            try
                let! r = Retention.sweep config runs (time.GetUtcNow())

                if r.Uploads + r.Artifacts + r.StrayFiles > 0 then
                    logger.LogInformation(
                        "Retention ({Days} days): deleted {Uploads} uploads ({UploadBytes} bytes), {Artifacts} artifacts ({ArtifactBytes} bytes), {Stray} stray upload files",
                        config.RetentionDays,
                        r.Uploads,
                        r.UploadBytes,
                        r.Artifacts,
                        r.ArtifactBytes,
                        r.StrayFiles
                    )
            with e ->
                logger.LogError(e, "retention sweep failed; retrying at the next interval")

            try
                do! Task.Delay(this.Interval, time, stopping)
            with :? OperationCanceledException ->
                ()
    }
