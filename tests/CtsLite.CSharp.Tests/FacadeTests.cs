using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text.Json;
using System.Threading;
using System.Threading.Tasks;

namespace CtsLite.CSharp.Tests
{
    /// <summary>Where the shared test data is: CTS_SHARED_DIR, or ../shared beside the repository.</summary>
    internal static class Shared
    {
        public static string Dir
        {
            get
            {
                var fromEnv = Environment.GetEnvironmentVariable("CTS_SHARED_DIR");
                if (!string.IsNullOrEmpty(fromEnv)) return Path.GetFullPath(fromEnv);
                var dir = new DirectoryInfo(AppContext.BaseDirectory);
                while (dir != null && !File.Exists(Path.Combine(dir.FullName, "CtsLite.sln"))) dir = dir.Parent;
                if (dir == null) throw new InvalidOperationException("CtsLite.sln not found");
                return Path.GetFullPath(Path.Combine(dir.FullName, "..", "shared"));
            }
        }

        public static string SyntheticLog => Path.Combine(Dir, "data", "rlogs", "synthetic", "default.rlog.zst");

        public static string TempDir()
        {
            var dir = Path.Combine(Path.GetTempPath(), "ctslite-csharp-" + Guid.NewGuid().ToString("N"));
            Directory.CreateDirectory(dir);
            return dir;
        }
    }

    internal static class Check
    {
        public static void That(bool condition, string what)
        {
            if (!condition) throw new Exception("failed: " + what);
        }

        public static void Equal<T>(T expected, T actual, string what)
        {
            if (!EqualityComparer<T>.Default.Equals(expected, actual))
                throw new Exception($"{what}: expected {expected}, got {actual}");
        }

        public static TException Throws<TException>(Action action, string what)
            where TException : Exception
        {
            try
            {
                action();
            }
            catch (TException e)
            {
                return e;
            }
            catch (Exception e)
            {
                throw new Exception($"{what}: expected {typeof(TException).Name}, got {e.GetType().Name}: {e.Message}");
            }

            throw new Exception($"{what}: expected {typeof(TException).Name}, nothing was thrown");
        }

        public static async Task<TException> ThrowsAsync<TException>(Func<Task> action, string what)
            where TException : Exception
        {
            try
            {
                await action();
            }
            catch (TException e)
            {
                return e;
            }
            catch (Exception e)
            {
                throw new Exception($"{what}: expected {typeof(TException).Name}, got {e.GetType().Name}: {e.Message}");
            }

            throw new Exception($"{what}: expected {typeof(TException).Name}, nothing was thrown");
        }
    }

    /// <summary>The facade as a C# caller sees it.</summary>
    public static class FacadeTests
    {
        public static Task CatalogListsTheToolsWithTheirParameters()
        {
            var ids = ToolCatalog.All.Select(t => t.Id).ToList();
            Check.That(ids.Contains("cruise-control-analyzer"), "the analyzer is listed");
            Check.That(ids.Contains("rlog-to-csv"), "rlog-to-csv is listed");

            var analyzer = ToolCatalog.All.Single(t => t.Id == "cruise-control-analyzer");
            var speedMin = analyzer.Parameters.Single(p => p.Name == "speed_min");
            Check.Equal(ToolParameterType.Float, speedMin.Type, "type");
            Check.Equal(ToolCategory.Analyzer, analyzer.Category, "category");
            Check.Equal(ToolCategory.Converter, ToolCatalog.All.Single(t => t.Id == "rlog-to-csv").Category, "converter");
            Check.Equal(ToolParameterType.File, analyzer.Parameters.Single(p => p.Name == "dbc").Type, "a file parameter");
            Check.Equal<object?>(55.0, speedMin.Default, "default");
            var marker = analyzer.Parameters.Single(p => p.Name == "marker_type");
            Check.That(marker.Choices.SequenceEqual(new[] { "blinkers", "none" }), "choices");
            Check.Equal(0.0, analyzer.Parameters.Single(p => p.Name == "marker_pre").Min, "min");
            return Task.CompletedTask;
        }

