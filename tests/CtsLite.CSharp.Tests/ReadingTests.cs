using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Text.Json;
using System.Threading;
using System.Threading.Tasks;

namespace CtsLite.CSharp.Tests
{
    /// <summary>Real logs of the shared data and what their READMEs and summaries say they hold.</summary>
    internal static class Logs
    {
        private static string Rlogs => Path.Combine(Shared.Dir, "data", "rlogs");

        /// <summary>The comma demo qlog, verbatim (bzip2): 11,388 events, 187 not valid, 211 can and 80 sendcan frames.</summary>
        public static string DemoQlogBz2 => Path.Combine(Rlogs, "comma_demo_a2a0ccea32023010_2023-07-27--13-01-19--0.qlog.bz2");

        /// <summary>The same qlog recompressed with zstd.</summary>
        public static string DemoQlogZst =>
            Path.Combine(Rlogs, "derived", "comma_demo_a2a0ccea32023010_2023-07-27--13-01-19--0.qlog.zst");

        /// <summary>The comma2k19 rlog (real CAN, zstd) and its summary.</summary>
        public static string Comma2k19 =>
            Path.Combine(Rlogs, "derived", "comma2k19_rav4_b0c9d2329ad1606b_2018-08-02--08-34-47--40.rlog.zst");

        public static JsonElement Comma2k19Summary => JsonDocument
            .Parse(File.ReadAllText(Path.Combine(Rlogs, "derived",
                "comma2k19_rav4_b0c9d2329ad1606b_2018-08-02--08-34-47--40.summary.json")))
            .RootElement;

        public static string RouteFolder => Path.Combine(Rlogs, "synthetic", "route");

        public static string Route => Path.Combine(RouteFolder, "5ca1ab1e5ca1ab1e|2025-01-16--07-45-12");

        public static JsonElement SyntheticTruth => JsonDocument
            .Parse(File.ReadAllText(Path.Combine(Rlogs, "synthetic", "default.truth.json"))).RootElement;
    }

    /// <summary>A stream that cannot seek, as a download or a pipe is.</summary>
    internal sealed class ForwardOnly : Stream
    {
        private readonly Stream _inner;
        public ForwardOnly(Stream inner) => _inner = inner;
        public bool Disposed { get; private set; }
        public override bool CanRead => true;
        public override bool CanSeek => false;
        public override bool CanWrite => false;
        public override long Length => throw new NotSupportedException();

        public override long Position
        {
            get => throw new NotSupportedException();
            set => throw new NotSupportedException();
        }

        public override void Flush() { }
        // Short reads, as a network gives them.
        public override int Read(byte[] buffer, int offset, int count) => _inner.Read(buffer, offset, Math.Min(count, 3));
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => throw new NotSupportedException();

        protected override void Dispose(bool disposing)
        {
            Disposed = true;
            if (disposing) _inner.Dispose();
            base.Dispose(disposing);
        }
    }

    /// <summary>Reading logs and their CAN frames as a C# caller does.</summary>
    public static class ReadingTests
    {
        public static Task TheDemoQlogHasTheEventsItsReadmeCounts()
        {
            var events = 0;
            var invalid = 0;
            var carState = 0;
            foreach (var e in RlogReader.Open(Logs.DemoQlogBz2))
            {
                events++;
                if (!e.Valid) invalid++;
                if (e.Which == "carState") carState++;
            }

            Check.Equal(11_388, events, "events");
            Check.Equal(187, invalid, "events with valid=false");
            Check.Equal(579, carState, "carState events");
            return Task.CompletedTask;
        }

        public static Task FieldsReadByPathAndEventsAsJson()
        {
            var speeds = new List<double>();
            string? fingerprint = null;
            foreach (var e in RlogReader.Open(Logs.DemoQlogZst,
                         new RlogReaderOptions { Services = new[] { "carState", "carParams" } }))
            {
                if (e.Which == "carState")
                {
                    Check.That(e.TryGetDouble("carState.vEgo", out var v), "carState has vEgo");
                    speeds.Add(v);
                    Check.That(!e.TryGet("carParams.carFingerprint", out _), "a carState event has no carParams");
                }
                else if (e.TryGet("carParams.carFingerprint", out var f))
                {
                    fingerprint = (string?)f;
                    using var json = JsonDocument.Parse(e.ToJson());
                    Check.Equal(e.LogMonoTime.ToString(), json.RootElement.GetProperty("logMonoTime").GetString(),
                        "the JSON's logMonoTime is the event's");
                }
            }

            Check.Equal(579, speeds.Count, "carState events read");
            // The README: highway, vEgo 21.4–29.3 m/s.
            Check.That(speeds.Min() >= 21.3 && speeds.Min() < 21.5, $"lowest vEgo {speeds.Min()}");
            Check.That(speeds.Max() > 29.2 && speeds.Max() <= 29.4, $"highest vEgo {speeds.Max()}");
            Check.Equal("TOYOTA COROLLA TSS2 2019", fingerprint, "carFingerprint");
            return Task.CompletedTask;
        }

