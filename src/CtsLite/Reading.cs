using System;
using System.Collections;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Runtime.CompilerServices;
using System.Threading;
using System.Threading.Tasks;
using CtsLite.Capnp;
using CtsLite.Logs;
using Microsoft.Extensions.Logging;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;

namespace CtsLite
{
    /// <summary>Which decompressor undoes zstd.</summary>
    public enum LogDecompressor
    {
        /// <summary>The system's native libzstd where it loads (the speed of <c>zstd -dc</c>), else the managed one.</summary>
        Auto,

        /// <summary>The native libzstd only: opening a zstd log fails where it is missing.</summary>
        Native,

        /// <summary>The managed decompressor, everywhere.</summary>
        Managed,
    }

    /// <summary>How logs are read: strictness, damage reports, services, limits, progress.</summary>
    public sealed record RlogReaderOptions
    {
        /// <summary>Default options: damage tolerated (reported, the file's reading ends there), every service.</summary>
        public static RlogReaderOptions Default { get; } = new RlogReaderOptions();

        /// <summary>Damage (truncation, corruption, garbage) throws <see cref="LogFormatException"/>
        /// instead of ending its file with a report.</summary>
        public bool Strict { get; init; }

        /// <summary>Called once for each damaged file whose reading ended early (when not <see cref="Strict"/>).
        /// The events before the damage were all delivered.</summary>
        public Action<LogDamage>? OnDamage { get; init; }

        /// <summary>Only events of these services (e.g. <c>carState</c>, <c>can</c>); every event when empty.</summary>
        public IReadOnlyList<string> Services { get; init; } = Array.Empty<string>();

        /// <summary>The zstd decompressor.</summary>
        public LogDecompressor Decompressor { get; init; } = LogDecompressor.Auto;

        /// <summary>Decompressed bytes of one file, at most (a guard against decompression bombs; 16 GiB by default).</summary>
        public long MaxDecompressedBytes { get; init; } = ReaderOptions.Default.MaxDecompressedBytes;

        /// <summary>Receives the part read, 0 to 1, every few thousand events and at the end.</summary>
        public IProgress<double>? Progress { get; init; }

        /// <summary>Where damage is logged (at warning level) besides <see cref="OnDamage"/>; nothing is logged when null.</summary>
        public ILogger? Logger { get; init; }

        internal LogSourceOptions ToSource(CancellationToken cancellationToken)
        {
            var progress = Progress;
            var reader = new ReaderOptions(
                ReaderOptions.Default.TraversalLimitWords,
                ReaderOptions.Default.NestingLimit,
                ReaderOptions.Default.MaxSegments,
                ReaderOptions.Default.MaxMessageWords,
                MaxDecompressedBytes,
                ReaderOptions.Default.MaxCompressionRatio,
                Strict,
                Decompressor switch
                {
                    LogDecompressor.Native => Capnp.Decompressor.Native,
                    LogDecompressor.Managed => Capnp.Decompressor.Managed,
                    _ => Capnp.Decompressor.Auto,
                });
            return new LogSourceOptions(
                reader,
                FuncConvert.FromAction<double>(p => progress?.Report(p)),
                cancellationToken);
        }
    }

    /// <summary>Where and why a log could not be read to its end.</summary>
    public sealed class LogDamage
    {
        internal LogDamage(DecodeError error)
        {
            File = error.Source;
            Offset = error.Offset;
            Reason = Capnp.DecodeErrorModule.reason(error.Reason);
        }

        /// <summary>The file (or stream name) the damage is in; empty when the input as a whole gave no event.</summary>
        public string File { get; }

        /// <summary>The byte offset in the decompressed log where the damage starts.</summary>
        public long Offset { get; }

        /// <summary>What is wrong, in words.</summary>
        public string Reason { get; }

        /// <inheritdoc />
        public override string ToString() =>
            string.IsNullOrEmpty(File) ? $"byte {Offset}: {Reason}" : $"{File}: byte {Offset}: {Reason}";
    }

    /// <summary>A log that cannot be read: missing, not a log, or damaged when reading strictly.</summary>
    public sealed class LogFormatException : IOException
    {
        internal LogFormatException(LogDamage damage) : base(damage.ToString())
        {
            Damage = damage;
        }

        internal LogFormatException(string message) : base(message)
        {
            Damage = new LogDamage(new DecodeError("", 0, DecodeReason.NewUnreadable(message)));
        }

