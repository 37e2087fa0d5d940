using System;
using System.Collections.Generic;
using System.Linq;
using System.Runtime.CompilerServices;
using System.Text.Json;
using System.Threading;
using System.Threading.Channels;
using System.Threading.Tasks;
using Microsoft.Extensions.Logging;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using CtsLite.Capnp;
using CoreMonitors = CtsLite.Monitors;
using CoreTools = CtsLite.Tools;

namespace CtsLite
{
    /// <summary>What a monitor update says.</summary>
    public enum MonitorUpdateKind
    {
        /// <summary>The state before the first event.</summary>
        Snapshot,
        /// <summary>The state, at most every <see cref="MonitorReplayOptions.UpdateInterval"/>.</summary>
        Update,
        /// <summary>The source's state changed (connected, silent, reconnecting, ended).</summary>
        SourceStatus,
        /// <summary>Nothing new; the session is alive.</summary>
        Heartbeat,
        /// <summary>The last update: the final state.</summary>
        End,
    }

    /// <summary>One update of a monitor: the same message the service streams over WebSocket.</summary>
    public sealed class MonitorUpdate
    {
        internal MonitorUpdate(MonitorUpdateKind kind, long sequence, DateTimeOffset timestamp, long dropped, JsonElement data)
        {
            Kind = kind;
            Sequence = sequence;
            Timestamp = timestamp;
            Dropped = dropped;
            Data = data;
        }

        /// <summary>What it says.</summary>
        public MonitorUpdateKind Kind { get; }

        /// <summary>1 for the first update of a session, one more for each after it.</summary>
        public long Sequence { get; }

        /// <summary>When it was made (wall time).</summary>
        public DateTimeOffset Timestamp { get; }

        /// <summary>Messages this watcher missed so far because it read too slowly (the service's
        /// stream drops the oldest); always 0 for an in-process replay, which waits for the reader.</summary>
        public long Dropped { get; }

        /// <summary>The monitor's state, a JSON object whose fields each monitor documents
        /// (e.g. <c>addresses</c> for <c>can-bus-check</c>).</summary>
        public JsonElement Data { get; }

        /// <summary><c>{"type", "seq", "t", "data"}</c>, as one line.</summary>
        public string ToJson()
        {
            var o = new System.Text.Json.Nodes.JsonObject
            {
                ["type"] = KindName(Kind),
                ["seq"] = Sequence,
                ["t"] = Math.Round(Timestamp.ToUnixTimeMilliseconds() / 1000.0, 3),
                ["dropped"] = Dropped,
                ["data"] = System.Text.Json.Nodes.JsonNode.Parse(Data.GetRawText()),
            };
            return o.ToJsonString();
        }

        /// <inheritdoc />
        public override string ToString() => $"{KindName(Kind)} #{Sequence}";

        internal static string KindName(MonitorUpdateKind kind) => kind switch
        {
            MonitorUpdateKind.SourceStatus => "source_status",
            _ => kind.ToString().ToLowerInvariant(),
        };

        internal static MonitorUpdate Of(CoreMonitors.MonitorMessage m) =>
            new(KindOf(CoreMonitors.MonitorMessageModule.kindName(m.Kind)), m.Seq, Time(m.T), 0, JsonSerializer.SerializeToElement(m.Data));

        internal static MonitorUpdate Of(Api.MonitorStreamMessage m) =>
            new(KindOf(m.Type), m.Seq, Time(m.T), m.Dropped, m.Data.Clone());

        private static DateTimeOffset Time(double unixSeconds) =>
            DateTimeOffset.FromUnixTimeMilliseconds((long)Math.Round(unixSeconds * 1000.0));

        // The stream's `type` names, one spelling for the local and the service's messages.
        private static MonitorUpdateKind KindOf(string type) => type switch
        {
            "snapshot" => MonitorUpdateKind.Snapshot,
            "source_status" => MonitorUpdateKind.SourceStatus,
            "heartbeat" => MonitorUpdateKind.Heartbeat,
            "end" => MonitorUpdateKind.End,
            _ => MonitorUpdateKind.Update,
        };
    }

    /// <summary>How a recorded log is replayed into a monitor.</summary>
    public sealed record MonitorReplayOptions
    {
        /// <summary>Log time per wall time: 1.0 as recorded, 2.0 twice as fast, 0 as fast as possible.</summary>
        public double Speed { get; init; } = 1.0;

