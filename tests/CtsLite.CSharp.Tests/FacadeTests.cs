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
            Check.Equal("float", speedMin.Type, "type");
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
            var lines = new List<string>();

            var result = await ToolCatalog.RunAsync(
                "cruise-control-analyzer",
                Shared.SyntheticLog,
                new Dictionary<string, object?> { ["speed_min"] = 55, ["speed_max"] = "56", ["marker_type"] = "blinkers" },
                dir,
                new SyncProgress(progress),
                line => { lock (lines) lines.Add(line); },
                CancellationToken.None);

            Check.Equal(dir, result.OutputDirectory, "output directory");
            Check.That(result.Artifacts.Contains("summary.json"), "summary.json listed");
            Check.That(result.Artifacts.All(a => File.Exists(Path.Combine(dir, a))), "every artifact exists");
            Check.That(result.Summary.StartsWith("3 Set press(es)"), result.Summary);
            Check.That(progress.Count > 0 && progress.Last() == 100.0, "progress reaches 100");
            Check.That(lines.Any(l => l.StartsWith("warning:")), "log lines arrive");

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

            var rows = File.ReadAllLines(Path.Combine(dir, result.Artifacts[0])).Skip(1).ToArray();
            Check.Equal(3000, rows.Length, "0x146 on bus 1");
        }

        private sealed class SyncProgress : IProgress<double>
        {
            private readonly List<double> values;
            public SyncProgress(List<double> values) => this.values = values;
            public void Report(double value) { lock (values) values.Add(value); }
        }
    }
}