        /// <summary>The file, the offset and the reason.</summary>
        public LogDamage Damage { get; }
    }

    /// <summary>
    /// One event of a log. It reads the message under the reader, so it is usable until the
    /// enumeration moves on; keep what you need (<see cref="ToJson"/>, field values) before that.
    /// Used later, its members throw <see cref="InvalidOperationException"/>.
    /// </summary>
    public sealed class LogEvent
    {
        private readonly EventCursor _cursor;
        private readonly long _generation;

        internal LogEvent(EventCursor cursor)
        {
            _cursor = cursor;
            _generation = cursor.Generation;
        }

        private LogReader Reader
        {
            get
            {
                if (_cursor.Generation != _generation)
                    throw new InvalidOperationException(
                        "the log has moved past this event; read what you need before the next one");
                return _cursor.Source.Reader;
            }
        }

        /// <summary>The file (or stream name) the event came from.</summary>
        public string Source => Reader.Source;

        /// <summary>The service (the event union's member), e.g. <c>carState</c> or <c>can</c>.</summary>
        public string Which
        {
            get
            {
                var r = Reader;
                return Event.whichName(_cursor.Layout, Event.which(r.Message, _cursor.Layout, r.Event));
            }
        }

        /// <summary>logMonoTime: nanoseconds of the device's monotonic clock.</summary>
        public ulong LogMonoTime
        {
            get
            {
                var r = Reader;
                return Event.logMonoTime(r.Message, _cursor.Layout, r.Event);
            }
        }

        /// <summary>The event's <c>valid</c> flag.</summary>
        public bool Valid
        {
            get
            {
                var r = Reader;
                return Event.valid(r.Message, _cursor.Layout, r.Event);
            }
        }

        /// <summary>
        /// Reads a field by path relative to the event, e.g. <c>carState.vEgo</c> or
        /// <c>pandaStates[0].controlsAllowed</c>. The value is a <see cref="bool"/>, <see cref="long"/>,
        /// <see cref="ulong"/>, <see cref="double"/>, <see cref="string"/> (text, an enum's name, or a
        /// struct or list as JSON), <c>byte[]</c> (data) or null (void).
        /// </summary>
        /// <returns>False when the event has no such field (another service, an inactive union member,
        /// an index past the end, an unknown name).</returns>
        /// <exception cref="LogFormatException">The field's bytes are corrupt.</exception>
        public bool TryGet(string fieldPath, out object? value)
        {
            if (fieldPath is null) throw new ArgumentNullException(nameof(fieldPath));
            var r = Reader;
            var read = FieldPath.read(_cursor.Schema, r.Message, _cursor.Layout.Event, r.Event, fieldPath);
            if (read.IsError) throw new LogFormatException(new LogDamage(Located(read.ErrorValue)));
            value = null;
            switch (read.ResultValue)
            {
                case FieldValue.Bool b: value = b.Item; return true;
                case FieldValue.Int i: value = i.Item; return true;
                case FieldValue.UInt u: value = u.Item; return true;
                case FieldValue.Float f: value = f.Item; return true;
                case FieldValue.Text t: value = t.Item; return true;
                case FieldValue.Data d: value = d.Item; return true;
                case FieldValue.Enum e: value = e.name; return true;
                case FieldValue.Json j: value = j.Item; return true;
                default:
                    return read.ResultValue.IsVoid;
            }
        }

        /// <summary>Reads a numeric or boolean field (true is 1) as a double; false when there is none.</summary>
        /// <exception cref="LogFormatException">The field's bytes are corrupt.</exception>
        public bool TryGetDouble(string fieldPath, out double value)
        {
            value = 0;
            if (!TryGet(fieldPath, out var v)) return false;
            switch (v)
            {
                case double d: value = d; return true;
                case long l: value = l; return true;
                case ulong u: value = u; return true;
                case bool b: value = b ? 1 : 0; return true;
                default: return false;
            }
        }

        /// <summary>The event as JSON, as <c>capnp convert --short binary:json</c> prints it.</summary>
        /// <exception cref="LogFormatException">The event's bytes are corrupt.</exception>
        public string ToJson()
        {
            var r = Reader;
            var writer = new System.Buffers.ArrayBufferWriter<byte>();
            var result = Json.messageToJson(_cursor.Schema, r.Message, _cursor.Layout.Event, r.Source, writer);
            if (result.IsError) throw new LogFormatException(new LogDamage(result.ErrorValue));
            return System.Text.Encoding.UTF8.GetString(writer.WrittenSpan);
        }

