using System;
using System.Collections.Concurrent;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Net;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using System.Threading;
using System.Threading.Tasks;

namespace CtsLite.CSharp.Tests
{
    /// <summary>One real service process for the client tests: the built CtsLite.Server on a free
    /// port, a data folder of its own, a JWT secret, the shared logs as its input root.</summary>
    internal sealed class ServiceProcess
    {
        public const string Secret = "a-test-secret-of-at-least-32-bytes-long";

        private static readonly Lazy<Task<ServiceProcess>> Shared = new(StartAsync);

        private ServiceProcess(Process process, Uri url)
        {
            Process = process;
            Url = url;
        }

        public Process Process { get; }

        public Uri Url { get; }

        public static Task<ServiceProcess> Get() => Shared.Value;

        public static string Token() =>
            CtsLite.Security.Jwt.create(Secret, "csharp-tests", DateTimeOffset.UtcNow, DateTimeOffset.UtcNow.AddHours(2), null, null);

        public static CtsLiteClient Client(Uri url) => new(url, Token());

        private static string RepoRoot()
        {
            var dir = new DirectoryInfo(AppContext.BaseDirectory);
            while (dir != null && !File.Exists(Path.Combine(dir.FullName, "CtsLite.sln"))) dir = dir.Parent;
            return dir?.FullName ?? throw new InvalidOperationException("CtsLite.sln not found");
        }

        private static async Task<ServiceProcess> StartAsync()
        {
            var configuration = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Debug{Path.DirectorySeparatorChar}") ? "Debug" : "Release";
            var dll = Path.Combine(RepoRoot(), "src", "CtsLite.Server", "bin", configuration, "net10.0", "CtsLite.Server.dll");
            if (!File.Exists(dll)) throw new InvalidOperationException($"build the service first: {dll}");
            var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            info.ArgumentList.Add(dll);
            foreach (var key in info.Environment.Keys.Where(k => k.StartsWith("CTS_", StringComparison.Ordinal)).ToList())
                info.Environment.Remove(key);
            info.Environment["CTS_API_PORT"] = "0";
            info.Environment["CTS_DATA_DIR"] = CSharp.Tests.Shared.TempDir();
            info.Environment["CTS_JWT_SECRET"] = Secret;
            info.Environment["CTS_INPUT_ROOTS"] = Path.Combine(CSharp.Tests.Shared.Dir, "data", "rlogs");
            info.Environment["CTS_RATE_LIMIT_PER_MINUTE"] = "0";

            var process = Process.Start(info)!;
            var output = new ConcurrentQueue<string>();
            var listening = new TaskCompletionSource<Uri>(TaskCreationOptions.RunContinuationsAsynchronously);
            void Take(string? line)
            {
                if (line is null) return;
                output.Enqueue(line);
                var m = Regex.Match(line, @"listening on (http://127\.0\.0\.1:\d+)");
                if (m.Success) listening.TrySetResult(new Uri(m.Groups[1].Value));
            }

            process.OutputDataReceived += (_, e) => Take(e.Data);
            process.ErrorDataReceived += (_, e) => Take(e.Data);
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
            // The process ends with the test run.
            AppDomain.CurrentDomain.ProcessExit += (_, _) =>
            {
                try { process.Kill(true); } catch (InvalidOperationException) { }
            };

            var started = await Task.WhenAny(listening.Task, Task.Delay(TimeSpan.FromSeconds(90)));
            if (started != listening.Task)
                throw new Exception("the service did not start:\n" + string.Join("\n", output));
            return new ServiceProcess(process, listening.Task.Result);
        }
    }

    /// <summary><see cref="CtsLiteClient"/> against a real service process.</summary>
    public static class ClientTests
    {
        private static readonly Dictionary<string, object?> None = new();

        public static async Task CapabilitiesAreTheCatalogTheLibraryHas()
        {
            var service = await ServiceProcess.Get();
            using var client = ServiceProcess.Client(service.Url);
            var caps = await client.GetCapabilitiesAsync();

            Check.That(caps.Tools.Select(t => t.Id).SequenceEqual(ToolCatalog.All.Select(t => t.Id)), "the same tools");
            Check.That(caps.Monitors.Select(t => t.Id).SequenceEqual(MonitorCatalog.All.Select(t => t.Id)), "the same monitors");
            var local = ToolCatalog.All.Single(t => t.Id == "cruise-control-analyzer");
            var remote = caps.Tools.Single(t => t.Id == "cruise-control-analyzer");
            Check.That(remote.Parameters.Select(p => (p.Name, p.Type, p.Default)).SequenceEqual(local.Parameters.Select(p => (p.Name, p.Type, p.Default))), "typed parameters");
            Check.Equal(ToolCategory.Analyzer, remote.Category, "category");

            var health = await client.GetHealthAsync();
            Check.That(health.IsHealthy, "healthy");
            Check.That(health.Checks.Count > 0 && health.Checks.All(c => c.Passed), "checks");
        }