        public static async Task RunAsyncAnalysesALogWithProgressAndTypedParameters()
        {
            var dir = Shared.TempDir();
            var progress = new List<double>();
            var lines = new List<ToolLogEntry>();

            var result = await ToolCatalog.RunAsync(
                "cruise-control-analyzer",
                Shared.SyntheticLog,
                new Dictionary<string, object?> { ["speed_min"] = 55, ["speed_max"] = "56", ["marker_type"] = "blinkers" },
                dir,
                new ToolRunOptions
                {
                    Progress = new SyncProgress(progress),
                    Log = line => { lock (lines) lines.Add(line); },
                },
                CancellationToken.None);

            Check.Equal("cruise-control-analyzer", result.ToolId, "tool id");
            Check.Equal(dir, result.OutputDirectory, "output directory");
            Check.That(result.Artifacts.Any(a => a.Name == "summary.json"), "summary.json listed");
            foreach (var a in result.Artifacts)
            {
                Check.Equal(new FileInfo(a.FullPath).Length, a.Length, a.Name + " size");
                Check.Equal(Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(a.FullPath))), a.Sha256, a.Name + " sha256");
            }
            Check.Equal("application/json", result.Artifacts.Single(a => a.Name == "summary.json").ContentType.Split(';')[0], "content type");
            Check.Equal<object>(55.0, result.Parameters["speed_min"], "the int 55 coerced to the float parameter");
            Check.Equal<object>("blinkers", result.Parameters["marker_type"], "a given choice");
            Check.That(result.Parameters.ContainsKey("marker_pre"), "defaults are filled in");
            Check.That(result.Summary.Text.StartsWith("3 Set press(es)"), result.Summary.Text);
            Check.That(progress.Count > 0 && progress.Last() == 100.0, "progress reaches 100");
            Check.That(lines.Any(l => l.Level == ToolLogLevel.Warning && l.ToString().StartsWith("warning: ")), "log lines arrive with a level");
            Check.That(lines.All(l => l.Timestamp > DateTimeOffset.UtcNow.AddMinutes(-10)), "log lines are stamped");

            // The facts are the figures of the planted truth, not text to parse.
            var planted = Logs.SyntheticTruth.GetProperty("expected_per_file")[0];
            Check.Equal(planted.GetProperty("set_presses").GetArrayLength(), (int)result.Summary.Count("set_presses")!, "set presses");
            Check.Equal(planted.GetProperty("target_speed_events").GetArrayLength(), (int)result.Summary.Count("target_speed_events")!, "target-speed events");
            Check.Equal(planted.GetProperty("marker_windows").GetArrayLength(), (int)result.Summary.Count("marker_windows")!, "marker windows");
            Check.Equal(planted.GetProperty("can_frames").GetInt64(), result.Summary.Count("can_frames"), "CAN frames");
            Check.That(result.Summary.Facts.Keys.SequenceEqual(new[] { "set_presses", "target_speed_events", "marker_windows", "can_frames" }), "in the line's order");
            Check.Equal<long?>(null, result.Summary.Count("no_such_fact"), "an absent fact");
            using var asJson = JsonDocument.Parse(result.Summary.ToJson());
            Check.Equal(result.Summary.Text, asJson.RootElement.GetProperty("text").GetString(), "the document's text");
            Check.Equal(3, asJson.RootElement.GetProperty("facts").GetProperty("set_presses").GetInt32(), "the document's facts");