        /// <inheritdoc />
        public override string ToString() => $"{Which} @ {LogMonoTime}";

        private DecodeError Located(DecodeError e) =>
            string.IsNullOrEmpty(e.Source) ? new DecodeError(_cursor.Source.Reader.Source, e.Offset, e.Reason) : e;
    }

    /// <summary>
    /// One CAN frame of a log. <see cref="Payload"/> is a view of the reader's buffer, valid until
    /// the enumeration moves on: <see cref="ToArray"/> or <see cref="Copy"/> to keep it.
    /// </summary>
    public readonly struct CanFrame
    {
        internal CanFrame(int bus, uint address, ulong logMonoTime, bool isSendCan, ReadOnlyMemory<byte> payload)
        {
            Bus = bus;
            Address = address;
            LogMonoTime = logMonoTime;
            IsSendCan = isSendCan;
            Payload = payload;
        }

        /// <summary>The raw src byte: 0–2 the receive buses, 128 + bus the panda's TX echoes, 192 + bus rejected TX.</summary>
        public int Bus { get; }

        /// <summary>The CAN id (11 or 29 bits).</summary>
        public uint Address { get; }

        /// <summary>logMonoTime of the event holding the frame, in nanoseconds.</summary>
        public ulong LogMonoTime { get; }

        /// <summary>True for <c>sendcan</c> (what openpilot asked the panda to send), false for <c>can</c>.</summary>
        public bool IsSendCan { get; }

        /// <summary>The payload (0 to 64 bytes), valid until the enumeration moves on.</summary>
        public ReadOnlyMemory<byte> Payload { get; }

        /// <summary>A copy of the payload, kept after the enumeration moves on.</summary>
        public byte[] ToArray() => Payload.ToArray();

        /// <summary>The frame with a payload of its own, kept after the enumeration moves on.</summary>
        public CanFrame Copy() => new CanFrame(Bus, Address, LogMonoTime, IsSendCan, Payload.ToArray());

        /// <inheritdoc />
        public override string ToString() =>
            $"{(IsSendCan ? "sendcan" : "can")} bus {Bus} 0x{Address:X} {Convert.ToHexString(Payload.Span)}";
    }

    /// <summary>The CAN frames of a log, in log order; enumerating reads the log again.</summary>
    public sealed class CanFrameSequence : IEnumerable<CanFrame>
    {
        private readonly Func<EventCursor> _open;

        internal CanFrameSequence(Func<EventCursor> open) => _open = open;

        /// <summary>An enumerator over the frames; it allocates nothing per frame.</summary>
        public CanFrameEnumerator GetEnumerator() => new CanFrameEnumerator(_open());

        IEnumerator<CanFrame> IEnumerable<CanFrame>.GetEnumerator() => GetEnumerator();

        IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();
    }

    /// <summary>Walks the CAN frames of a log; each <see cref="MoveNext"/> may read the next event.</summary>
    public sealed class CanFrameEnumerator : IEnumerator<CanFrame>
    {
        private readonly EventCursor _cursor;
        // The frames of the current event, copied out of the message once per event into buffers
        // that are reused: no allocation per frame, and the cursor (a span reader) stays in one call.
        private uint[] _addresses = new uint[64];
        private byte[] _buses = new byte[64];
        private int[] _lengths = new int[64];
        private byte[] _payloads = new byte[64 * 64];
        private int _count;
        private int _index;
        private ulong _time;
        private bool _sendcan;

        internal CanFrameEnumerator(EventCursor cursor) => _cursor = cursor;

        /// <inheritdoc />
        public CanFrame Current { get; private set; }

        object IEnumerator.Current => Current;

        /// <inheritdoc />
        public bool MoveNext()
        {
            while (_index + 1 >= _count)
            {
                if (!_cursor.Next()) return false;
                Fill();
            }

            _index++;
            Current = new CanFrame(
                _buses[_index],
                _addresses[_index],
                _time,
                _sendcan,
                new ReadOnlyMemory<byte>(_payloads, _index * CanCursor.MaxPayload, _lengths[_index]));
            return true;
        }