        public static Task AnEventUsedAfterTheReadingMovedOnSaysSo()
        {
            var kept = RlogReader.Open(Logs.DemoQlogZst).Take(2).ToList();
            try
            {
                _ = kept[0].Which;
            }
            catch (InvalidOperationException)
            {
                return Task.CompletedTask;
            }

            throw new Exception("a stale event read the current message without a word");
        }

        public static Task CanFramesPerBusAndServiceAsTheReadmeCounts()
        {
            var perSrc = new Dictionary<int, int>();
            var sendcan = 0;
            foreach (var f in RlogReader.CanFrames(Logs.DemoQlogBz2))
            {
                if (f.IsSendCan)
                {
                    sendcan++;
                    Check.Equal(0, f.Bus, "sendcan goes to bus 0");
                }
                else perSrc[f.Bus] = perSrc.GetValueOrDefault(f.Bus) + 1;
            }

            Check.Equal(80, sendcan, "sendcan frames");
            Check.Equal("0:56 1:71 2:22 128:16 130:46",
                string.Join(" ", perSrc.OrderBy(kv => kv.Key).Select(kv => $"{kv.Key}:{kv.Value}")), "can frames by src");
            return Task.CompletedTask;
        }

        public static Task Comma2k19FramesEqualItsSummaryWithoutAllocatingPerFrame()
        {
            var summary = Logs.Comma2k19Summary;
            var first = summary.GetProperty("sample_frames")[0];
            var perSrc = new Dictionary<int, long>();
            CanFrame? firstFrame = null;
            long frames = 0;
            // Once through to warm up (the reader's buffers grow to the largest event once).
            foreach (var _ in RlogReader.CanFrames(Logs.Comma2k19)) { }

            // Counted from the 1,000th frame on: opening a file allocates its buffers once.
            var before = 0L;
            foreach (var f in RlogReader.CanFrames(Logs.Comma2k19))
            {
                if (++frames == 1000) before = GC.GetAllocatedBytesForCurrentThread();
                perSrc[f.Bus] = perSrc.GetValueOrDefault(f.Bus) + 1;
                firstFrame ??= f.Copy();
            }

            var allocated = GC.GetAllocatedBytesForCurrentThread() - before;

            Check.Equal(summary.GetProperty("total_can_frames").GetInt64(), frames, "frames");
            foreach (var src in summary.GetProperty("can_frames_per_src").EnumerateObject())
                Check.Equal(src.Value.GetInt64(), perSrc.GetValueOrDefault(int.Parse(src.Name)), $"frames of src {src.Name}");
            var f0 = firstFrame!.Value;
            Check.Equal(first.GetProperty("address").GetUInt32(), f0.Address, "first frame's address");
            Check.Equal(first.GetProperty("hex").GetString(), Convert.ToHexString(f0.Payload.Span).ToLowerInvariant(),
                "first frame's payload");
            Check.Equal(ulong.Parse(first.GetProperty("logMonoTime").GetString()!), f0.LogMonoTime, "first frame's time");
            // 134,468 frames: one object per frame would be 24 bytes a frame (3 MB).
            Check.That(allocated < (frames - 1000) / 4, $"{allocated} bytes allocated for {frames} frames");
            return Task.CompletedTask;
        }

        public static Task ARouteReadsAsItsSegmentsInOrder()
        {
            var segments = RlogReader.ResolveFiles(Logs.Route);
            Check.Equal(3, segments.Count, "segments of the route");
            var perFile = segments.Select(s => RlogReader.Open(s).Count()).ToArray();
            Check.Equal("71940 71947 71946", string.Join(" ", perFile), "events per segment (the README's)");

            var sources = new List<string>();
            var count = 0;
            ulong last = 0;
            foreach (var e in RlogReader.Open(Logs.Route))
            {
                count++;
                if (sources.Count == 0 || sources[^1] != e.Source) sources.Add(e.Source);
                last = e.LogMonoTime;
            }

            Check.Equal(perFile.Sum(), count, "the route's events");
            Check.Equal(string.Join(",", segments), string.Join(",", sources), "segments in order");
            Check.Equal(perFile.Sum(), RlogReader.Open(segments.Reverse()).Count(), "a list of files as one route");
            Check.That(last > 0, "times read");
            return Task.CompletedTask;
        }