        public static async Task UploadRunFollowAndDownloadAsALocalRunWould()
        {
            var service = await ServiceProcess.Get();
            using var client = ServiceProcess.Client(service.Url);
            var sent = new List<long>();
            var upload = await client.UploadAsync(CSharp.Tests.Shared.SyntheticLog, new SyncProgress(sent));
            var size = new FileInfo(CSharp.Tests.Shared.SyntheticLog).Length;
            Check.Equal(size, upload.Size, "size");
            Check.Equal(size, sent.Last(), "progress reaches the size");
            Check.Equal("default.rlog.zst", upload.FileName, "name");
            Check.Equal(Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(CSharp.Tests.Shared.SyntheticLog))), upload.Sha256, "sha256");

            var key = Guid.NewGuid().ToString();
            var parameters = new Dictionary<string, object?> { ["speed_min"] = 55, ["speed_max"] = "56" };
            var run = await client.CreateRunAsync("cruise-control-analyzer", RunInput.FromUpload(upload.UploadId), parameters, "from C#", key);
            var again = await client.CreateRunAsync("cruise-control-analyzer", RunInput.FromUpload(upload.UploadId), parameters, "from C#", key);
            Check.Equal(run.RunId, again.RunId, "the same key and request: the same run");
            var conflict = await Check.ThrowsAsync<CtsLiteApiException>(
                () => client.CreateRunAsync("cruise-control-analyzer", RunInput.FromUpload(upload.UploadId), new Dictionary<string, object?> { ["speed_min"] = 40 }, "from C#", key),
                "the key with another request");
            Check.Equal(HttpStatusCode.Conflict, conflict.StatusCode, "409");

            var lines = new List<RunLogEntry>();
            await foreach (var line in client.FollowLogsAsync(run.RunId)) lines.Add(line);
            Check.That(lines.Select(l => l.Sequence).SequenceEqual(Enumerable.Range(1, lines.Count).Select(i => (long)i)), "every line once, in order");
            Check.That(lines.Any(l => l.Source == "engine" && l.Message.StartsWith("completed: 3 Set press(es)")), "the engine's end line");

            // Resumed after the third line: the rest, nothing twice.
            var rest = new List<RunLogEntry>();
            await foreach (var line in client.FollowLogsAsync(run.RunId, afterSequence: 3)) rest.Add(line);
            Check.That(rest.Select(l => l.Sequence).SequenceEqual(lines.Skip(3).Select(l => l.Sequence)), "resumed after line 3");

            var done = await client.WaitForRunAsync(run.RunId);
            Check.Equal(RunStatus.Completed, done.Status, "completed");
            Check.That(done.IsFinished && done.CompletedAt is not null, "finished");
            Check.Equal(55.0, done.Parameters.GetProperty("speed_min").GetDouble(), "coerced parameters");
            Check.That(done.InputFileNames.SequenceEqual(new[] { "default.rlog.zst" }), "input names");

            // The same tool run here writes the same summary.json.
            var localDir = CSharp.Tests.Shared.TempDir();
            await ToolCatalog.RunAsync("cruise-control-analyzer", CSharp.Tests.Shared.SyntheticLog, parameters, localDir);
            var artifacts = await client.GetRunArtifactsAsync(run.RunId);
            Check.That(artifacts.Select(a => a.ArtifactId).OrderBy(x => x).SequenceEqual(done.ArtifactIds.OrderBy(x => x)), "listed as the run says");
            var summary = artifacts.Single(a => a.FileName == "summary.json");
            using (var memory = new MemoryStream())
            {
                var n = await client.DownloadArtifactAsync(summary.ArtifactId, memory);
                Check.Equal(summary.Size, n, "bytes written");
                Check.Equal(File.ReadAllText(Path.Combine(localDir, "summary.json")), System.Text.Encoding.UTF8.GetString(memory.ToArray()), "the local run's summary.json");
            }