        // Under the log source's damage rule: corrupt frames end their file, as in every reader.
        private void Fill()
        {
            _count = 0;
            _index = -1;
            _cursor.Source.Guard(this, static self => self.Copy());
        }

        private void Copy()
        {
            var r = _cursor.Source.Reader;
            var layout = _cursor.Layout;
            var which = Event.which(r.Message, layout, r.Event);
            if (which != layout.CanDiscriminant && which != layout.SendcanDiscriminant) return;
            var batch = Event.canBatch(r.Message, layout, r.Event);
            if (batch.Count > _addresses.Length) Grow(batch.Count);
            _time = batch.LogMonoTime;
            _sendcan = batch.Service.IsSendcan;
            var frames = new CanCursor(r.Message, layout, batch);
            var n = 0;
            while (frames.MoveNext())
            {
                _addresses[n] = frames.Address;
                _buses[n] = frames.Src;
                var payload = frames.Payload;
                _lengths[n] = payload.Length;
                payload.CopyTo(_payloads.AsSpan(n * CanCursor.MaxPayload));
                n++;
            }

            _count = n;
        }

        private void Grow(int count)
        {
            var size = Math.Max(count, _addresses.Length * 2);
            _addresses = new uint[size];
            _buses = new byte[size];
            _lengths = new int[size];
            _payloads = new byte[size * CanCursor.MaxPayload];
        }

        /// <summary>Not supported: enumerate the sequence again to read the log again.</summary>
        public void Reset() => throw new NotSupportedException();

        /// <inheritdoc />
        public void Dispose() => _cursor.Dispose();
    }

    /// <summary>The events of a log source one at a time, with the damage rules of the reading.</summary>
    internal sealed class EventCursor : IDisposable
    {
        private readonly RlogReaderOptions _options;
        private readonly HashSet<int>? _services;
        private int _damageSeen;

        internal EventCursor(LogSource source, RlogReaderOptions options, Schema schema, EventLayout layout)
        {
            Source = source;
            _options = options;
            Schema = schema;
            Layout = layout;
            if (options.Services.Count > 0)
                _services = new HashSet<int>(options.Services.Select(s =>
                {
                    var d = Event.discriminantOf(layout, s);
                    return d == null ? -1 : d.Value;
                }));
        }

        internal LogSource Source { get; }
        internal Schema Schema { get; }
        internal EventLayout Layout { get; }

        /// <summary>Changes with every move, so an event used after it can tell.</summary>
        internal long Generation { get; private set; }

        internal bool Next()
        {
            Generation++;
            while (true)
            {
                var more = Source.Next();
                Report();
                if (!more)
                {
                    var error = Source.Error;
                    if (error != null) throw new LogFormatException(new LogDamage(error.Value));
                    return false;
                }

                if (_services == null) return true;
                var r = Source.Reader;
                if (_services.Contains(Event.which(r.Message, Layout, r.Event))) return true;
            }
        }

        private void Report()
        {
            var damage = Source.Damage;
            while (_damageSeen < damage.Count)
            {
                Tell(new LogDamage(damage[_damageSeen]));
                _damageSeen++;
            }
        }

        private void Tell(LogDamage damage)
        {
            _options.Logger?.LogWarning("log damage: {Damage}", damage.ToString());
            _options.OnDamage?.Invoke(damage);
        }

        public void Dispose() => ((IDisposable)Source).Dispose();
    }

    /// <summary>
    /// Reads openpilot logs (rlog and qlog; zstd, bzip2 or raw Cap'n Proto) with the embedded cereal
    /// schema. An input is a log file, a segment folder, a route address
    /// (<c>dongle|yyyy-mm-dd--hh-mm-ss</c> under a folder, with a slice such as <c>/2:4</c>) or a list
    /// of files read as one route. Several files are read in order as one stream of events.
    /// </summary>
    public static class RlogReader
    {
        private static readonly Lazy<(Schema Schema, EventLayout Layout)> Cereal = new(() =>
        {
            var schema = Capnp.SchemaModule.cereal();
            var layout = EventLayoutModule.ofSchema(schema);
            if (layout.IsError) throw new InvalidOperationException("the embedded schema: " + layout.ErrorValue);
            return (schema, layout.ResultValue);
        });