        /// <summary>An update every this much log time (wall time at speed 1); 100 ms by default.</summary>
        public TimeSpan UpdateInterval { get; init; } = TimeSpan.FromMilliseconds(100);

        /// <summary>Damage in the log ends the replay with <see cref="ToolInputException"/> instead of
        /// ending its file with a warning.</summary>
        public bool Strict { get; init; }

        /// <summary>Each tolerated problem (a damaged file's tail), once the replay has ended.</summary>
        public Action<string>? OnWarning { get; init; }

        /// <summary>Where warnings go as well; nothing is logged when null.</summary>
        public ILogger? Logger { get; init; }
    }

    /// <summary>The monitors: watchers of a car's CAN traffic and panda state, here over a recorded
    /// log (the service and <c>cts mon</c> also run them live from a device's bridge).</summary>
    public static class MonitorCatalog
    {
        /// <summary>Every monitor, in display order (<see cref="ToolInfo.Category"/> is <see cref="ToolCategory.Monitor"/>).</summary>
        public static IReadOnlyList<ToolInfo> All { get; } =
            CoreMonitors.Catalog.descriptors.Select(d => new ToolInfo(d)).ToArray();

        /// <summary>
        /// Replays a log (a file, a segment folder or a route address) into a monitor: a
        /// <see cref="MonitorUpdateKind.Snapshot"/> first, updates in log time, the final state as
        /// <see cref="MonitorUpdateKind.End"/>. Leaving the loop early stops the replay.
        /// </summary>
        /// <exception cref="ArgumentException">The monitor id is unknown or an option is out of range.</exception>
        /// <exception cref="ToolParameterException">A parameter is unknown, does not fit, or names a missing file.</exception>
        /// <exception cref="ToolInputException">(While enumerating) the log cannot be read.</exception>
        public static IAsyncEnumerable<MonitorUpdate> ReplayAsync(
            string monitorId,
            string input,
            IReadOnlyDictionary<string, object?> parameters,
            MonitorReplayOptions? options = null,
            CancellationToken cancellationToken = default)
        {
            if (input is null) throw new ArgumentNullException(nameof(input));
            return Replay(monitorId, CoreTools.ToolInput.NewPath(input), parameters, options, cancellationToken);
        }

        /// <summary>Replays log files read in order as one time line, as
        /// <see cref="ReplayAsync(string, string, IReadOnlyDictionary{string, object?}, MonitorReplayOptions?, CancellationToken)"/> does.</summary>
        /// <exception cref="ArgumentException">The monitor id is unknown, no file is given, or an option is out of range.</exception>
        /// <exception cref="ToolParameterException">A parameter is unknown, does not fit, or names a missing file.</exception>
        /// <exception cref="ToolInputException">(While enumerating) a log cannot be read.</exception>
        public static IAsyncEnumerable<MonitorUpdate> ReplayAsync(
            string monitorId,
            IEnumerable<string> files,
            IReadOnlyDictionary<string, object?> parameters,
            MonitorReplayOptions? options = null,
            CancellationToken cancellationToken = default)
        {
            if (files is null) throw new ArgumentNullException(nameof(files));
            var list = files.ToArray();
            if (list.Length == 0 || list.Any(f => f is null)) throw new ArgumentException("give one file at least, none null", nameof(files));
            return Replay(monitorId, CoreTools.ToolInput.NewFiles(ListModule.OfArray(list)), parameters, options, cancellationToken);
        }

