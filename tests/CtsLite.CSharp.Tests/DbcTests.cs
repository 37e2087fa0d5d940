using System;
using System.Collections.Generic;
using System.IO;
using System.Linq;
using System.Threading.Tasks;

namespace CtsLite.CSharp.Tests
{
    /// <summary>DBC decoding as a C# caller does it, against the synthetic drive's planted truth.</summary>
    public static class DbcTests
    {
        private const string Subaru = "subaru_global_2017_generated.dbc";

        public static Task WheelSpeedsDecodeToThePlantedSpeeds()
        {
            var db = DbcDatabase.Load(Subaru);
            var wheels = db.FindMessage("Wheel_Speeds")!;
            Check.Equal(0x13Au, wheels.Id, "Wheel_Speeds id");
            var fl = wheels.FindSignal("FL")!;
            Check.Equal("kph", fl.Unit, "unit");

            var speedsMph = new List<double>();
            foreach (var frame in RlogReader.CanFrames(Shared.SyntheticLog))
            {
                if (frame.IsSendCan || frame.Address != wheels.Id) continue;
                var decoded = db.Decode(frame);
                var kph = decoded.Where(d => d.Name is "FL" or "FR" or "RL" or "RR").Average(d => d.Value);
                Check.That(db.TryDecodeSignal(frame.Address, "FL", frame.Payload.Span, out var flKph), "FL decodes");
                Check.Equal(decoded.Single(d => d.Name == "FL").Value, flKph, "one signal alone decodes the same");
                speedsMph.Add(kph / 1.609344);
            }

            var truth = Logs.SyntheticTruth.GetProperty("expected_per_file")[0];
            Check.Equal(truth.GetProperty("target_counts_buses_mixed").GetProperty("0x13A").GetInt32(), speedsMph.Count,
                "Wheel_Speeds frames");
            var range = truth.GetProperty("speed_mph_range");
            // One raw step is 0.057 kph (0.035 mph).
            Check.That(Math.Abs(speedsMph.Min() - range[0].GetDouble()) < 0.05, $"slowest {speedsMph.Min()} mph");
            Check.That(Math.Abs(speedsMph.Max() - range[1].GetDouble()) < 0.05, $"fastest {speedsMph.Max()} mph");
            return Task.CompletedTask;
        }

        public static Task TheSetButtonsRisingEdgesAreThePlantedPresses()
        {
            var db = DbcDatabase.Load(Subaru);
            var buttons = db.FindMessage("Cruise_Buttons")!;
            var presses = new List<ulong>();
            var wasSet = false;
            var checksumsBad = 0;
            foreach (var frame in RlogReader.CanFrames(Shared.SyntheticLog))
            {
                if (frame.IsSendCan || frame.Address != buttons.Id || frame.Bus != 1) continue;
                if (!CanChecksum.IsSubaruValid(frame.Address, frame.Payload.Span)) checksumsBad++;
                db.TryDecodeSignal(frame.Address, "Set", frame.Payload.Span, out var set);
                if (set == 1 && !wasSet) presses.Add(frame.LogMonoTime);
                wasSet = set == 1;
            }

            var planted = Logs.SyntheticTruth.GetProperty("expected_per_file")[0].GetProperty("set_presses")
                .EnumerateArray().Select(p => ulong.Parse(p.GetProperty("t_ns").GetString()!)).ToList();
            Check.Equal(planted.Count, presses.Count, "Set presses");
            for (var i = 0; i < planted.Count; i++)
                Check.That(Math.Abs((double)presses[i] - planted[i]) < 20e6, $"press {i} at {presses[i]} (planted {planted[i]})");
            Check.Equal(0, checksumsBad, "bad Cruise_Buttons checksums on bus 1");
            return Task.CompletedTask;
        }

        public static Task EncodeWritesWhatDecodeReads()
        {
            var db = DbcDatabase.Load(Subaru);
            var payload = db.Encode("Wheel_Speeds", new Dictionary<string, double> { ["FL"] = 88.5, ["RR"] = 12.0 });
            Check.Equal(8, payload.Length, "the message's size");
            Check.That(db.TryDecodeSignal(0x13A, "FL", payload, out var fl) && Math.Abs(fl - 88.5) <= 0.057 / 2, $"FL {fl}");
            Check.That(db.TryDecodeSignal(0x13A, "RR", payload, out var rr) && Math.Abs(rr - 12.0) <= 0.057 / 2, $"RR {rr}");
            Check.That(db.TryDecodeSignal(0x13A, "FR", payload, out var fr) && fr == 0, "FR untouched");
            Check.That(!db.TryDecodeSignal(0x13A, "Nope", payload, out _), "no such signal");
            Check.That(!db.TryDecodeSignal(0x7FF, "FL", payload, out _), "no such message");
            Check.Throws<ArgumentException>(
                () => db.Encode("Wheel_Speeds", new Dictionary<string, double> { ["Nope"] = 1 }), "an unknown signal");
            return Task.CompletedTask;
        }

        public static Task ABadDbcNamesLineAndColumn()
        {
            var text = "VERSION \"\"\n\nBO_ 100 Test: 8 XXX\n SG_ A : 0|8@1+ (1,0) [0|255] \"\" XXX\n SG_ B : 8|x@1+ (1,0) [0|1] \"\" XXX\n";
            var e = Check.Throws<DbcFormatException>(() => DbcDatabase.Parse(text, "bad.dbc"), "a bad DBC");
            Check.Equal(1, e.Problems.Count, "one problem");
            Check.Equal(5, e.Problems[0].Line, "line");
            Check.Equal(12, e.Problems[0].Column, "column");
            Check.Equal("bad.dbc", e.Problems[0].File, "file");
            Check.That(e.Message.StartsWith("bad.dbc:5:12: "), e.Message);

            var missing = Check.Throws<DbcFormatException>(() => DbcDatabase.Load("/nonexistent/x.dbc"), "a missing file");
            Check.Equal(0, missing.Problems[0].Line, "no line for a missing file");

            var ok = DbcDatabase.Parse(text.Replace("8|x@", "8|4@"), "good.dbc");
            Check.Equal("A B", string.Join(" ", ok.FindMessage(100)!.Signals.Select(s => s.Name)), "signals in file order");
            Check.That(DbcDatabase.BuiltInNames.Contains(Subaru), "the Subaru DBC is built in");
            return Task.CompletedTask;
        }
    }
}