        /// <summary>The events of a log file, segment folder or route address, in log order.</summary>
        /// <exception cref="LogFormatException">When enumerated: the input cannot be read, gives no event,
        /// or (when strict) is damaged.</exception>
        /// <exception cref="ArgumentException">A service in the options is unknown.</exception>
        public static IEnumerable<LogEvent> Open(string input, RlogReaderOptions? options = null)
        {
            if (input is null) throw new ArgumentNullException(nameof(input));
            var opts = Checked(options);
            return Events(() => Cursor(Resolve(input), opts, CancellationToken.None));
        }

        /// <summary>The events of several log files read in order as one route.</summary>
        /// <exception cref="LogFormatException">When enumerated: a file cannot be read, or (when strict) is damaged.</exception>
        public static IEnumerable<LogEvent> Open(IEnumerable<string> files, RlogReaderOptions? options = null)
        {
            if (files is null) throw new ArgumentNullException(nameof(files));
            var list = ListModule.OfSeq(files.ToArray());
            var opts = Checked(options);
            return Events(() => Cursor(list, opts, CancellationToken.None));
        }

        /// <summary>The events of a log read from a stream (compressed or not, from its start), which
        /// can be enumerated once. The stream is disposed at the end of the enumeration unless
        /// <paramref name="leaveOpen"/>.</summary>
        /// <param name="stream">The log's bytes.</param>
        /// <param name="name">The name warnings and errors give the stream.</param>
        /// <param name="options">How to read.</param>
        /// <param name="leaveOpen">Whether the stream stays open afterwards.</param>
        public static IEnumerable<LogEvent> Open(
            Stream stream, string name = "stream", RlogReaderOptions? options = null, bool leaveOpen = false)
        {
            if (stream is null) throw new ArgumentNullException(nameof(stream));
            var opts = Checked(options);
            return Events(() => StreamCursor(stream, name, opts, leaveOpen, CancellationToken.None));
        }

        /// <summary>
        /// The events of a log read from a stream, for streams that should not block a thread while
        /// waiting (a download): the reading runs on a thread of its own and hands each event over.
        /// Slower per event than <see cref="Open(Stream, string, RlogReaderOptions?, bool)"/>, which is
        /// the fast path for files and memory.
        /// </summary>
        public static async IAsyncEnumerable<LogEvent> OpenAsync(
            Stream stream,
            string name = "stream",
            RlogReaderOptions? options = null,
            bool leaveOpen = false,
            [EnumeratorCancellation] CancellationToken cancellationToken = default)
        {
            if (stream is null) throw new ArgumentNullException(nameof(stream));
            var opts = Checked(options);
            using var handOver = new HandOver();
            var reading = Task.Factory.StartNew(
                () => handOver.Produce(StreamCursor(stream, name, opts, leaveOpen, cancellationToken)),
                cancellationToken,
                TaskCreationOptions.LongRunning,
                TaskScheduler.Default);
            try
            {
                while (await handOver.NextAsync(cancellationToken).ConfigureAwait(false))
                    yield return handOver.Current!;
            }
            finally
            {
                handOver.Stop();
                await reading.ConfigureAwait(false);
            }

            handOver.ThrowIfFailed();
        }

        /// <summary>The CAN frames (<c>can</c> and <c>sendcan</c>) of a log file, segment folder or route address.</summary>
        /// <exception cref="LogFormatException">When enumerated: the input cannot be read, or (when strict) is damaged.</exception>
        public static CanFrameSequence CanFrames(string input, RlogReaderOptions? options = null)
        {
            if (input is null) throw new ArgumentNullException(nameof(input));
            var opts = CanOnly(Checked(options));
            return new CanFrameSequence(() => Cursor(Resolve(input), opts, CancellationToken.None));
        }

        /// <summary>The CAN frames of several log files read in order as one route.</summary>
        public static CanFrameSequence CanFrames(IEnumerable<string> files, RlogReaderOptions? options = null)
        {
            if (files is null) throw new ArgumentNullException(nameof(files));
            var list = ListModule.OfSeq(files.ToArray());
            var opts = CanOnly(Checked(options));
            return new CanFrameSequence(() => Cursor(list, opts, CancellationToken.None));
        }

