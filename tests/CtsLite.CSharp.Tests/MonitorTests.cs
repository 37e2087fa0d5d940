using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text.Json;
using System.Threading;
using System.Threading.Tasks;

namespace CtsLite.CSharp.Tests
{
    /// <summary>Monitors replayed from C# with <c>await foreach</c>.</summary>
    public static class MonitorTests
    {
        private static readonly IReadOnlyDictionary<string, object?> NoParameters = new Dictionary<string, object?>();

        private static Dictionary<string, long> Planted(JsonElement truth) =>
            truth.GetProperty("expected_per_file").EnumerateArray()
                .SelectMany(f => f.GetProperty("message_counts_by_address_src").EnumerateObject())
                .GroupBy(p => p.Name)
                .ToDictionary(g => g.Key, g => g.Sum(p => p.Value.GetInt64()));

        public static Task TheCatalogListsTheMonitors()
        {
            var ids = MonitorCatalog.All.Select(m => m.Id).ToList();
            Check.That(ids.Contains("can_bus_check") && ids.Contains("panda_state"), string.Join(", ", ids));
            Check.That(MonitorCatalog.All.All(m => m.Category == ToolCategory.Monitor), "category monitor");
            return Task.CompletedTask;
        }

        public static async Task ABusCheckOverTheRouteCountsEveryAddressAsPlanted()
        {
            var updates = new List<MonitorUpdate>();
            await foreach (var u in MonitorCatalog.ReplayAsync(
                "can_bus_check", Logs.Route, NoParameters, new MonitorReplayOptions { Speed = 0 }))
                updates.Add(u);

            Check.Equal(MonitorUpdateKind.Snapshot, updates[0].Kind, "a snapshot first");
            Check.Equal(MonitorUpdateKind.End, updates[^1].Kind, "the final state last");
            Check.That(updates.Select(u => u.Sequence).SequenceEqual(Enumerable.Range(1, updates.Count).Select(i => (long)i)), "no gaps");
            // Three minutes of log time, an update every 100 ms of it.
            Check.That(updates.Count(u => u.Kind == MonitorUpdateKind.Update) > 1700, $"{updates.Count} updates");

            var seen = updates[^1].Data.GetProperty("addresses").EnumerateArray()
                .Where(a => a.GetProperty("bus").ValueKind == JsonValueKind.Number)
                .ToDictionary(a => $"{a.GetProperty("address").GetString()}/{a.GetProperty("bus").GetInt32()}", a => a.GetProperty("count").GetInt64());
            var planted = Planted(JsonDocument.Parse(File.ReadAllText(Logs.Route + ".truth.json")).RootElement);
            Check.Equal(planted.Count, seen.Count, "addresses");
            foreach (var (key, count) in planted) Check.Equal(count, seen.GetValueOrDefault(key), key);

            using var line = JsonDocument.Parse(updates[^1].ToJson());
            Check.Equal("end", line.RootElement.GetProperty("type").GetString(), "the stream's JSON type");
            Check.Equal(updates[^1].Sequence, line.RootElement.GetProperty("seq").GetInt64(), "the stream's seq");
        }

        public static async Task PandaStateSeesThePlantedSafetyModelWithParameters()
        {
            JsonElement? last = null;
            await foreach (var u in MonitorCatalog.ReplayAsync(
                "panda_state", Shared.SyntheticLog, NoParameters,
                new MonitorReplayOptions { Speed = 0, UpdateInterval = TimeSpan.FromSeconds(1) }))
                last = u.Data;

            var panda = last!.Value.GetProperty("pandas")[0];
            Check.Equal("subaru", panda.GetProperty("safety_model").GetString(), "safety model");
            Check.Equal(2UL, panda.GetProperty("safety_rx_invalid").GetUInt64(), "the two planted bad frames");
            Check.Equal(600L, last.Value.GetProperty("updates").GetInt64(), "every pandaStates event");
        }

        public static async Task LeavingTheLoopStopsAReplayInRealTime()
        {
            // At speed 1 the 3-minute route would take three minutes: leaving after two updates
            // must end the replay, or this test hangs.
            var kinds = new List<MonitorUpdateKind>();
            await foreach (var u in MonitorCatalog.ReplayAsync("can_bus_check", Logs.Route, NoParameters))
            {
                kinds.Add(u.Kind);
                if (kinds.Count == 2) break;
            }

            Check.Equal(MonitorUpdateKind.Snapshot, kinds[0], "snapshot");
            Check.Equal(MonitorUpdateKind.Update, kinds[1], "an update in log time");
        }

        public static async Task CancellationEndsTheLoopWithOperationCanceledException()
        {
            using var cts = new CancellationTokenSource();
            var count = 0;
            await Check.ThrowsAsync<OperationCanceledException>(async () =>
            {
                await foreach (var _ in MonitorCatalog.ReplayAsync("can_bus_check", Logs.Route, NoParameters, cancellationToken: cts.Token))
                    if (++count == 3) cts.Cancel();
            }, "cancelled");
            Check.Equal(3, count, "nothing after the cancel");
        }

        public static async Task MistakesAreThrownBeforeTheLoopAndBadLogsInIt()
        {
            Check.Throws<ArgumentException>(
                () => MonitorCatalog.ReplayAsync("no_such_monitor", Logs.Route, NoParameters), "unknown monitor");
            var bad = Check.Throws<ToolParameterException>(
                () => MonitorCatalog.ReplayAsync("can_bus_check", Logs.Route, new Dictionary<string, object?> { ["window_s"] = "soon" }),
                "bad parameter");
            Check.Equal("window_s", bad.Errors.Single().Parameter, "named");
            Check.Throws<ToolParameterException>(
                () => MonitorCatalog.ReplayAsync("can_bus_check", Logs.Route, new Dictionary<string, object?> { ["dbc"] = "/nonexistent.dbc" }),
                "a missing DBC");
            Check.Throws<ArgumentException>(
                () => MonitorCatalog.ReplayAsync("can_bus_check", Logs.Route, NoParameters, new MonitorReplayOptions { Speed = -1 }),
                "a negative speed");

            var e = await Check.ThrowsAsync<ToolInputException>(async () =>
            {
                await foreach (var _ in MonitorCatalog.ReplayAsync("can_bus_check", "/nonexistent/rlog.zst", NoParameters)) { }
            }, "a missing log");
            Check.That(e.Message.Contains("/nonexistent/rlog.zst"), e.Message);

            var empty = Path.Combine(Shared.TempDir(), "empty.rlog");
            File.WriteAllBytes(empty, Array.Empty<byte>());
            var warnings = new List<string>();
            var damaged = await Check.ThrowsAsync<ToolInputException>(async () =>
            {
                await foreach (var _ in MonitorCatalog.ReplayAsync("can_bus_check", empty, NoParameters,
                    new MonitorReplayOptions { Speed = 0, OnWarning = warnings.Add })) { }
            }, "an empty log");
            Check.That(damaged.Message.Contains("empty.rlog"), damaged.Message);
        }
    }
}