        private static IAsyncEnumerable<MonitorUpdate> Replay(
            string monitorId,
            CoreTools.ToolInput input,
            IReadOnlyDictionary<string, object?> parameters,
            MonitorReplayOptions? options,
            CancellationToken cancellationToken)
        {
            if (monitorId is null) throw new ArgumentNullException(nameof(monitorId));
            if (parameters is null) throw new ArgumentNullException(nameof(parameters));
            options ??= new MonitorReplayOptions();
            if (!double.IsFinite(options.Speed) || options.Speed < 0)
                throw new ArgumentException($"speed must be 0 (as fast as possible) or a positive factor, not {options.Speed}", nameof(options));
            if (options.UpdateInterval < TimeSpan.FromMilliseconds(1) || options.UpdateInterval > TimeSpan.FromHours(1))
                throw new ArgumentException("the update interval must be between 1 ms and 1 h", nameof(options));

            // Everything the caller can get wrong is thrown now, before the first MoveNextAsync.
            var found = CoreMonitors.MonitorSession.find(monitorId);
            if (found.IsError) throw new ArgumentException(found.ErrorValue, nameof(monitorId));
            var monitor = found.ResultValue;
            var validated = CoreMonitors.Catalog.validate(monitor, ToolInputs.Of(parameters));
            if (validated.IsError)
                throw ToolInputs.ToException(monitorId, CoreTools.ToolError.NewInvalidParameters(validated.ErrorValue), cancellationToken);
            var resolve = FuncConvert.FromFunc<string, FSharpResult<string, string>>(CoreTools.ToolRunner.localFiles);
            var missing = CoreTools.ToolRunner.checkFiles(resolve, monitor.Descriptor, validated.ResultValue);
            if (!missing.IsEmpty)
                throw ToolInputs.ToException(monitorId, CoreTools.ToolError.NewInvalidParameters(missing), cancellationToken);

            return Stream(monitor, validated.ResultValue, resolve, input, options, cancellationToken);
        }

        private static async IAsyncEnumerable<MonitorUpdate> Stream(
            CoreMonitors.Monitor monitor,
            CoreTools.ToolParameters parameters,
            FSharpFunc<string, FSharpResult<string, string>> resolve,
            CoreTools.ToolInput input,
            MonitorReplayOptions options,
            [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            // A small buffer: the replay waits for a slow consumer instead of holding a drive's
            // worth of updates.
            var channel = Channel.CreateBounded<MonitorUpdate>(new BoundedChannelOptions(64)
            {
                SingleReader = true,
                SingleWriter = true,
                FullMode = BoundedChannelFullMode.Wait,
            });
            using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
            var id = monitor.Descriptor.Id;

            void Emit(CoreMonitors.MonitorMessage message)
            {
                var update = MonitorUpdate.Of(message);
                while (!channel.Writer.TryWrite(update))
                {
                    try
                    {
                        if (!channel.Writer.WaitToWriteAsync(stop.Token).AsTask().GetAwaiter().GetResult()) return;
                    }
                    catch (OperationCanceledException)
                    {
                        return; // the consumer left: the replay sees the same token and ends
                    }
                }
            }

            void Run()
            {
                try
                {
                    var reader = new ReaderOptions(
                        ReaderOptions.Default.TraversalLimitWords,
                        ReaderOptions.Default.NestingLimit,
                        ReaderOptions.Default.MaxSegments,
                        ReaderOptions.Default.MaxMessageWords,
                        ReaderOptions.Default.MaxDecompressedBytes,
                        ReaderOptions.Default.MaxCompressionRatio,
                        options.Strict,
                        ReaderOptions.Default.Decompressor);
                    var session = new CoreMonitors.SessionOptions(
                        (int)Math.Round(options.UpdateInterval.TotalMilliseconds),
                        TimeSpan.FromSeconds(2),
                        FSharpOption<TimeSpan>.None,
                        FSharpOption<CoreMonitors.RecordOptions>.None,
                        reader,
                        new CoreMonitors.EventCounter(),
                        stop.Token);
                    var source = CoreMonitors.MonitorSource.NewReplay(input, options.Speed);
                    var outcome = CoreMonitors.MonitorSession.run(
                        monitor, parameters, resolve, source, session,
                        FuncConvert.FromAction<CoreMonitors.MonitorMessage>(Emit));
                    if (outcome.IsError)
                    {
                        channel.Writer.TryComplete(ToolInputs.ToException(id, outcome.ErrorValue, cancellationToken));
                        return;
                    }

                    foreach (var warning in outcome.ResultValue.Warnings)
                    {
                        options.Logger?.LogWarning("{MonitorId}: {Warning}", id, warning);
                        options.OnWarning?.Invoke(warning);
                    }

                    channel.Writer.TryComplete();
                }
                catch (Exception e)
                {
                    channel.Writer.TryComplete(e);
                }
            }

            var producer = Task.Factory.StartNew(
                Run, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
            try
            {
                await foreach (var update in channel.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
                {
                    // A buffered update is not given once the caller has cancelled.
                    cancellationToken.ThrowIfCancellationRequested();
                    yield return update;
                }
            }
            finally
            {
                stop.Cancel();
                // The replay waits on the same token, so it ends within one event.
                await producer.ConfigureAwait(false);
            }
        }
    }
}