        /// <summary>The CAN frames of a log read from a stream (enumerable once).</summary>
        public static CanFrameSequence CanFrames(
            Stream stream, string name = "stream", RlogReaderOptions? options = null, bool leaveOpen = false)
        {
            if (stream is null) throw new ArgumentNullException(nameof(stream));
            var opts = CanOnly(Checked(options));
            return new CanFrameSequence(() => StreamCursor(stream, name, opts, leaveOpen, CancellationToken.None));
        }

        /// <summary>The log files of a file, segment folder or route address, in reading order.</summary>
        /// <exception cref="LogFormatException">The input is not a log, a folder of one or a route.</exception>
        public static IReadOnlyList<string> ResolveFiles(string input) => Resolve(input).ToArray();

        private static FSharpList<string> Resolve(string input)
        {
            var files = Route.resolve(input);
            if (files.IsError) throw new LogFormatException(files.ErrorValue);
            return files.ResultValue;
        }

        private static RlogReaderOptions Checked(RlogReaderOptions? options)
        {
            var opts = options ?? RlogReaderOptions.Default;
            var layout = Cereal.Value.Layout;
            var unknown = opts.Services.Where(s => Event.discriminantOf(layout, s) == null).ToArray();
            if (unknown.Length > 0)
                throw new ArgumentException("unknown service(s): " + string.Join(", ", unknown), nameof(options));
            return opts;
        }

        private static RlogReaderOptions CanOnly(RlogReaderOptions options) =>
            options with { Services = new[] { "can", "sendcan" } };

        private static EventCursor Cursor(FSharpList<string> files, RlogReaderOptions options, CancellationToken token) =>
            new(new LogSource(files, options.ToSource(token)), options, Cereal.Value.Schema, Cereal.Value.Layout);

        private static EventCursor StreamCursor(
            Stream stream, string name, RlogReaderOptions options, bool leaveOpen, CancellationToken token)
        {
            var input = leaveOpen ? new KeptOpenStream(stream) : stream;
            return new(LogSource.OfStream(input, name, options.ToSource(token)), options, Cereal.Value.Schema,
                Cereal.Value.Layout);
        }

        private static IEnumerable<LogEvent> Events(Func<EventCursor> open)
        {
            using var cursor = open();
            while (cursor.Next()) yield return new LogEvent(cursor);
        }

        /// <summary>One event at a time from the reading thread to the consumer, and back.</summary>
        private sealed class HandOver : IDisposable
        {
            private readonly SemaphoreSlim _ready = new(0, 1);
            private readonly SemaphoreSlim _taken = new(0, 1);
            private volatile bool _stopped;
            private bool _done;
            private Exception? _failure;

            public LogEvent? Current { get; private set; }

            public void Produce(EventCursor cursor)
            {
                try
                {
                    using (cursor)
                    {
                        while (!_stopped && cursor.Next())
                        {
                            Current = new LogEvent(cursor);
                            _ready.Release();
                            _taken.Wait();
                        }
                    }
                }
                catch (Exception e)
                {
                    _failure = e;
                }

                _done = true;
                Current = null;
                if (!_stopped) _ready.Release();
            }

            public async Task<bool> NextAsync(CancellationToken token)
            {
                if (Current != null) _taken.Release();
                await _ready.WaitAsync(token).ConfigureAwait(false);
                return !_done;
            }

            public void Stop()
            {
                _stopped = true;
                if (_taken.CurrentCount == 0) _taken.Release();
            }

            public void ThrowIfFailed()
            {
                if (_failure != null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(_failure).Throw();
            }

            public void Dispose()
            {
                _ready.Dispose();
                _taken.Dispose();
            }
        }

        /// <summary>A stream whose disposal leaves the caller's stream open.</summary>
        private sealed class KeptOpenStream : Stream
        {
            private readonly Stream _inner;

            public KeptOpenStream(Stream inner) => _inner = inner;

            public override bool CanRead => _inner.CanRead;
            public override bool CanSeek => _inner.CanSeek;
            public override bool CanWrite => false;
            public override long Length => _inner.Length;

            public override long Position
            {
                get => _inner.Position;
                set => _inner.Position = value;
            }

            public override void Flush() { }
            public override int Read(byte[] buffer, int offset, int count) => _inner.Read(buffer, offset, count);
            public override int Read(Span<byte> buffer) => _inner.Read(buffer);
            public override long Seek(long offset, SeekOrigin origin) => _inner.Seek(offset, origin);
            public override void SetLength(long value) => throw new NotSupportedException();
            public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        }
    }
}
