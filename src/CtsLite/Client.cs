using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Net;
using System.Net.Http;
using System.Net.Http.Headers;
using System.Net.WebSockets;
using System.Runtime.CompilerServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;

namespace CtsLite
{
    /// <summary>How a <see cref="CtsLiteClient"/> talks to the service.</summary>
    public sealed record CtsLiteClientOptions
    {
        /// <summary>The service's address, e.g. <c>http://127.0.0.1:8080/</c>; when null the
        /// <see cref="HttpClient.BaseAddress"/> of the given client is used.</summary>
        public Uri? BaseAddress { get; init; }

        /// <summary>A JWT for a service with a secret, sent as <c>Authorization: JWT &lt;token&gt;</c>.</summary>
        public string? Token { get; init; }

        /// <summary>How often a dropped log stream or download is taken up again in a row before
        /// the error is thrown (each success starts the count again); 5 by default.</summary>
        public int MaxReconnects { get; init; } = 5;
    }

    /// <summary>Options of a monitor session started on the service.</summary>
    public sealed record MonitorStartOptions
    {
        /// <summary>At most one update this often (10 ms – 60 s; 100 ms by default).</summary>
        public TimeSpan? UpdateInterval { get; init; }

        /// <summary>A live session records what it receives to rlogs, each registered as an upload.</summary>
        public bool Record { get; init; }

        /// <summary>A new recording file once one holds this many MB (100 by default).</summary>
        public int? RecordMaxMb { get; init; }
    }

    /// <summary>
    /// A typed client of the CtsLite service's <c>/v1</c> API: capabilities, uploads, runs with their
    /// live logs, artifacts and monitor sessions. Give it an <see cref="HttpClient"/> (e.g. a typed
    /// client of <c>IHttpClientFactory</c>) or let it make one. Every refusal is a
    /// <see cref="CtsLiteApiException"/> with the service's status, title, detail and request id.
    /// </summary>
    public sealed class CtsLiteClient : IDisposable
    {
        private static readonly JsonSerializerOptions Json = ApiJson.options;
        private readonly HttpClient _http;
        private readonly bool _ownsHttp;
        private readonly Uri _base;
        private readonly CtsLiteClientOptions _options;

        /// <summary>A client over <paramref name="httpClient"/> (not disposed with this client).</summary>
        /// <exception cref="ArgumentException">Neither the options nor the client give a base address.</exception>
        public CtsLiteClient(HttpClient httpClient, CtsLiteClientOptions? options = null)
        {
            _http = httpClient ?? throw new ArgumentNullException(nameof(httpClient));
            _options = options ?? new CtsLiteClientOptions();
            var address = _options.BaseAddress ?? httpClient.BaseAddress
                ?? throw new ArgumentException("no base address: set CtsLiteClientOptions.BaseAddress or HttpClient.BaseAddress", nameof(httpClient));
            _base = WithSlash(address);
        }

        /// <summary>A client of the service at <paramref name="baseAddress"/>, with an HTTP client of its own.</summary>
        public CtsLiteClient(Uri baseAddress, string? token = null)
            : this(new HttpClient { Timeout = Timeout.InfiniteTimeSpan }, new CtsLiteClientOptions { BaseAddress = baseAddress, Token = token })
        {
            _ownsHttp = true;
        }

        /// <summary>The service's address.</summary>
        public Uri BaseAddress => _base;

        /// <inheritdoc />
        public void Dispose()
        {
            if (_ownsHttp) _http.Dispose();
        }

        // ---- Service ------------------------------------------------------------------------

        /// <summary>The service's health; an unhealthy service answers too (with its failed checks).</summary>
        public async Task<ServiceHealth> GetHealthAsync(CancellationToken cancellationToken = default)
        {
            using var response = await SendAsync(HttpMethod.Get, "v1/health", null, cancellationToken, HttpCompletionOption.ResponseContentRead, acceptUnavailable: true).ConfigureAwait(false);
            return new ServiceHealth(await ReadAsync<Api.HealthResponse>(response, cancellationToken).ConfigureAwait(false));
        }

