using System;
using System.Collections.Generic;
using System.Linq;
using System.Net;
using System.Text.Json;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;

namespace CtsLite
{
    /// <summary>Where a run is in its life.</summary>
    public enum RunStatus
    {
        /// <summary>Waiting for a worker.</summary>
        Queued,
        /// <summary>A worker is running the tool.</summary>
        Running,
        /// <summary>The tool completed; its artifacts are listed.</summary>
        Completed,
        /// <summary>The tool could not complete (<see cref="RunInfo.Error"/> says why).</summary>
        Failed,
        /// <summary>Cancelled on request.</summary>
        Canceled,
    }

    /// <summary>What a run on the service reads: uploads (see <see cref="CtsLiteClient.UploadAsync(string, IProgress{long}?, System.Threading.CancellationToken)"/>) or a path under the service's input roots.</summary>
    public sealed class RunInput
    {
        private RunInput(InputRef input) => Ref = input;

        internal InputRef Ref { get; }

        /// <summary>One uploaded log, CSV or DBC.</summary>
        public static RunInput FromUpload(string uploadId) =>
            new(InputRef.NewUpload(uploadId ?? throw new ArgumentNullException(nameof(uploadId))));

        /// <summary>Uploaded logs read in order as one time line (a route's segments uploaded one by one).</summary>
        public static RunInput FromUploads(IEnumerable<string> uploadIds)
        {
            if (uploadIds is null) throw new ArgumentNullException(nameof(uploadIds));
            var ids = uploadIds.ToArray();
            if (ids.Length == 0 || ids.Any(string.IsNullOrEmpty)) throw new ArgumentException("give one upload id at least, none empty", nameof(uploadIds));
            return new(InputRef.NewUploads(ListModule.OfArray(ids)));
        }

        /// <summary>A log file, segment folder or route address under one of the service's <c>input_roots</c>.</summary>
        public static RunInput FromPath(string path) =>
            new(InputRef.NewPath(path ?? throw new ArgumentNullException(nameof(path))));
    }

    /// <summary>A run on the service: the Run Response.</summary>
    public sealed class RunInfo
    {
        internal RunInfo(Api.RunResponse r)
        {
            RunId = r.RunId;
            Status = Wire.Status(r.Status);
            ToolId = r.ToolId;
            Name = Wire.Or(r.Name);
            InputType = r.Input.Type;
            InputFileNames = r.Input.Filenames.ToArray();
            Parameters = r.Params.Clone();
            CreatedAt = r.CreatedAt;
            StartedAt = Wire.OrNull(r.StartedAt);
            CompletedAt = Wire.OrNull(r.CompletedAt);
            Progress = r.Progress;
            ArtifactIds = r.Artifacts.ToArray();
            Error = Wire.Or(r.Error);
        }

        /// <summary>The run's id.</summary>
        public string RunId { get; }

        /// <summary>Where it is.</summary>
        public RunStatus Status { get; }

        /// <summary>Completed, failed or canceled: it will not change again.</summary>
        public bool IsFinished => Status is RunStatus.Completed or RunStatus.Failed or RunStatus.Canceled;

        /// <summary>The tool it runs.</summary>
        public string ToolId { get; }

        /// <summary>The name it was given, if any.</summary>
        public string? Name { get; }

        /// <summary><c>path</c>, <c>upload</c> or <c>uploads</c>.</summary>
        public string InputType { get; }

        /// <summary>The names the input's files are known by (each upload's file name), in order.</summary>
        public IReadOnlyList<string> InputFileNames { get; }

        /// <summary>The parameters after validation, defaults included, as a JSON object.</summary>
        public JsonElement Parameters { get; }

        /// <summary>When it was asked for.</summary>
        public DateTimeOffset CreatedAt { get; }

        /// <summary>When a worker started it.</summary>
        public DateTimeOffset? StartedAt { get; }

        /// <summary>When it finished.</summary>
        public DateTimeOffset? CompletedAt { get; }

        /// <summary>0–100.</summary>
        public double Progress { get; }

        /// <summary>Its artifacts' ids (see <see cref="CtsLiteClient.GetRunArtifactsAsync"/>).</summary>
        public IReadOnlyList<string> ArtifactIds { get; }

        /// <summary>Why it failed or was canceled.</summary>
        public string? Error { get; }

