using System;
using System.Collections.Generic;
using System.Linq;
using CtsLite.Can;
using Microsoft.FSharp.Collections;
using CoreSignal = CtsLite.Can.SignalModule;

namespace CtsLite
{
    /// <summary>One problem of a DBC file, located.</summary>
    public sealed class DbcProblemInfo
    {
        internal DbcProblemInfo(DbcError e)
        {
            File = e.File;
            Line = e.Line;
            Column = e.Column;
            Message = DbcProblemModule.describe(e.Problem);
            Text = DbcErrorModule.describe(e);
        }

        /// <summary>The file the problem is in.</summary>
        public string File { get; }

        /// <summary>The line, from 1; 0 when the file could not be read at all.</summary>
        public int Line { get; }

        /// <summary>The column, from 1; 0 when the file could not be read at all.</summary>
        public int Column { get; }

        /// <summary>What is wrong, in words.</summary>
        public string Message { get; }

        private string Text { get; }

        /// <summary><c>file:line:column: problem</c>.</summary>
        public override string ToString() => Text;
    }

    /// <summary>A DBC file that cannot be used: every problem found, with line and column.</summary>
    public sealed class DbcFormatException : FormatException
    {
        internal DbcFormatException(IReadOnlyList<DbcProblemInfo> problems)
            : base(string.Join(Environment.NewLine, problems))
        {
            Problems = problems;
        }

        /// <summary>Every problem, in file order.</summary>
        public IReadOnlyList<DbcProblemInfo> Problems { get; }
    }

    /// <summary>One signal's value in one frame.</summary>
    public readonly struct DecodedSignal
    {
        internal DecodedSignal(DbcSignal signal, long raw, double value)
        {
            Signal = signal;
            Raw = raw;
            Value = value;
        }

        /// <summary>The signal's definition.</summary>
        public DbcSignal Signal { get; }

        /// <summary>The signal's name.</summary>
        public string Name => Signal.Name;

        /// <summary>The raw integer (sign-extended for signed signals; the IEEE bits for float signals).</summary>
        public long Raw { get; }

        /// <summary>raw × factor + offset (the float itself for float signals), in <see cref="DbcSignal.Unit"/>.</summary>
        public double Value { get; }

        /// <summary>The value table's label for the raw value (e.g. <c>Drive</c>), or null.</summary>
        public string? Label => Signal.Label(Raw);

        /// <inheritdoc />
        public override string ToString() => Label is { } label ? $"{Name} = {Value} ({label})" : $"{Name} = {Value} {Signal.Unit}".TrimEnd();
    }

    /// <summary>Whether a signal's bits run Intel (little-endian) or Motorola (big-endian).</summary>
    public enum DbcByteOrder
    {
        /// <summary>Intel: starts at its least significant bit, runs upwards.</summary>
        LittleEndian,

        /// <summary>Motorola: starts at its most significant bit, runs downwards in a byte, then on to the next byte.</summary>
        BigEndian,
    }

    /// <summary>A signal of a DBC message.</summary>
    public sealed class DbcSignal
    {
        internal DbcSignal(DbcMessage message, CtsLite.Can.Signal s)
        {
            Message = message;
            Core = s;
            Values = s.Values;
        }

        internal CtsLite.Can.Signal Core { get; }

        /// <summary>The message the signal belongs to.</summary>
        public DbcMessage Message { get; }

        /// <summary>The name, e.g. <c>FL</c>.</summary>
        public string Name => Core.Name;

        /// <summary>The start bit as the DBC file gives it.</summary>
        public int StartBit => Core.StartBit;

        /// <summary>Bits, 1 to 64.</summary>
        public int Length => Core.Length;

        /// <summary>The byte order.</summary>
        public DbcByteOrder ByteOrder => Core.ByteOrder.IsBigEndian ? DbcByteOrder.BigEndian : DbcByteOrder.LittleEndian;

        /// <summary>Whether the raw value is two's-complement signed.</summary>
        public bool IsSigned => Core.Signed;

        /// <summary>The scale: value = raw × factor + offset.</summary>
        public double Factor => Core.Factor;

        /// <summary>The offset: value = raw × factor + offset.</summary>
        public double Offset => Core.Offset;

        /// <summary>The smallest valid value, as the file says.</summary>
        public double Minimum => Core.Minimum;

        /// <summary>The largest valid value, as the file says.</summary>
        public double Maximum => Core.Maximum;

        /// <summary>The unit, e.g. <c>kph</c> (empty when none).</summary>
        public string Unit => Core.Unit;

        /// <summary>The nodes that receive it.</summary>
        public IReadOnlyList<string> Receivers => Core.Receivers.ToArray();

        /// <summary>The value table: labels of raw values.</summary>
        public IReadOnlyDictionary<long, string> Values { get; }