            // A download stopped half way goes on from its part file.
            var report = artifacts.Single(a => a.FileName == "analysis_report.html");
            var target = Path.Combine(CSharp.Tests.Shared.TempDir(), "report.html");
            using (var whole = new MemoryStream())
            {
                await client.DownloadArtifactAsync(report.ArtifactId, whole);
                File.WriteAllBytes(target + ".part", whole.ToArray().AsSpan(0, (int)(report.Size / 2)).ToArray());
            }

            var got = await client.DownloadArtifactAsync(report.ArtifactId, target);
            Check.Equal(report.Sha256, Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(target))), "resumed to the whole file");
            Check.That(!File.Exists(target + ".part"), "the part is gone");
            Check.Equal(report.Size, got.Size, "metadata");

            // A part that is not a prefix of the artifact is found out and discarded.
            File.WriteAllBytes(target + ".part", new byte[report.Size / 2]);
            await Check.ThrowsAsync<IOException>(() => client.DownloadArtifactAsync(report.ArtifactId, target), "a wrong part");
            Check.Equal(0L, new FileInfo(target + ".part").Length, "discarded");
        }

        public static async Task PagesOfRunsListEveryRunOnceNewestFirst()
        {
            var service = await ServiceProcess.Get();
            using var client = ServiceProcess.Client(service.Url);
            var ids = new List<string>();
            for (var i = 0; i < 3; i++)
                ids.Add((await client.CreateRunAsync("log-summary", RunInput.FromPath("synthetic/default.rlog.zst"), name: $"page {i}")).RunId);
            foreach (var id in ids) await client.WaitForRunAsync(id);

            var listed = new List<RunInfo>();
            await foreach (var r in client.ListRunsAsync(toolId: "log-summary", pageSize: 1)) listed.Add(r);
            Check.Equal(listed.Count, listed.Select(r => r.RunId).Distinct().Count(), "no run twice");
            var ours = listed.Where(r => ids.Contains(r.RunId)).Select(r => r.RunId).ToList();
            Check.That(ours.SequenceEqual(Enumerable.Reverse(ids)), "ours, newest first: " + string.Join(",", ours));
            Check.That(listed.All(r => r.ToolId == "log-summary"), "filtered by tool");

            var completed = new List<RunInfo>();
            await foreach (var r in client.ListRunsAsync(RunStatus.Completed, "log-summary")) completed.Add(r);
            Check.That(ids.All(id => completed.Any(r => r.RunId == id)), "filtered by status");
        }

        public static async Task RefusalsAreApiExceptionsWithTheProblem()
        {
            var service = await ServiceProcess.Get();
            using var client = ServiceProcess.Client(service.Url);

            var bad = await Check.ThrowsAsync<CtsLiteApiException>(
                () => client.CreateRunAsync("cruise-control-analyzer", RunInput.FromPath("synthetic/default.rlog.zst"), new Dictionary<string, object?> { ["speed_min"] = "fast" }),
                "a bad parameter");
            Check.Equal((HttpStatusCode)422, bad.StatusCode, "422");
            Check.Equal("/params/speed_min", bad.Errors.Single().Pointer, "its pointer");
            Check.That(!string.IsNullOrEmpty(bad.RequestId), "a request id");

            var missing = await Check.ThrowsAsync<CtsLiteApiException>(() => client.GetRunAsync("no-such-run"), "an unknown run");
            Check.Equal(HttpStatusCode.NotFound, missing.StatusCode, "404");
            Check.That(missing.Detail?.Contains("no-such-run") == true, missing.Message);

            var outside = await Check.ThrowsAsync<CtsLiteApiException>(
                () => client.CreateRunAsync("log-summary", RunInput.FromPath("../../etc/passwd")), "a path out of the roots");
            Check.Equal(HttpStatusCode.BadRequest, outside.StatusCode, "400");
            Check.That(outside.Detail is not null && !outside.Detail.Contains(CSharp.Tests.Shared.Dir), "no server path: " + outside.Detail);

            using var anonymous = new CtsLiteClient(service.Url);
            var refused = await Check.ThrowsAsync<CtsLiteApiException>(() => anonymous.GetRunAsync("any-run"), "no token");
            Check.Equal(HttpStatusCode.Unauthorized, refused.StatusCode, "401");

            var run = await client.CreateRunAsync("log-summary", RunInput.FromPath("synthetic/default.rlog.zst"));
            await client.WaitForRunAsync(run.RunId);
            var late = await Check.ThrowsAsync<CtsLiteApiException>(() => client.CancelRunAsync(run.RunId), "cancel a finished run");
            Check.Equal(HttpStatusCode.Conflict, late.StatusCode, "409");
        }

        public static async Task AMonitorOnAReplayStreamsOverAWebSocketUntilStopped()
        {
            var service = await ServiceProcess.Get();
            using var client = ServiceProcess.Client(service.Url);
            var upload = await client.UploadAsync(CSharp.Tests.Shared.SyntheticLog);
            // In log time (a minute of it): the stream is joined while the session runs.
            var session = await client.StartMonitorAsync(
                "can_bus_check", MonitorSource.ReplayUpload(upload.UploadId), new Dictionary<string, object?> { ["window_s"] = 2 },
                new MonitorStartOptions { UpdateInterval = TimeSpan.FromMilliseconds(50) });
            Check.That(session.IsRunning, "running");

            var updates = new List<MonitorUpdate>();
            var stopped = false;
            using var limit = new CancellationTokenSource(TimeSpan.FromMinutes(2));
            await foreach (var u in client.StreamMonitorAsync(session.SessionId, limit.Token))
            {
                updates.Add(u);
                if (!stopped && updates.Count(x => x.Kind == MonitorUpdateKind.Update) >= 5)
                {
                    stopped = true;
                    var after = await client.StopMonitorAsync(session.SessionId);
                    Check.Equal("stopped", after.Status, "stopped");
                }
            }

            Check.Equal(MonitorUpdateKind.Snapshot, updates[0].Kind, "a snapshot on joining");
            Check.Equal(MonitorUpdateKind.End, updates[^1].Kind, "the final state");
            var seqs = updates.Select(u => u.Sequence).ToList();
            Check.That(seqs.Zip(seqs.Skip(1)).All(p => p.Second > p.First), "increasing sequence numbers");
            var final = updates[^1].Data;
            Check.That(final.GetProperty("events").GetInt64() > 0, "events counted");
            Check.That(final.GetProperty("addresses").EnumerateArray().Any(a => a.GetProperty("address").GetString() == "0x13A"), "Wheel_Speeds seen");

            var gone = await Check.ThrowsAsync<CtsLiteApiException>(async () =>
            {
                await foreach (var _ in client.StreamMonitorAsync("no-such-session")) { }
            }, "an unknown session");
            Check.Equal(HttpStatusCode.NotFound, gone.StatusCode, "404");
        }

        private sealed class SyncProgress : IProgress<long>
        {
            private readonly List<long> _values;
            public SyncProgress(List<long> values) => _values = values;
            public void Report(long value) { lock (_values) _values.Add(value); }
        }
    }
}