        /// <inheritdoc />
        public override string ToString() => $"{RunId} {ToolId} {Wire.Name(Status)}";
    }

    /// <summary>One line of a run's log on the service.</summary>
    public sealed class RunLogEntry
    {
        internal RunLogEntry(Api.LogEntry e)
        {
            Sequence = e.Seq;
            Timestamp = e.Timestamp;
            Level = e.Level switch
            {
                "debug" => ToolLogLevel.Debug,
                "warning" => ToolLogLevel.Warning,
                "error" => ToolLogLevel.Error,
                _ => ToolLogLevel.Information,
            };
            Message = e.Message;
            Source = e.Source;
        }

        /// <summary>1 for the run's first line, one more for each after it (what a resumed stream continues after).</summary>
        public long Sequence { get; }

        /// <summary>When it was written.</summary>
        public DateTimeOffset Timestamp { get; }

        /// <summary>How much it matters.</summary>
        public ToolLogLevel Level { get; }

        /// <summary>The line.</summary>
        public string Message { get; }

        /// <summary><c>tool</c> (the tool's own line) or <c>engine</c> (started, completed, canceled…).</summary>
        public string Source { get; }

        /// <inheritdoc />
        public override string ToString() => $"{Level.ToString().ToLowerInvariant()}: {Message}";
    }

    /// <summary>A file uploaded to the service.</summary>
    public sealed class UploadInfo
    {
        internal UploadInfo(Api.UploadResponse u)
        {
            UploadId = u.UploadId;
            FileName = u.Filename;
            Size = u.Size;
            Sha256 = u.Sha256;
            ContentType = u.ContentType;
            CreatedAt = u.CreatedAt;
        }

        /// <summary>Its id, for <see cref="RunInput.FromUpload"/> and <c>file</c> parameters.</summary>
        public string UploadId { get; }

        /// <summary>The name it was uploaded under.</summary>
        public string FileName { get; }

        /// <summary>Bytes.</summary>
        public long Size { get; }

        /// <summary>Lower-case hex SHA-256 (the same content is one upload).</summary>
        public string Sha256 { get; }

        /// <summary>What the service took it for.</summary>
        public string ContentType { get; }

        /// <summary>When it was first uploaded.</summary>
        public DateTimeOffset CreatedAt { get; }

        /// <inheritdoc />
        public override string ToString() => $"{UploadId} {FileName}";
    }

    /// <summary>A file a run on the service produced.</summary>
    public sealed class ArtifactInfo
    {
        internal ArtifactInfo(Api.Artifact a)
        {
            ArtifactId = a.ArtifactId;
            RunId = a.RunId;
            FileName = a.Filename;
            ContentType = a.ContentType;
            Size = a.Size;
            Sha256 = a.Sha256;
            CreatedAt = a.CreatedAt;
        }

        /// <summary>Its id.</summary>
        public string ArtifactId { get; }

        /// <summary>The run that wrote it.</summary>
        public string RunId { get; }

        /// <summary>Its name, e.g. <c>summary.json</c>.</summary>
        public string FileName { get; }

        /// <summary>Its media type.</summary>
        public string ContentType { get; }

        /// <summary>Bytes.</summary>
        public long Size { get; }

        /// <summary>Lower-case hex SHA-256 of its content.</summary>
        public string Sha256 { get; }

        /// <summary>When it was registered.</summary>
        public DateTimeOffset CreatedAt { get; }

        /// <inheritdoc />
        public override string ToString() => $"{ArtifactId} {FileName}";
    }

    /// <summary>One check of the service's health.</summary>
    public sealed class HealthCheckInfo
    {
        internal HealthCheckInfo(Api.HealthCheck c)
        {
            Name = c.Name;
            Passed = c.Status == "pass";
            Detail = c.Detail;
            Duration = TimeSpan.FromMilliseconds(c.DurationMs);
        }

        /// <summary>What was checked, e.g. <c>store_writable</c>.</summary>
        public string Name { get; }

        /// <summary>Whether it passed.</summary>
        public bool Passed { get; }

        /// <summary>What was found.</summary>
        public string Detail { get; }

        /// <summary>How long it took.</summary>
        public TimeSpan Duration { get; }
    }