        /// <summary>The file's comment on the signal, or null.</summary>
        public string? Comment => Core.Comment == null ? null : Core.Comment.Value;

        /// <summary>Whether a multiplexed signal is present in this payload (always true for plain signals).</summary>
        public bool IsPresent(ReadOnlySpan<byte> payload) => CoreSignal.isPresent(Message.Core, Core, payload);

        /// <summary>The signal's physical value in a payload.</summary>
        public double Decode(ReadOnlySpan<byte> payload) => CoreSignal.decode(Core, payload).Physical;

        /// <summary>The signal's raw integer in a payload.</summary>
        public long DecodeRaw(ReadOnlySpan<byte> payload) => CoreSignal.decode(Core, payload).Raw;

        /// <summary>Writes a physical value into a payload (rounded to the nearest raw value, clamped to the signal's range).</summary>
        public void Encode(double value, Span<byte> payload) => CoreSignal.encode(Core, value, payload);

        /// <summary>The value table's label for a raw value, or null.</summary>
        public string? Label(long raw) => Values.TryGetValue(raw, out var label) ? label : null;

        /// <inheritdoc />
        public override string ToString() => $"{Message.Name}.{Name}";
    }

    /// <summary>A message of a DBC file: one CAN id and its signals.</summary>
    public sealed class DbcMessage
    {
        private readonly Dictionary<string, DbcSignal> _byName;

        internal DbcMessage(CtsLite.Can.DbcMessage m)
        {
            Core = m;
            Signals = m.Signals.Select(s => new DbcSignal(this, s)).ToArray();
            _byName = Signals.GroupBy(s => s.Name).ToDictionary(g => g.Key, g => g.First());
        }

        internal CtsLite.Can.DbcMessage Core { get; }

        /// <summary>The CAN id (without the extended-frame flag bit).</summary>
        public uint Id => Core.Id;

        /// <summary>Whether the id is a 29-bit extended id.</summary>
        public bool IsExtended => Core.Extended;

        /// <summary>The name, e.g. <c>Wheel_Speeds</c>.</summary>
        public string Name => Core.Name;

        /// <summary>The payload size in bytes.</summary>
        public int Size => Core.Size;

        /// <summary>The node that sends it.</summary>
        public string Transmitter => Core.Transmitter;

        /// <summary>The file's comment on the message, or null.</summary>
        public string? Comment => Core.Comment == null ? null : Core.Comment.Value;

        /// <summary>The signals, in file order.</summary>
        public IReadOnlyList<DbcSignal> Signals { get; }

        /// <summary>A signal by name, or null.</summary>
        public DbcSignal? FindSignal(string name) => _byName.TryGetValue(name, out var s) ? s : null;

        /// <inheritdoc />
        public override string ToString() => $"{Name} (0x{Id:X})";
    }

    /// <summary>
    /// A CAN database (a DBC file, with the files it imports): decodes frames into signals and
    /// encodes signals into payloads.
    /// </summary>
    public sealed class DbcDatabase
    {
        private readonly Dictionary<uint, DbcMessage> _byId;
        private readonly Dictionary<string, DbcMessage> _byName;

        private DbcDatabase(Database db)
        {
            Version = db.Version;
            Messages = db.Messages.Select(m => new DbcMessage(m)).ToArray();
            _byId = new Dictionary<uint, DbcMessage>();
            _byName = new Dictionary<string, DbcMessage>();
            foreach (var m in Messages)
            {
                _byId.TryAdd(m.Id, m);
                _byName.TryAdd(m.Name, m);
            }
        }

        /// <summary>The names of the DBC files built into CtsLite (opendbc's, MIT), usable with <see cref="Load"/>.</summary>
        public static IReadOnlyList<string> BuiltInNames { get; } = Can.Dbc.builtInNames.ToArray();

        /// <summary>Loads a built-in DBC by name, else the file at that path (following its <c>IMPORT</c>s).</summary>
        /// <exception cref="DbcFormatException">The file cannot be read or has problems (each with line and column).</exception>
        public static DbcDatabase Load(string pathOrBuiltInName)
        {
            if (pathOrBuiltInName is null) throw new ArgumentNullException(nameof(pathOrBuiltInName));
            return Of(Can.Dbc.load(pathOrBuiltInName));
        }

        /// <summary>Parses DBC text held in memory (imports are not available).</summary>
        /// <param name="text">The DBC file's text.</param>
        /// <param name="name">The name problems give the text.</param>
        /// <exception cref="DbcFormatException">The text has problems (each with line and column).</exception>
        public static DbcDatabase Parse(string text, string name = "dbc")
        {
            if (text is null) throw new ArgumentNullException(nameof(text));
            return Of(Can.Dbc.parseText(name, text));
        }