namespace CtsLite.CSharp.Tests
{
    using System.Net.Http;
    using System.Net.Sockets;

    /// <summary>A TCP proxy in front of the service that cuts the first response of a kind after a
    /// number of bytes, as a dropped Wi-Fi or a restarted load balancer would.</summary>
    internal sealed class CuttingProxy : IDisposable
    {
        private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
        private readonly Uri _upstream;
        private readonly string _cutWhere;
        private readonly int _cutAfter;
        private int _matched;
        private int _cuts;

        public CuttingProxy(Uri upstream, string cutWhere, int cutAfter)
        {
            _upstream = upstream;
            _cutWhere = cutWhere;
            _cutAfter = cutAfter;
            _listener.Start();
            Url = new Uri($"http://127.0.0.1:{((IPEndPoint)_listener.LocalEndpoint).Port}/");
            _ = Task.Run(AcceptAsync);
        }

        public Uri Url { get; }

        public ConcurrentQueue<string> Heads { get; } = new();

        public int Cuts => _cuts;

        public void Dispose() => _listener.Stop();

        private async Task AcceptAsync()
        {
            while (true)
            {
                TcpClient client;
                try { client = await _listener.AcceptTcpClientAsync(); }
                catch (Exception) { return; }
                _ = Task.Run(() => ServeAsync(client));
            }
        }