    /// <summary>The service's health (<c>GET /v1/health</c>).</summary>
    public sealed class ServiceHealth
    {
        internal ServiceHealth(Api.HealthResponse h)
        {
            IsHealthy = h.Status == "healthy";
            Version = h.Version;
            Uptime = TimeSpan.FromSeconds(h.UptimeSeconds);
            StoreSizeBytes = h.StoreSizeBytes;
            Checks = h.Checks.Select(c => new HealthCheckInfo(c)).ToArray();
        }

        /// <summary>Every check passed.</summary>
        public bool IsHealthy { get; }

        /// <summary>The service's version.</summary>
        public string Version { get; }

        /// <summary>How long it has run.</summary>
        public TimeSpan Uptime { get; }

        /// <summary>Database plus upload and artifact files.</summary>
        public long StoreSizeBytes { get; }

        /// <summary>Each check.</summary>
        public IReadOnlyList<HealthCheckInfo> Checks { get; }
    }

    /// <summary>What the service can run (<c>GET /v1/capabilities</c>).</summary>
    public sealed class ServiceCapabilities
    {
        internal ServiceCapabilities(IReadOnlyList<ToolInfo> tools, IReadOnlyList<ToolInfo> monitors, string apiVersion, IReadOnlyList<string> features)
        {
            Tools = tools;
            Monitors = monitors;
            ApiVersion = apiVersion;
            Features = features;
        }

        /// <summary>The tools, with their parameters.</summary>
        public IReadOnlyList<ToolInfo> Tools { get; }

        /// <summary>The monitors, with their parameters.</summary>
        public IReadOnlyList<ToolInfo> Monitors { get; }

        /// <summary>The API's version, e.g. <c>v1</c>.</summary>
        public string ApiVersion { get; }

        /// <summary>What this service offers beyond the basics (e.g. <c>sse</c>, <c>uploads</c>).</summary>
        public IReadOnlyList<string> Features { get; }
    }

    /// <summary>Where a monitor session on the service reads from.</summary>
    public sealed class MonitorSource
    {
        private MonitorSource(Api.MonitorSourceDto dto) => Dto = dto;

        internal Api.MonitorSourceDto Dto { get; }

        /// <summary>openpilot's message bridge on a comma device (a host name or an IP address).</summary>
        public static MonitorSource Bridge(string host) =>
            new(new Api.MonitorSourceDto("zmq", Wire.Some(host ?? throw new ArgumentNullException(nameof(host))), null, null, null, null));

        /// <summary>An uploaded log replayed in log time (speed 1 as recorded, 0 as fast as possible).</summary>
        public static MonitorSource ReplayUpload(string uploadId, double speed = 1.0) =>
            new(new Api.MonitorSourceDto("replay", null, Wire.Some(uploadId ?? throw new ArgumentNullException(nameof(uploadId))), null, null, FSharpOption<double>.Some(speed)));

        /// <summary>Uploaded logs replayed in order as one time line (a route's segments).</summary>
        public static MonitorSource ReplayUploads(IEnumerable<string> uploadIds, double speed = 1.0) =>
            new(new Api.MonitorSourceDto("replay", null, null,
                FSharpOption<FSharpList<string>>.Some(ListModule.OfSeq(uploadIds ?? throw new ArgumentNullException(nameof(uploadIds)))),
                null, FSharpOption<double>.Some(speed)));

        /// <summary>A log file, segment folder or route under the service's input roots, replayed in log time.</summary>
        public static MonitorSource ReplayPath(string path, double speed = 1.0) =>
            new(new Api.MonitorSourceDto("replay", null, null, null, Wire.Some(path ?? throw new ArgumentNullException(nameof(path))), FSharpOption<double>.Some(speed)));
    }

    /// <summary>A monitor session on the service.</summary>
    public sealed class MonitorSessionInfo
    {
        internal MonitorSessionInfo(Api.MonitorSession s)
        {
            SessionId = s.SessionId;
            MonitorId = s.MonitorId;
            Status = s.Status;
            SourceStatus = s.SourceStatus;
            CreatedAt = s.CreatedAt;
            StoppedAt = Wire.OrNull(s.StoppedAt);
            Reason = Wire.Or(s.Reason);
            Events = s.Counters.Events;
            Dropped = s.Counters.Dropped;
            Clients = s.Counters.Clients;
            Recordings = s.Recordings.ToArray();
            Snapshot = s.Snapshot == null ? null : s.Snapshot.Value.Clone();
        }

        /// <summary>Its id.</summary>
        public string SessionId { get; }