        private static DbcDatabase Of(Microsoft.FSharp.Core.FSharpResult<Database, FSharpList<DbcError>> result) =>
            result.IsOk
                ? new DbcDatabase(result.ResultValue)
                : throw new DbcFormatException(result.ErrorValue.Select(e => new DbcProblemInfo(e)).ToArray());

        /// <summary>The file's version string.</summary>
        public string Version { get; }

        /// <summary>Every message, in file order.</summary>
        public IReadOnlyList<DbcMessage> Messages { get; }

        /// <summary>The message of a CAN id, or null.</summary>
        public DbcMessage? FindMessage(uint address) => _byId.TryGetValue(address, out var m) ? m : null;

        /// <summary>A message by name, or null.</summary>
        public DbcMessage? FindMessage(string name) => _byName.TryGetValue(name, out var m) ? m : null;

        /// <summary>The signals present in a frame (a multiplexed signal only where its multiplexor selects it);
        /// empty when the database has no message of the frame's id.</summary>
        public IReadOnlyList<DecodedSignal> Decode(in CanFrame frame) => Decode(frame.Address, frame.Payload.Span);

        /// <summary>The signals present in a payload of a CAN id; empty when the database has no such message.</summary>
        public IReadOnlyList<DecodedSignal> Decode(uint address, ReadOnlySpan<byte> payload)
        {
            var message = FindMessage(address);
            if (message == null) return Array.Empty<DecodedSignal>();
            var values = new List<DecodedSignal>(message.Signals.Count);
            foreach (var s in message.Signals)
            {
                if (!s.IsPresent(payload)) continue;
                var v = CoreSignal.decode(s.Core, payload);
                values.Add(new DecodedSignal(s, v.Raw, v.Physical));
            }

            return values;
        }

        /// <summary>One signal's value in a payload, without allocating: false when the id has no
        /// message, the message no such signal, or a multiplexed signal is absent from this payload.</summary>
        public bool TryDecodeSignal(uint address, string signal, ReadOnlySpan<byte> payload, out double value)
        {
            value = 0;
            var s = FindMessage(address)?.FindSignal(signal);
            if (s == null || !s.IsPresent(payload)) return false;
            value = s.Decode(payload);
            return true;
        }

        /// <summary>
        /// A payload of the message's size with the given signals' physical values written in (other
        /// bits zero). Checksums and counters are not filled in: give them as signals, or see <see cref="CanChecksum"/>.
        /// </summary>
        /// <exception cref="ArgumentException">The message or one of the signals is unknown.</exception>
        public byte[] Encode(string message, IReadOnlyDictionary<string, double> values)
        {
            if (message is null) throw new ArgumentNullException(nameof(message));
            if (values is null) throw new ArgumentNullException(nameof(values));
            var m = FindMessage(message) ?? throw new ArgumentException($"no message named {message}", nameof(message));
            var payload = new byte[m.Size];
            foreach (var kv in values)
            {
                var s = m.FindSignal(kv.Key) ??
                        throw new ArgumentException($"message {m.Name} has no signal {kv.Key}", nameof(values));
                s.Encode(kv.Value, payload);
            }

            return payload;
        }
    }

    /// <summary>Checksums and counters as opendbc defines them.</summary>
    public static class CanChecksum
    {
        /// <summary>Subaru: byte 0 = (address low byte + address high byte + bytes 1..n−1) &amp; 0xFF.</summary>
        public static byte Subaru(uint address, ReadOnlySpan<byte> payload) => Checksum.subaru(address, payload);

        /// <summary>Whether a Subaru frame's checksum (byte 0) is right.</summary>
        public static bool IsSubaruValid(uint address, ReadOnlySpan<byte> payload) =>
            Checksum.subaruValid(address, payload);

        /// <summary>Toyota: last byte = (length + address low byte + address high byte + bytes 0..n−2) &amp; 0xFF.</summary>
        public static byte Toyota(uint address, ReadOnlySpan<byte> payload) => Checksum.toyota(address, payload);

        /// <summary>Whether a Toyota frame's checksum (last byte) is right.</summary>
        public static bool IsToyotaValid(uint address, ReadOnlySpan<byte> payload) =>
            Checksum.toyotaValid(address, payload);

        /// <summary>Whether <paramref name="next"/> follows <paramref name="previous"/> for a counter of <paramref name="bits"/> bits (wrapping).</summary>
        public static bool CounterFollows(int bits, ulong previous, ulong next)
        {
            if (bits < 1 || bits > 63) throw new ArgumentOutOfRangeException(nameof(bits), "1 to 63 bits");
            return Checksum.counterFollows(bits, previous, next);
        }
    }
}