            using var summary = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "summary.json")));
            Check.Equal(3, summary.RootElement.GetProperty("set_presses").GetArrayLength(), "set presses");
        }

        public static async Task BadParametersThrowWithOneErrorEach()
        {
            var e = await Check.ThrowsAsync<ToolParameterException>(
                () => ToolCatalog.RunAsync(
                    "cruise-control-analyzer",
                    Shared.SyntheticLog,
                    new Dictionary<string, object?> { ["speed_min"] = "fast", ["colour"] = "red" },
                    Shared.TempDir()),
                "bad parameters");

            Check.That(e.Errors.Select(x => x.Parameter).OrderBy(x => x).SequenceEqual(new[] { "colour", "speed_min" }), "both named");
            await Check.ThrowsAsync<ArgumentException>(
                () => ToolCatalog.RunAsync("no-such-tool", "x", new Dictionary<string, object?>(), Shared.TempDir()),
                "unknown tool");
        }

        public static async Task AMissingInputIsAnIOExceptionNamingIt()
        {
            var e = await Check.ThrowsAsync<ToolInputException>(
                () => ToolCatalog.RunAsync("log-summary", "/nonexistent/rlog.zst", new Dictionary<string, object?>(), Shared.TempDir()),
                "missing input");
            Check.That(e.Message.Contains("/nonexistent/rlog.zst"), e.Message);
        }

        public static async Task CancellationIsAnOperationCanceledException()
        {
            using var cts = new CancellationTokenSource();
            cts.Cancel();
            var dir = Shared.TempDir();
            await Check.ThrowsAsync<OperationCanceledException>(
                () => ToolCatalog.RunAsync("rlog-to-csv", Shared.SyntheticLog, new Dictionary<string, object?>(), dir, cancellationToken: cts.Token),
                "cancelled");
            Check.Equal(0, Directory.GetFiles(dir).Length, "nothing written");
        }

        public static async Task ListParametersTakeStringCollections()
        {
            var dir = Shared.TempDir();
            var result = await ToolCatalog.RunAsync(
                "rlog-to-csv",
                Shared.SyntheticLog,
                new Dictionary<string, object?> { ["buses"] = new[] { "1" }, ["addresses"] = new List<string> { "0x146" } },
                dir);

            var rows = File.ReadAllLines(result.Artifacts[0].FullPath).Skip(1).ToArray();
            Check.Equal(3000, rows.Length, "0x146 on bus 1");
            Check.Equal(3000L, result.Summary.Count("rows"), "the rows fact");
        }

        public static async Task ARouteGivenAsFilesIsOneTimeLine()
        {
            var segments = Directory.GetDirectories(Logs.RouteFolder).OrderBy(d => d, StringComparer.Ordinal)
                .Select(d => Directory.GetFiles(d).Single(f => f.Contains("rlog"))).ToArray();
            Check.Equal(3, segments.Length, "three segments");
            var result = await ToolCatalog.RunAsync("log-summary", segments, new Dictionary<string, object?>(), Shared.TempDir());

            var planted = JsonDocument.Parse(File.ReadAllText(Logs.Route + ".truth.json")).RootElement
                .GetProperty("expected_per_file").EnumerateArray().Sum(f => f.GetProperty("can_frames").GetInt64());
            Check.Equal(planted, result.Summary.Count("can_frames"), "every segment's frames");
            Check.That(result.Summary.Facts["duration_s"] > 170, "three minutes: " + result.Summary.Facts["duration_s"]);
            Check.Throws<ArgumentException>(
                () => ToolCatalog.RunAsync("log-summary", Array.Empty<string>(), new Dictionary<string, object?>(), Shared.TempDir()),
                "no files");
        }

        public static async Task ATimeLimitEndsARunWithTimeoutException()
        {
            var dir = Shared.TempDir();
            // The 3-minute route cannot be analysed in a millisecond; the limit is the point, not the speed.
            await Check.ThrowsAsync<TimeoutException>(
                () => ToolCatalog.RunAsync("cruise-control-analyzer", Logs.Route, new Dictionary<string, object?>(), dir,
                    new ToolRunOptions { Timeout = TimeSpan.FromMilliseconds(1) }),
                "timed out");
            Check.Throws<ArgumentOutOfRangeException>(
                () => ToolCatalog.RunAsync("log-summary", Logs.Route, new Dictionary<string, object?>(), dir,
                    new ToolRunOptions { Timeout = TimeSpan.Zero }),
                "a zero limit");
        }

        private sealed class SyncProgress : IProgress<double>
        {
            private readonly List<double> values;
            public SyncProgress(List<double> values) => this.values = values;
            public void Report(double value) { lock (values) values.Add(value); }
        }
    }
}