        /// <summary>The monitor it runs.</summary>
        public string MonitorId { get; }

        /// <summary><c>running</c>, <c>ended</c> (its source ended), <c>stopped</c> or <c>failed</c>.</summary>
        public string Status { get; }

        /// <summary>Still running.</summary>
        public bool IsRunning => Status == "running";

        /// <summary><c>connecting</c>, <c>connected</c>, <c>silent</c>, <c>reconnecting</c>, <c>replaying</c> or <c>ended</c>.</summary>
        public string SourceStatus { get; }

        /// <summary>When it started.</summary>
        public DateTimeOffset CreatedAt { get; }

        /// <summary>When it stopped or ended.</summary>
        public DateTimeOffset? StoppedAt { get; }

        /// <summary>Why it stopped, ended or failed.</summary>
        public string? Reason { get; }

        /// <summary>Events given to the monitor so far.</summary>
        public long Events { get; }

        /// <summary>Messages dropped for slow watchers.</summary>
        public long Dropped { get; }

        /// <summary>Watchers connected now.</summary>
        public int Clients { get; }

        /// <summary>The uploads holding a live session's recording, in order.</summary>
        public IReadOnlyList<string> Recordings { get; }

        /// <summary>The latest state (from <see cref="CtsLiteClient.GetMonitorAsync"/>), or <c>null</c>.</summary>
        public JsonElement? Snapshot { get; }

        /// <inheritdoc />
        public override string ToString() => $"{SessionId} {MonitorId} {Status}";
    }

    /// <summary>One bad part of a request: a JSON pointer into it and what is wrong.</summary>
    public sealed class ApiFieldError
    {
        internal ApiFieldError(string pointer, string detail)
        {
            Pointer = pointer;
            Detail = detail;
        }

        /// <summary>e.g. <c>/params/speed_min</c>.</summary>
        public string Pointer { get; }

        /// <summary>What is wrong.</summary>
        public string Detail { get; }

        /// <inheritdoc />
        public override string ToString() => $"{Pointer}: {Detail}";
    }

    /// <summary>The service refused or failed a request: its problem document (RFC 9457).</summary>
    public sealed class CtsLiteApiException : Exception
    {
        internal CtsLiteApiException(HttpStatusCode status, string title, string? detail, string? requestId,
            string? problemType, IReadOnlyList<ApiFieldError> errors, TimeSpan? retryAfter)
            : base(detail is null or "" ? $"{(int)status} {title}" : $"{(int)status} {title}: {detail}")
        {
            StatusCode = status;
            Title = title;
            Detail = detail;
            RequestId = requestId;
            ProblemType = problemType;
            Errors = errors;
            RetryAfter = retryAfter;
        }

        /// <summary>The HTTP status.</summary>
        public HttpStatusCode StatusCode { get; }

        /// <summary>The status's title, e.g. <c>Unprocessable Content</c>.</summary>
        public string Title { get; }

        /// <summary>What was wrong, for people.</summary>
        public string? Detail { get; }

        /// <summary>The request's id in the service's log (quote it when reporting a problem).</summary>
        public string? RequestId { get; }

        /// <summary>The problem's type URI, if the service gave one.</summary>
        public string? ProblemType { get; }

        /// <summary>The bad parts of the request (a 422), one each.</summary>
        public IReadOnlyList<ApiFieldError> Errors { get; }

        /// <summary>When the service asks to be tried again (429, 503), if it said.</summary>
        public TimeSpan? RetryAfter { get; }
    }

    /// <summary>Between the API's F# shapes and the C# views.</summary>
    internal static class Wire
    {
        internal static T? Or<T>(FSharpOption<T>? option) where T : class => option?.Value;

        internal static T? OrNull<T>(FSharpOption<T>? option) where T : struct => option == null ? null : option.Value;

        internal static FSharpOption<T>? Some<T>(T value) => FSharpOption<T>.Some(value);

        internal static RunStatus Status(string status) => status switch
        {
            "queued" => RunStatus.Queued,
            "running" => RunStatus.Running,
            "completed" => RunStatus.Completed,
            "failed" => RunStatus.Failed,
            "canceled" => RunStatus.Canceled,
            _ => throw new FormatException($"a run status this client does not know: '{status}'"),
        };

        internal static string Name(RunStatus status) => status.ToString().ToLowerInvariant();
    }
}