        /// <summary>The tools and monitors the service runs, with their parameters.</summary>
        public async Task<ServiceCapabilities> GetCapabilitiesAsync(CancellationToken cancellationToken = default)
        {
            using var response = await SendAsync(HttpMethod.Get, "v1/capabilities", null, cancellationToken).ConfigureAwait(false);
            using var doc = await JsonDocument.ParseAsync(await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false), default, cancellationToken).ConfigureAwait(false);
            var root = doc.RootElement;
            return new ServiceCapabilities(
                Describe(root.GetProperty("tools")),
                root.TryGetProperty("monitors", out var monitors) ? Describe(monitors) : Array.Empty<ToolInfo>(),
                root.GetProperty("api_version").GetString() ?? "",
                root.GetProperty("features").EnumerateArray().Select(f => f.GetString() ?? "").ToArray());

            static IReadOnlyList<ToolInfo> Describe(JsonElement list) =>
                list.EnumerateArray().Select(c =>
                {
                    // The one reading of a Tool Capability document, shared with the CLI.
                    var d = Api.descriptorOf(c);
                    if (d.IsError) throw new FormatException(d.ErrorValue);
                    return new ToolInfo(d.ResultValue);
                }).ToArray();
        }

        // ---- Uploads ------------------------------------------------------------------------