        private async Task ServeAsync(TcpClient client)
        {
            using (client)
            using (var upstream = new TcpClient())
            {
                await upstream.ConnectAsync(_upstream.Host, _upstream.Port);
                var down = client.GetStream();
                var up = upstream.GetStream();
                // The request head (every request has its own connection: Connection: close).
                var head = new List<byte>();
                var one = new byte[1];
                while (!(head.Count >= 4 && head[^4] == '\r' && head[^3] == '\n' && head[^2] == '\r' && head[^1] == '\n'))
                {
                    if (await down.ReadAsync(one) == 0) return;
                    head.Add(one[0]);
                }

                var text = System.Text.Encoding.ASCII.GetString(head.ToArray());
                Heads.Enqueue(text);
                await up.WriteAsync(head.ToArray());
                var cut = text.Split('\n')[0].Contains(_cutWhere) && Interlocked.Increment(ref _matched) == 1;
                var requestBody = down.CopyToAsync(up);
                var buffer = new byte[4096];
                var sent = 0;
                int n;
                try
                {
                    while ((n = await up.ReadAsync(buffer)) > 0)
                    {
                        if (cut && sent + n >= _cutAfter)
                        {
                            await down.WriteAsync(buffer.AsMemory(0, _cutAfter - sent));
                            Interlocked.Increment(ref _cuts);
                            return; // both connections close here, in the middle of the body
                        }

                        await down.WriteAsync(buffer.AsMemory(0, n));
                        sent += n;
                    }
                }
                catch (IOException) { }
            }
        }
    }

    /// <summary>Every request on a connection of its own, so the proxy sees each head.</summary>
    internal sealed class OneRequestPerConnection : DelegatingHandler
    {
        public OneRequestPerConnection() : base(new SocketsHttpHandler()) { }

        protected override Task<HttpResponseMessage> SendAsync(HttpRequestMessage request, CancellationToken cancellationToken)
        {
            request.Headers.ConnectionClose = true;
            return base.SendAsync(request, cancellationToken);
        }
    }

    /// <summary>The client over a connection that drops.</summary>
    public static class ClientResumeTests
    {
        public static async Task ADroppedLogStreamIsResumedWithoutALineTwiceOrMissing()
        {
            var service = await ServiceProcess.Get();
            using var direct = ServiceProcess.Client(service.Url);
            var run = await direct.CreateRunAsync("cruise-control-analyzer", RunInput.FromPath("synthetic/default.rlog.zst"));
            await direct.WaitForRunAsync(run.RunId);
            var expected = new List<long>();
            await foreach (var line in direct.FollowLogsAsync(run.RunId)) expected.Add(line.Sequence);

            using var proxy = new CuttingProxy(service.Url, "/logs", 700);
            using var http = new HttpClient(new OneRequestPerConnection());
            using var client = new CtsLiteClient(http, new CtsLiteClientOptions { BaseAddress = proxy.Url, Token = ServiceProcess.Token() });
            var got = new List<long>();
            await foreach (var line in client.FollowLogsAsync(run.RunId)) got.Add(line.Sequence);

            Check.Equal(1, proxy.Cuts, "the first stream was cut");
            Check.That(got.SequenceEqual(expected), $"every line once: {string.Join(",", got)} vs {string.Join(",", expected)}");
            Check.That(proxy.Heads.Count(h => h.Contains("/logs") && h.Contains("Last-Event-ID: ")) == 1, "resumed with Last-Event-ID");
        }

        public static async Task ADroppedDownloadGoesOnWithARange()
        {
            var service = await ServiceProcess.Get();
            using var direct = ServiceProcess.Client(service.Url);
            var run = await direct.CreateRunAsync("cruise-control-analyzer", RunInput.FromPath("synthetic/default.rlog.zst"));
            await direct.WaitForRunAsync(run.RunId);
            var report = (await direct.GetRunArtifactsAsync(run.RunId)).Single(a => a.FileName == "analysis_report.html");
            Check.That(report.Size > 20_000, "a report large enough to cut: " + report.Size);

            using var proxy = new CuttingProxy(service.Url, "/download", 10_000);
            using var http = new HttpClient(new OneRequestPerConnection());
            using var client = new CtsLiteClient(http, new CtsLiteClientOptions { BaseAddress = proxy.Url, Token = ServiceProcess.Token() });
            using var memory = new MemoryStream();
            var n = await client.DownloadArtifactAsync(report.ArtifactId, memory);

            Check.Equal(1, proxy.Cuts, "the first download was cut");
            Check.Equal(report.Size, n, "every byte");
            Check.Equal(report.Sha256, Convert.ToHexStringLower(SHA256.HashData(memory.ToArray())), "the artifact's content");
            Check.That(proxy.Heads.Any(h => h.Contains("/download") && h.Contains("Range: bytes=")), "resumed with a range");
        }
    }
}