        public static Task AStreamThatCannotSeekReadsLikeTheFile()
        {
            var fromFile = RlogReader.CanFrames(Logs.DemoQlogZst).Count();
            var stream = new ForwardOnly(File.OpenRead(Logs.DemoQlogZst));
            var events = RlogReader.Open(stream, "demo.qlog.zst").Count();
            Check.Equal(11_388, events, "events from the stream");
            Check.That(stream.Disposed, "the stream is disposed after the reading");

            using var kept = new ForwardOnly(File.OpenRead(Logs.DemoQlogBz2));
            Check.Equal(fromFile, RlogReader.CanFrames(kept, "demo.qlog.bz2", leaveOpen: true).Count(), "frames from the stream");
            Check.That(!kept.Disposed, "leaveOpen keeps the stream open");
            return Task.CompletedTask;
        }

        public static async Task AsyncEnumerationOverAStreamGivesEveryEvent()
        {
            var events = 0;
            var carState = 0;
            await using var stream = new ForwardOnly(File.OpenRead(Logs.DemoQlogBz2));
            await foreach (var e in RlogReader.OpenAsync(stream, "demo.qlog.bz2"))
            {
                events++;
                if (e.Which == "carState") carState++;
            }

            Check.Equal(11_388, events, "events");
            Check.Equal(579, carState, "carState events");

            // Stopping early ends the reading thread, and the token is honoured.
            using var cts = new CancellationTokenSource();
            var seen = 0;
            await Check.ThrowsAsync<OperationCanceledException>(async () =>
            {
                await foreach (var _ in RlogReader.OpenAsync(File.OpenRead(Logs.Comma2k19), "comma2k19",
                                   cancellationToken: cts.Token))
                {
                    if (++seen == 100) cts.Cancel();
                }
            }, "cancelled");
            Check.That(seen >= 100 && seen < 12_605, $"stopped after {seen} events");
        }

        public static Task DamageIsReportedWithFileAndOffsetOrThrownWhenStrict()
        {
            var dir = Shared.TempDir();
            try
            {
                // The demo qlog decompressed, cut in the middle of a message.
                var raw = new MemoryStream();
                using (var s = File.OpenRead(Logs.DemoQlogZst))
                using (var z = new ZstdSharp.DecompressionStream(s))
                    z.CopyTo(raw);
                var cut = Path.Combine(dir, "cut.qlog");
                File.WriteAllBytes(cut, raw.ToArray().AsSpan(0, 1_000_001).ToArray());

                var damage = new List<LogDamage>();
                var events = RlogReader.Open(cut, new RlogReaderOptions { OnDamage = damage.Add }).Count();
                Check.That(events > 3000 && events < 11_388, $"the events before the cut were read ({events})");
                Check.Equal(1, damage.Count, "one damage report");
                Check.Equal(cut, damage[0].File, "the damaged file");
                Check.That(damage[0].Offset > 0 && damage[0].Offset <= 1_000_001, $"offset {damage[0].Offset}");
                Check.That(damage[0].Reason.Contains("truncated"), damage[0].Reason);

                var strict = Check.Throws<LogFormatException>(
                    () => RlogReader.Open(cut, new RlogReaderOptions { Strict = true }).Count(), "strict");
                Check.Equal(damage[0].Offset, strict.Damage.Offset, "strict names the same place");

                var empty = Path.Combine(dir, "empty.rlog.zst");
                File.WriteAllBytes(empty, Array.Empty<byte>());
                var none = Check.Throws<LogFormatException>(() => RlogReader.Open(empty).Count(), "an empty file");
                Check.That(none.Message.Contains("no event"), none.Message);

                var missing = Check.Throws<LogFormatException>(
                    () => RlogReader.Open(Path.Combine(dir, "nope.rlog")).Count(), "a missing file");
                Check.That(missing.Message.Contains("nope.rlog"), missing.Message);

                Check.Throws<ArgumentException>(
                    () => RlogReader.Open(cut, new RlogReaderOptions { Services = new[] { "carStat" } }), "unknown service");
            }
            finally
            {
                Directory.Delete(dir, true);
            }

            return Task.CompletedTask;
        }

        public static Task TheManagedDecompressorReadsTheSameFrames()
        {
            var native = RlogReader.CanFrames(Logs.Comma2k19).Select(f => f.Address).Aggregate(0L, (a, x) => a * 31 + x);
            var managed = RlogReader
                .CanFrames(Logs.Comma2k19, new RlogReaderOptions { Decompressor = LogDecompressor.Managed })
                .Select(f => f.Address).Aggregate(0L, (a, x) => a * 31 + x);
            Check.Equal(native, managed, "frame addresses, in order");
            return Task.CompletedTask;
        }
    }
}