        /// <summary>Uploads a file (a log, CSV or DBC), streamed; the same content uploaded before
        /// answers with the existing upload.</summary>
        /// <param name="path">The file.</param>
        /// <param name="progress">Bytes sent so far, now and then.</param>
        /// <param name="cancellationToken">Stops the upload; nothing of it is kept.</param>
        public async Task<UploadInfo> UploadAsync(string path, IProgress<long>? progress = null, CancellationToken cancellationToken = default)
        {
            if (path is null) throw new ArgumentNullException(nameof(path));
            await using var file = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16, FileOptions.Asynchronous | FileOptions.SequentialScan);
            return await UploadAsync(file, Path.GetFileName(path), progress, cancellationToken).ConfigureAwait(false);
        }

        /// <summary>Uploads <paramref name="content"/> under <paramref name="fileName"/>, streamed from
        /// where the stream is (not disposed).</summary>
        public async Task<UploadInfo> UploadAsync(Stream content, string fileName, IProgress<long>? progress = null, CancellationToken cancellationToken = default)
        {
            if (content is null) throw new ArgumentNullException(nameof(content));
            if (string.IsNullOrEmpty(fileName)) throw new ArgumentException("a file name is needed", nameof(fileName));
            using var body = new ProgressContent(content, progress);
            body.Headers.ContentType = new MediaTypeHeaderValue("application/octet-stream");
            // The name goes in the query, where any character can be escaped (a header cannot carry them all).
            using var request = new HttpRequestMessage(HttpMethod.Post, At("v1/uploads?filename=" + Uri.EscapeDataString(fileName))) { Content = body };
            using var response = await SendAsync(request, cancellationToken).ConfigureAwait(false);
            return new UploadInfo(await ReadAsync<Api.UploadResponse>(response, cancellationToken).ConfigureAwait(false));
        }

        /// <summary>One upload.</summary>
        public async Task<UploadInfo> GetUploadAsync(string uploadId, CancellationToken cancellationToken = default)
        {
            using var response = await SendAsync(HttpMethod.Get, $"v1/uploads/{Segment(uploadId)}", null, cancellationToken).ConfigureAwait(false);
            return new UploadInfo(await ReadAsync<Api.UploadResponse>(response, cancellationToken).ConfigureAwait(false));
        }

        /// <summary>Deletes an upload and its file.</summary>
        public async Task DeleteUploadAsync(string uploadId, CancellationToken cancellationToken = default)
        {
            using var _ = await SendAsync(HttpMethod.Delete, $"v1/uploads/{Segment(uploadId)}", null, cancellationToken).ConfigureAwait(false);
        }

        // ---- Runs ---------------------------------------------------------------------------

        /// <summary>Asks for a run. With an <paramref name="idempotencyKey"/>, asking again with the
        /// same key and request answers the same run (a retry after a lost answer runs nothing twice);
        /// the key with another request is a 409.</summary>
        /// <param name="toolId">A tool of <see cref="GetCapabilitiesAsync"/>.</param>
        /// <param name="input">What it reads.</param>
        /// <param name="parameters">Parameter values: strings, numbers, booleans, string lists; upload ids for <c>file</c> parameters.</param>
        /// <param name="name">A name for people, if any.</param>
        /// <param name="idempotencyKey">A key of the caller's choosing, e.g. a GUID kept across retries.</param>
        /// <param name="cancellationToken">Stops waiting for the answer (the run may have been accepted).</param>
        public async Task<RunInfo> CreateRunAsync(
            string toolId,
            RunInput input,
            IReadOnlyDictionary<string, object?>? parameters = null,
            string? name = null,
            string? idempotencyKey = null,
            CancellationToken cancellationToken = default)
        {
            if (toolId is null) throw new ArgumentNullException(nameof(toolId));
            if (input is null) throw new ArgumentNullException(nameof(input));
            var body = new Api.RunRequest(
                toolId,
                parameters is null ? null : Wire.Some(JsonSerializer.SerializeToElement(parameters)),
                Wire.Some(InputRefModule.toDto(input.Ref)),
                null,
                name is null ? null : Wire.Some(name));
            using var request = new HttpRequestMessage(HttpMethod.Post, At("v1/runs")) { Content = JsonContent(body) };
            if (idempotencyKey is not null) request.Headers.TryAddWithoutValidation("Idempotency-Key", idempotencyKey);
            using var response = await SendAsync(request, cancellationToken).ConfigureAwait(false);
            return new RunInfo(await ReadAsync<Api.RunResponse>(response, cancellationToken).ConfigureAwait(false));
        }

        /// <summary>One run.</summary>
        public async Task<RunInfo> GetRunAsync(string runId, CancellationToken cancellationToken = default)
        {
            using var response = await SendAsync(HttpMethod.Get, $"v1/runs/{Segment(runId)}", null, cancellationToken).ConfigureAwait(false);
            return new RunInfo(await ReadAsync<Api.RunResponse>(response, cancellationToken).ConfigureAwait(false));
        }

        /// <summary>Runs, newest first, fetched a page at a time as the enumeration goes on.</summary>
        /// <param name="status">Only runs in this state.</param>
        /// <param name="toolId">Only runs of this tool.</param>
        /// <param name="pageSize">Runs per request (1–500).</param>
        /// <param name="cancellationToken">Stops the listing.</param>
        public async IAsyncEnumerable<RunInfo> ListRunsAsync(
            RunStatus? status = null,
            string? toolId = null,
            int pageSize = 50,
            [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            if (pageSize is < 1 or > 500) throw new ArgumentOutOfRangeException(nameof(pageSize), "1–500");
            string? cursor = null;
            do
            {
                var query = new List<string> { $"limit={pageSize}" };
                if (status is { } s) query.Add($"status={Wire.Name(s)}");
                if (toolId is not null) query.Add($"tool_id={Uri.EscapeDataString(toolId)}");
                if (cursor is not null) query.Add($"cursor={Uri.EscapeDataString(cursor)}");
                Api.RunList page;
                using (var response = await SendAsync(HttpMethod.Get, "v1/runs?" + string.Join("&", query), null, cancellationToken).ConfigureAwait(false))
                    page = await ReadAsync<Api.RunList>(response, cancellationToken).ConfigureAwait(false);
                foreach (var run in page.Runs) yield return new RunInfo(run);
                cursor = Wire.Or(page.NextCursor);
            }
            while (cursor is not null);
        }

        /// <summary>Cancels a run: a queued one at once, a running one as soon as its tool notices.
        /// A finished run answers 409 (<see cref="CtsLiteApiException"/>).</summary>
        public async Task<RunInfo> CancelRunAsync(string runId, CancellationToken cancellationToken = default)
        {
            using var response = await SendAsync(HttpMethod.Post, $"v1/runs/{Segment(runId)}/cancel", null, cancellationToken).ConfigureAwait(false);
            return new RunInfo(await ReadAsync<Api.RunResponse>(response, cancellationToken).ConfigureAwait(false));
        }

        /// <summary>
        /// A run's log as it is written: the lines so far, then each new one, until the run finishes.
        /// A dropped connection is taken up again after the last line received (no line twice or
        /// missing), up to <see cref="CtsLiteClientOptions.MaxReconnects"/> times in a row.
        /// </summary>
        /// <param name="runId">The run.</param>
        /// <param name="afterSequence">Start after this line (0: from the first).</param>
        /// <param name="cancellationToken">Stops following.</param>
        public async IAsyncEnumerable<RunLogEntry> FollowLogsAsync(
            string runId,
            long afterSequence = 0,
            [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            await foreach (var e in EventsAsync(runId, afterSequence, cancellationToken).ConfigureAwait(false))
                if (e.Log is not null) yield return e.Log;
        }

        /// <summary>Waits for a run to finish (following its event stream) and answers the final run.</summary>
        public async Task<RunInfo> WaitForRunAsync(string runId, CancellationToken cancellationToken = default)
        {
            RunInfo? last = null;
            await foreach (var e in EventsAsync(runId, long.MaxValue - 1, cancellationToken).ConfigureAwait(false))
                if (e.Run is not null) last = e.Run;
            return last ?? await GetRunAsync(runId, cancellationToken).ConfigureAwait(false);
        }

        private sealed record RunEvent(RunLogEntry? Log, RunInfo? Run);

        private async IAsyncEnumerable<RunEvent> EventsAsync(
            string runId, long after, [EnumeratorCancellation] CancellationToken cancellationToken)
        {
            var last = after;
            var failures = 0;
            while (true)
            {
                var ended = false;
                var events = new List<RunEvent>();
                HttpResponseMessage? response = null;
                StreamReader? reader = null;
                try
                {
                    using var request = new HttpRequestMessage(HttpMethod.Get, At($"v1/runs/{Segment(runId)}/logs"));
                    request.Headers.Accept.Add(new MediaTypeWithQualityHeaderValue("text/event-stream"));
                    if (last > 0) request.Headers.TryAddWithoutValidation("Last-Event-ID", last.ToString(CultureInfo.InvariantCulture));
                    response = await SendAsync(request, cancellationToken, HttpCompletionOption.ResponseHeadersRead).ConfigureAwait(false);
                    reader = new StreamReader(await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false), Encoding.UTF8);
                }
                catch (Exception e) when (Transient(e, cancellationToken) && ++failures <= _options.MaxReconnects)
                {
                    response?.Dispose();
                    await Backoff(failures, cancellationToken).ConfigureAwait(false);
                    continue;
                }

                using (response)
                using (reader)
                {
                    string? name = null, id = null;
                    var data = new StringBuilder();
                    while (!ended)
                    {
                        string? line;
                        try
                        {
                            line = await reader.ReadLineAsync(cancellationToken).ConfigureAwait(false);
                        }
                        catch (Exception e) when (Transient(e, cancellationToken))
                        {
                            break; // dropped: resumed below
                        }

                        if (line is null) break; // the connection ended before `end`: resume
                        if (line.Length > 0)
                        {
                            if (line.StartsWith(':')) continue; // keep-alive
                            var colon = line.IndexOf(':');
                            var field = colon < 0 ? line : line[..colon];
                            var value = colon < 0 ? "" : line[(colon + 1)..].TrimStart(' ');
                            switch (field)
                            {
                                case "event": name = value; break;
                                case "id": id = value; break;
                                case "data": data.Append(value); break;
                            }

                            continue;
                        }

                        // A blank line ends an event.
                        if (name is null && data.Length == 0) continue;
                        RunEvent? evt = name switch
                        {
                            "log" => new RunEvent(new RunLogEntry(JsonSerializer.Deserialize<Api.LogEntry>(data.ToString(), Json)!), null),
                            "status" => new RunEvent(null, new RunInfo(JsonSerializer.Deserialize<Api.RunResponse>(data.ToString(), Json)!)),
                            "end" => new RunEvent(null, new RunInfo(JsonSerializer.Deserialize<Api.RunResponse>(data.ToString(), Json)!)),
                            _ => null,
                        };
                        if (name == "end") ended = true;
                        if (evt?.Log is { } log)
                        {
                            if (log.Sequence <= last) evt = null; // already given before a resume
                            else last = log.Sequence;
                        }
                        else if (long.TryParse(id, NumberStyles.Integer, CultureInfo.InvariantCulture, out var seq) && seq > last && name != "end" && name != "status")
                        {
                            last = seq;
                        }

                        name = null;
                        id = null;
                        data.Clear();
                        if (evt is not null)
                        {
                            failures = 0;
                            yield return evt;
                        }
                    }
                }

                if (ended) yield break;
                if (++failures > _options.MaxReconnects)
                    throw new IOException($"the log stream of run {runId} dropped {failures} times in a row");
                await Backoff(failures, cancellationToken).ConfigureAwait(false);
            }
        }

        // ---- Artifacts ----------------------------------------------------------------------

        /// <summary>The files a run produced.</summary>
        public async Task<IReadOnlyList<ArtifactInfo>> GetRunArtifactsAsync(string runId, CancellationToken cancellationToken = default)
        {
            using var response = await SendAsync(HttpMethod.Get, $"v1/runs/{Segment(runId)}/artifacts", null, cancellationToken).ConfigureAwait(false);
            var list = await ReadAsync<Api.ArtifactList>(response, cancellationToken).ConfigureAwait(false);
            return list.Artifacts.Select(a => new ArtifactInfo(a)).ToArray();
        }

        /// <summary>One artifact's metadata.</summary>
        public async Task<ArtifactInfo> GetArtifactAsync(string artifactId, CancellationToken cancellationToken = default)
        {
            using var response = await SendAsync(HttpMethod.Get, $"v1/artifacts/{Segment(artifactId)}", null, cancellationToken).ConfigureAwait(false);
            return new ArtifactInfo(await ReadAsync<Api.Artifact>(response, cancellationToken).ConfigureAwait(false));
        }

        /// <summary>Writes an artifact's bytes to <paramref name="destination"/>; a dropped connection
        /// is taken up again where it stopped (an HTTP range of the same content). Answers the bytes written.</summary>
        public async Task<long> DownloadArtifactAsync(string artifactId, Stream destination, CancellationToken cancellationToken = default)
        {
            if (destination is null) throw new ArgumentNullException(nameof(destination));
            return await DownloadAsync(artifactId, destination, 0, null, cancellationToken).ConfigureAwait(false);
        }

        /// <summary>
        /// Downloads an artifact to <paramref name="path"/> through <c>path.part</c>: a download stopped
        /// (a dropped connection, a cancel, a crash) goes on from the part already there when asked
        /// again, as long as the artifact is the same content; the file appears only once complete and
        /// its SHA-256 checked.
        /// </summary>
        /// <exception cref="IOException">The bytes received do not have the artifact's SHA-256.</exception>
        public async Task<ArtifactInfo> DownloadArtifactAsync(string artifactId, string path, CancellationToken cancellationToken = default)
        {
            if (path is null) throw new ArgumentNullException(nameof(path));
            var artifact = await GetArtifactAsync(artifactId, cancellationToken).ConfigureAwait(false);
            var part = path + ".part";
            await using (var file = new FileStream(part, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None, 1 << 16, true))
            {
                var have = file.Length > artifact.Size ? 0 : file.Length;
                file.SetLength(have);
                file.Position = have;
                if (have < artifact.Size)
                    await DownloadAsync(artifactId, file, have, artifact.Sha256, cancellationToken).ConfigureAwait(false);
                file.Position = 0;
                var sha = Convert.ToHexStringLower(await SHA256.HashDataAsync(file, cancellationToken).ConfigureAwait(false));
                if (sha != artifact.Sha256)
                {
                    file.SetLength(0);
                    throw new IOException($"artifact {artifactId}: the bytes received have SHA-256 {sha}, not {artifact.Sha256}; the part was discarded");
                }
            }

            File.Move(part, path, true);
            return artifact;
        }

        private async Task<long> DownloadAsync(string artifactId, Stream destination, long from, string? sha256, CancellationToken cancellationToken)
        {
            var written = 0L;
            var failures = 0;
            var buffer = new byte[1 << 16];
            string? etag = sha256 is null ? null : $"\"{sha256}\"";
            while (true)
            {
                var offset = from + written;
                using var request = new HttpRequestMessage(HttpMethod.Get, At($"v1/artifacts/{Segment(artifactId)}/download?download=1"));
                if (offset > 0)
                {
                    request.Headers.Range = new RangeHeaderValue(offset, null);
                    // Only a range of the same content: a changed artifact answers 200 with all of it.
                    if (etag is not null) request.Headers.TryAddWithoutValidation("If-Range", etag);
                }

                try
                {
                    using var response = await SendAsync(request, cancellationToken, HttpCompletionOption.ResponseHeadersRead).ConfigureAwait(false);
                    if (offset > 0 && response.StatusCode != HttpStatusCode.PartialContent)
                        throw new ArtifactChangedException($"artifact {artifactId} changed or does not support ranges; download it again");
                    etag ??= response.Headers.ETag?.Tag;
                    await using var body = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
                    int n;
                    while ((n = await body.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
                    {
                        await destination.WriteAsync(buffer.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
                        written += n;
                        failures = 0;
                    }

                    var expected = response.Content.Headers.ContentLength;
                    if (expected is { } length && offset + length > from + written) throw new IOException("the download ended early");
                    return written;
                }
                catch (Exception e) when (Transient(e, cancellationToken) && ++failures <= _options.MaxReconnects)
                {
                    await Backoff(failures, cancellationToken).ConfigureAwait(false);
                }
            }
        }

        // ---- Monitors -----------------------------------------------------------------------

        /// <summary>Starts a monitor session on the service.</summary>
        /// <param name="monitorId">A monitor of <see cref="ServiceCapabilities.Monitors"/>.</param>
        /// <param name="source">A device's bridge or a replayed log.</param>
        /// <param name="parameters">The monitor's parameters.</param>
        /// <param name="options">Update rate and recording.</param>
        /// <param name="cancellationToken">Stops waiting for the answer.</param>
        public async Task<MonitorSessionInfo> StartMonitorAsync(
            string monitorId,
            MonitorSource source,
            IReadOnlyDictionary<string, object?>? parameters = null,
            MonitorStartOptions? options = null,
            CancellationToken cancellationToken = default)
        {
            if (monitorId is null) throw new ArgumentNullException(nameof(monitorId));
            if (source is null) throw new ArgumentNullException(nameof(source));
            options ??= new MonitorStartOptions();
            var body = new Api.MonitorStartRequest(
                monitorId,
                parameters is null ? null : Wire.Some(JsonSerializer.SerializeToElement(parameters)),
                Wire.Some(source.Dto),
                options.Record ? Wire.Some(true) : null,
                options.RecordMaxMb is { } mb ? Wire.Some(mb) : null,
                options.UpdateInterval is { } every ? Wire.Some((int)Math.Round(every.TotalMilliseconds)) : null);
            using var request = new HttpRequestMessage(HttpMethod.Post, At("v1/monitors/start")) { Content = JsonContent(body) };
            using var response = await SendAsync(request, cancellationToken).ConfigureAwait(false);
            return new MonitorSessionInfo(await ReadAsync<Api.MonitorSession>(response, cancellationToken).ConfigureAwait(false));
        }

        /// <summary>One session, with its latest state.</summary>
        public async Task<MonitorSessionInfo> GetMonitorAsync(string sessionId, CancellationToken cancellationToken = default)
        {
            using var response = await SendAsync(HttpMethod.Get, $"v1/monitors/{Segment(sessionId)}", null, cancellationToken).ConfigureAwait(false);
            return new MonitorSessionInfo(await ReadAsync<Api.MonitorSession>(response, cancellationToken).ConfigureAwait(false));
        }

        /// <summary>Stops a session (stopping a stopped one is no error) and answers how it ended.</summary>
        public async Task<MonitorSessionInfo> StopMonitorAsync(string sessionId, CancellationToken cancellationToken = default)
        {
            using var response = await SendAsync(HttpMethod.Post, $"v1/monitors/{Segment(sessionId)}/stop", null, cancellationToken).ConfigureAwait(false);
            return new MonitorSessionInfo(await ReadAsync<Api.MonitorSession>(response, cancellationToken).ConfigureAwait(false));
        }

        /// <summary>
        /// A session's messages over a WebSocket: a snapshot on joining, updates, source changes,
        /// heartbeats, and the final state as <see cref="MonitorUpdateKind.End"/> when the session
        /// ends. Leaving the loop leaves the session running (stop it with <see cref="StopMonitorAsync"/>).
        /// </summary>
        public async IAsyncEnumerable<MonitorUpdate> StreamMonitorAsync(
            string sessionId, [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            var http = At($"v1/monitors/{Segment(sessionId)}/stream");
            var ws = new UriBuilder(http) { Scheme = http.Scheme == "https" ? "wss" : "ws" }.Uri;
            using var socket = new ClientWebSocket();
            if (_options.Token is { } token) socket.Options.SetRequestHeader("Authorization", "JWT " + token);
            socket.Options.CollectHttpResponseDetails = true;
            try
            {
                await socket.ConnectAsync(ws, _http, cancellationToken).ConfigureAwait(false);
            }
            catch (WebSocketException) when (socket.HttpStatusCode is not 0 and not HttpStatusCode.SwitchingProtocols)
            {
                // The refusal's body is not kept by the socket: ask again over plain HTTP for the problem.
                using var _ = await SendAsync(HttpMethod.Get, $"v1/monitors/{Segment(sessionId)}", null, cancellationToken).ConfigureAwait(false);
                throw new CtsLiteApiException(socket.HttpStatusCode, socket.HttpStatusCode.ToString(), $"the stream of session {sessionId} was refused", null, null, Array.Empty<ApiFieldError>(), null);
            }

            var buffer = new byte[1 << 16];
            using var message = new MemoryStream();
            while (true)
            {
                message.SetLength(0);
                ValueWebSocketReceiveResult received;
                do
                {
                    received = await socket.ReceiveAsync(buffer.AsMemory(), cancellationToken).ConfigureAwait(false);
                    if (received.MessageType == WebSocketMessageType.Close)
                    {
                        if (socket.State == WebSocketState.CloseReceived)
                            await socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, null, cancellationToken).ConfigureAwait(false);
                        yield break;
                    }

                    message.Write(buffer, 0, received.Count);
                    if (message.Length > 64 << 20) throw new IOException($"a message of session {sessionId} is larger than 64 MiB");
                }
                while (!received.EndOfMessage);

                var m = JsonSerializer.Deserialize<Api.MonitorStreamMessage>(message.GetBuffer().AsSpan(0, (int)message.Length), Json)!;
                var update = MonitorUpdate.Of(m);
                yield return update;
                if (update.Kind == MonitorUpdateKind.End) yield break;
            }
        }

        // ---- HTTP ---------------------------------------------------------------------------

        private static Uri WithSlash(Uri address)
        {
            if (!address.IsAbsoluteUri) throw new ArgumentException($"the base address must be absolute: {address}");
            var text = address.ToString();
            return new Uri(text.EndsWith('/') ? text : text + "/");
        }

        private Uri At(string relative) => new(_base, relative);

        private static string Segment(string id)
        {
            if (string.IsNullOrEmpty(id)) throw new ArgumentException("an id is needed", nameof(id));
            return Uri.EscapeDataString(id);
        }

        private static HttpContent JsonContent<T>(T body)
        {
            var content = new ByteArrayContent(JsonSerializer.SerializeToUtf8Bytes(body, Json));
            content.Headers.ContentType = new MediaTypeHeaderValue("application/json") { CharSet = "utf-8" };
            return content;
        }

        private async Task<HttpResponseMessage> SendAsync(
            HttpMethod method, string relative, HttpContent? content, CancellationToken cancellationToken,
            HttpCompletionOption completion = HttpCompletionOption.ResponseContentRead, bool acceptUnavailable = false)
        {
            using var request = new HttpRequestMessage(method, At(relative)) { Content = content };
            return await SendAsync(request, cancellationToken, completion, acceptUnavailable).ConfigureAwait(false);
        }

        private async Task<HttpResponseMessage> SendAsync(
            HttpRequestMessage request, CancellationToken cancellationToken,
            HttpCompletionOption completion = HttpCompletionOption.ResponseContentRead, bool acceptUnavailable = false)
        {
            if (_options.Token is { } token) request.Headers.Authorization = new AuthenticationHeaderValue("JWT", token);
            var response = await _http.SendAsync(request, completion, cancellationToken).ConfigureAwait(false);
            if (response.IsSuccessStatusCode || response.StatusCode == HttpStatusCode.NotModified
                || (acceptUnavailable && response.StatusCode == HttpStatusCode.ServiceUnavailable))
                return response;
            using (response)
                throw await ProblemAsync(response, cancellationToken).ConfigureAwait(false);
        }

        private static async Task<CtsLiteApiException> ProblemAsync(HttpResponseMessage response, CancellationToken cancellationToken)
        {
            var requestId = response.Headers.TryGetValues("X-Request-Id", out var ids) ? ids.FirstOrDefault() : null;
            TimeSpan? retryAfter = response.Headers.RetryAfter switch
            {
                { Delta: { } delta } => delta,
                { Date: { } date } => date - DateTimeOffset.UtcNow,
                _ => null,
            };
            var title = response.ReasonPhrase ?? response.StatusCode.ToString();
            string? detail = null, type = null;
            IReadOnlyList<ApiFieldError> errors = Array.Empty<ApiFieldError>();
            try
            {
                // A problem body is small; anything else (a proxy's page) is not read past 64 KiB.
                var bytes = await ReadAtMostAsync(response.Content, 64 << 10, cancellationToken).ConfigureAwait(false);
                if (response.Content.Headers.ContentType?.MediaType is "application/problem+json" or "application/json")
                {
                    var p = JsonSerializer.Deserialize<Api.Problem>(bytes, Json);
                    if (p is not null)
                    {
                        title = p.Title ?? title;
                        detail = p.Detail;
                        type = p.Type;
                        requestId = p.RequestId ?? requestId;
                        if (p.Errors != null) errors = p.Errors.Value.Select(e => new ApiFieldError(e.Pointer, e.Detail)).ToArray();
                    }
                }
                else if (bytes.Length > 0)
                {
                    detail = Encoding.UTF8.GetString(bytes).Trim();
                    if (detail.Length > 200) detail = detail[..200] + "…";
                }
            }
            catch (JsonException)
            {
                detail = "the service's error body is not a problem document";
            }

            return new CtsLiteApiException(response.StatusCode, title, detail, requestId, type, errors, retryAfter);
        }

        private static async Task<byte[]> ReadAtMostAsync(HttpContent content, int limit, CancellationToken cancellationToken)
        {
            await using var stream = await content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
            var buffer = new byte[limit];
            var total = 0;
            int n;
            while (total < limit && (n = await stream.ReadAsync(buffer.AsMemory(total), cancellationToken).ConfigureAwait(false)) > 0)
                total += n;
            return buffer.AsSpan(0, total).ToArray();
        }

        private static async Task<T> ReadAsync<T>(HttpResponseMessage response, CancellationToken cancellationToken)
        {
            await using var stream = await response.Content.ReadAsStreamAsync(cancellationToken).ConfigureAwait(false);
            return await JsonSerializer.DeserializeAsync<T>(stream, Json, cancellationToken).ConfigureAwait(false)
                ?? throw new FormatException($"the service answered {typeof(T).Name} with null");
        }

        private static bool Transient(Exception e, CancellationToken cancellationToken) =>
            !cancellationToken.IsCancellationRequested
            && e is not ArtifactChangedException
            && e is HttpRequestException or IOException
                or OperationCanceledException /* HttpClient's own timeout */;

        /// <summary>A range asked for after a drop came back as something else: trying again cannot help.</summary>
        private sealed class ArtifactChangedException : IOException
        {
            internal ArtifactChangedException(string message) : base(message) { }
        }

        private static Task Backoff(int attempt, CancellationToken cancellationToken) =>
            Task.Delay(TimeSpan.FromMilliseconds(Math.Min(5000, 100 * (1 << Math.Min(attempt, 6)))), cancellationToken);

        /// <summary>A body read from a stream, counting what has been sent.</summary>
        private sealed class ProgressContent : HttpContent
        {
            private readonly Stream _source;
            private readonly IProgress<long>? _progress;

            internal ProgressContent(Stream source, IProgress<long>? progress)
            {
                _source = source;
                _progress = progress;
            }

            protected override Task SerializeToStreamAsync(Stream stream, TransportContext? context) =>
                SerializeToStreamAsync(stream, context, CancellationToken.None);

            protected override async Task SerializeToStreamAsync(Stream stream, TransportContext? context, CancellationToken cancellationToken)
            {
                var buffer = new byte[1 << 16];
                long sent = 0, reported = 0;
                int n;
                while ((n = await _source.ReadAsync(buffer, cancellationToken).ConfigureAwait(false)) > 0)
                {
                    await stream.WriteAsync(buffer.AsMemory(0, n), cancellationToken).ConfigureAwait(false);
                    sent += n;
                    if (sent - reported >= 1 << 20)
                    {
                        reported = sent;
                        _progress?.Report(sent);
                    }
                }

                _progress?.Report(sent);
            }

            protected override bool TryComputeLength(out long length)
            {
                if (_source.CanSeek)
                {
                    length = _source.Length - _source.Position;
                    return true;
                }

                length = 0;
                return false;
            }
        }
    }
}
