/// `cts log` on the real logs of ../shared: byte-exact conformance with the reference `capnp`
/// tool, decompression twins, and the counts of every summary and truth file.
module CtsLite.Cli.Tests.LogTests

open System
open System.Diagnostics
open System.IO
open System.Security.Cryptography
open System.Text
open System.Text.Json
open System.Threading.Tasks
open Expecto
open CtsLite.Capnp
open CtsLite.Cli
open CtsLite.Can
open CtsLite.Logs
open CtsLite.Tests

let rlogs () =
    Path.Combine(TestEnv.sharedDir (), "data", "rlogs")

let reference () =
    Path.Combine(TestEnv.sharedDir (), "reference")

let demoBz2 () =
    Path.Combine(rlogs (), "comma_demo_a2a0ccea32023010_2023-07-27--13-01-19--0.qlog.bz2")

let demoZst () =
    Path.Combine(rlogs (), "derived", "comma_demo_a2a0ccea32023010_2023-07-27--13-01-19--0.qlog.zst")

let rav4 (ext: string) = TestEnv.comma2k19 ext

let routeName = "5ca1ab1e5ca1ab1e|2025-01-16--07-45-12"

let routeDir () =
    Path.Combine(rlogs (), "synthetic", "route")

let segment (n: int) =
    Path.Combine(routeDir (), $"{routeName}--{n}", "rlog.zst")

let syntheticDefault () =
    Path.Combine(rlogs (), "synthetic", "default.rlog.zst")

let readJson (path: string) =
    JsonDocument.Parse(File.ReadAllText path).RootElement

/// Compares every line written to it with the next line of `expected`; remembers the first difference.
type LineComparer(expected: StreamReader, label: string) =
    inherit Stream()
    let pending = new MemoryStream()
    let mutable lines = 0
    let mutable firstDifference: string option = None

    member _.Lines = lines
    member _.FirstDifference = firstDifference

    member private _.Line(bytes: byte array) =
        let ours = Encoding.UTF8.GetString bytes
        let theirs = expected.ReadLine()
        lines <- lines + 1

        if firstDifference.IsNone && ours <> theirs then
            let theirs = if isNull theirs then "<end of capnp output>" else theirs

            let at =
                Seq.zip ours theirs
                |> Seq.tryFindIndex (fun (a, b) -> a <> b)
                |> Option.defaultValue (min ours.Length theirs.Length)

            let clip (s: string) =
                s.Substring(max 0 (at - 60), min 160 (s.Length - max 0 (at - 60)))

            firstDifference <-
                Some $"{label} line {lines} differs at char {at}:\n  cts:  {clip ours}\n  capnp: {clip theirs}"

    override _.CanRead = false
    override _.CanSeek = false
    override _.CanWrite = true
    override _.Length = 0L

    override _.Position
        with get () = 0L
        and set _ = ()

    override _.Flush() = ()
    override _.Read(_, _, _) = raise (NotSupportedException())
    override _.Seek(_, _) = raise (NotSupportedException())
    override _.SetLength _ = ()

    override this.Write(buffer: byte array, offset: int, count: int) =
        this.Write(ReadOnlySpan(buffer, offset, count))

    override this.Write(span: ReadOnlySpan<byte>) =
        let mutable rest = span

        while not rest.IsEmpty do
            match rest.IndexOf 10uy with
            | -1 ->
                pending.Write rest
                rest <- ReadOnlySpan.Empty
            | i ->
                pending.Write(rest.Slice(0, i))
                this.Line(pending.ToArray())
                pending.SetLength 0L
                rest <- rest.Slice(i + 1)

    override this.WriteByte(b: byte) = this.Write(ReadOnlySpan [| b |])

/// The decompressed bytes of a log, through CtsLite's own decompression.
let decompressed (path: string) : Stream =
    match Compression.openFile path ReaderOptions.Default with
    | Ok(stream, _) -> stream
    | Error e -> failwith e

/// `capnp convert --short binary:json` of `Event` under the schema in `schemaDir`, reading
/// standard input: the reference every dump is compared with.
let capnpConvert (schemaDir: string) : ProcessStartInfo =
    ProcessStartInfo(
        "capnp",
        [
            "convert"
            "-I"
            schemaDir
            "--short"
            "binary:json"
            Path.Combine(schemaDir, "log.capnp")
            "Event"
        ],
        RedirectStandardInput = true,
        RedirectStandardOutput = true,
        RedirectStandardError = true,
        UseShellExecute = false
    )

/// Runs `cts log dump` on `log` and `capnp convert` on the same bytes; every line must be equal.
let conformance (log: string) (schemaDir: string) (schemaArg: string list) =
    use capnp = Process.Start(capnpConvert schemaDir)
    let errors = capnp.StandardError.ReadToEndAsync()

    let feed =
        Task.Run(fun () ->
            use source = decompressed log
            source.CopyTo capnp.StandardInput.BaseStream
            capnp.StandardInput.Close())

    use comparer = new LineComparer(capnp.StandardOutput, Path.GetFileName log)
    use err = new StringWriter()

    let code =
        Program.run (Array.ofList ([ "log"; "dump"; log; "--strict" ] @ schemaArg)) comparer err

    if code <> 0 then
        // Nobody will read capnp's output now: stop it so the feeder cannot block forever.
        capnp.Kill true
        failtestf "cts log dump failed (%d): %s" code (err.ToString())

    feed.Wait()
    let leftover = capnp.StandardOutput.ReadToEnd()
    capnp.WaitForExit()
    Expect.equal capnp.ExitCode 0 $"capnp convert succeeded: {errors.Result}"
    Expect.equal code 0 $"cts log dump succeeded: {err}"
    Expect.isNone comparer.FirstDifference (defaultArg comparer.FirstDifference "")
    Expect.equal leftover "" "capnp printed no more lines than cts"
    Expect.isGreaterThan comparer.Lines 1000 "a real log"

let conformanceTests =
    let newest () = Path.Combine(reference (), "cereal")

    let era (name: string) =
        Path.Combine(reference (), "cereal_eras", name)

    testList "capnp conformance" [
        // Each bz2/zst twin is decoded once here; the twins test below proves they hold the same bytes.
        for name, log in
            [
                "demo qlog (bz2)", demoBz2
                "comma2k19 rlog (zst)", (fun () -> rav4 "zst")
                "synthetic default", syntheticDefault
                "synthetic route segment 0", (fun () -> segment 0)
                "synthetic route segment 1", (fun () -> segment 1)
                "synthetic route segment 2", (fun () -> segment 2)
            ] do
            testCase $"{name}: newest schema (embedded)" (fun () -> conformance (log ()) (newest ()) [])

        // A zstd log once more through each decoder by name (the default is native where it loads;
        // the decompression test below holds both to the same bytes on every zstd log).
        for decoder in [ "native"; "managed" ] do
            testCase $"comma2k19 rlog (zst): {decoder} zstd decoder" (fun () ->
                conformance (rav4 "zst") (newest ()) [ "--decompressor"; decoder ])

        for eraName in [ "cereal_a9082c82"; "cereal_51cbf629" ] do
            for name, log in [ "demo qlog (zst)", demoZst; "comma2k19 rlog (bz2)", (fun () -> rav4 "bz2") ] do
                testCase $"{name}: era {eraName} via --schema .capnp" (fun () ->
                    conformance (log ()) (era eraName) [ "--schema"; Path.Combine(era eraName, "log.capnp") ])
    ]

let sha256Of (stream: Stream) =
    use stream = stream
    Convert.ToHexString(SHA256.HashData stream).ToLowerInvariant()

let decompressionTests =
    testList "decompression" [
        test "bz2 and zst twins decompress to the recorded bytes" {
            let demoSummary =
                readJson (
                    Path.Combine(rlogs (), "comma_demo_a2a0ccea32023010_2023-07-27--13-01-19--0.qlog.summary.json")
                )

            let rawDemo = demoSummary.GetProperty("sha256_raw").GetString()
            Expect.equal (sha256Of (decompressed (demoBz2 ()))) rawDemo "demo bz2"
            Expect.equal (sha256Of (decompressed (demoZst ()))) rawDemo "demo zst"

            let rav4Summary =
                readJson (
                    Path.Combine(
                        rlogs (),
                        "derived",
                        "comma2k19_rav4_b0c9d2329ad1606b_2018-08-02--08-34-47--40.summary.json"
                    )
                )

            let rawRav4 = rav4Summary.GetProperty("sha256_raw").GetString()
            Expect.equal (sha256Of (decompressed (rav4 "bz2"))) rawRav4 "rav4 bz2"
            Expect.equal (sha256Of (decompressed (rav4 "zst"))) rawRav4 "rav4 zst"
        }
        test "detection goes by magic bytes before the extension" {
            let dir = TestEnv.tempDir "magic"
            let misnamed = Path.Combine(dir, "rlog.bz2")
            File.Copy(demoZst (), misnamed)

            match Compression.openFile misnamed ReaderOptions.Default with
            | Ok(stream, kind) ->
                stream.Dispose()
                Expect.equal kind Compression.Zstd "zstd by magic despite .bz2"
            | Error e -> failtest e

            let raw = Path.Combine(dir, "rlog.zst")

            do
                use source = decompressed (demoBz2 ())
                use target = File.Create raw
                source.CopyTo target

            match Compression.openFile raw ReaderOptions.Default with
            | Ok(stream, kind) ->
                stream.Dispose()
                Expect.equal kind Compression.Raw "raw by content despite .zst"
            | Error e -> failtest e
        }
        test "the native and the managed zstd decoder give the same bytes and the same damage" {
            let through (decoder: Decompressor) (path: string) =
                let options = {
                    ReaderOptions.Default with
                        Decompressor = decoder
                }

                match Compression.openFile path options with
                | Error e -> Error e
                | Ok(stream, _) ->
                    use stream = stream
                    use copy = new MemoryStream()

                    try
                        stream.CopyTo copy
                        Ok(Convert.ToHexString(SHA256.HashData(copy.ToArray())))
                    with :? DecodeException as e ->
                        Error $"{DecodeError.describe e.Error} after {copy.Length} bytes"

            let dir = TestEnv.tempDir "decoders"
            let whole = File.ReadAllBytes(rav4 "zst")

            let damaged = [
                "cut", whole[.. whole.Length / 2]
                "header only", whole[..3]
                "empty", [||]
                "garbage after", Array.append whole (Array.create 64 0xEEuy)
                "garbage inside", Array.append whole[..3] (Array.create 64 0xEEuy)
                "two frames", Array.append whole whole
            ]

            let files = [
                rav4 "zst"
                demoZst ()
                syntheticDefault ()
                for name, bytes in damaged do
                    let file = Path.Combine(dir, name.Replace(' ', '-') + ".zst")
                    File.WriteAllBytes(file, bytes)
                    file
            ]

            for file in files do
                let native = through Decompressor.Native file
                Expect.equal native (through Decompressor.Managed file) $"{Path.GetFileName file}: the same"

            Expect.isOk (through Decompressor.Native (rav4 "zst")) "a whole log reads"
            Expect.isError (through Decompressor.Native (Path.Combine(dir, "cut.zst"))) "a cut one is damage"
            Expect.isSome (Compression.nativeZstd ()) "libzstd loads on this machine (Debian's libzstd1)"
        }
        test "a multi-frame zstd file reads as one stream" {
            let dir = TestEnv.tempDir "frames"
            let twice = Path.Combine(dir, "twice.zst")
            File.WriteAllBytes(twice, Array.append (File.ReadAllBytes(demoZst ())) (File.ReadAllBytes(demoZst ())))
            use err = new StringWriter()
            use out = new MemoryStream()
            let code = Program.run [| "log"; "info"; "--json"; twice; "--strict" |] out err
            Expect.equal code 0 (err.ToString())
            let info = JsonDocument.Parse(out.ToArray()).RootElement
            Expect.equal (info.GetProperty("events").GetInt64()) (2L * 11388L) "both frames"
        }
    ]

/// `cts log info` as JSON.
let logInfo (input: string) =
    use err = new StringWriter()
    use out = new MemoryStream()
    let code = Program.run [| "log"; "info"; "--json"; input |] out err
    Expect.equal code 0 (err.ToString())
    JsonDocument.Parse(out.ToArray()).RootElement

let private counts (e: JsonElement) =
    [ for p in e.EnumerateObject() -> p.Name, p.Value.GetInt64() ] |> Map.ofList

let infoTests =
    testList "log info agrees with the recorded counts" [
        test "demo qlog summary" {
            let summary =
                readJson (
                    Path.Combine(rlogs (), "comma_demo_a2a0ccea32023010_2023-07-27--13-01-19--0.qlog.summary.json")
                )

            for log in [ demoBz2 (); demoZst () ] do
                let info = logInfo log
                Expect.equal (info.GetProperty("events").GetInt64()) (summary.GetProperty("events").GetInt64()) "events"

                Expect.equal
                    (counts (info.GetProperty "event_counts"))
                    (counts (summary.GetProperty "union_counts_newest_schema"))
                    "counts by union member"

                Expect.equal
                    (info.GetProperty("can_frames").GetInt64())
                    (summary.GetProperty("can_frames").GetInt64())
                    "can frames"

                Expect.equal
                    (info.GetProperty("sendcan_frames").GetInt64())
                    (summary.GetProperty("sendcan_frames").GetInt64())
                    "sendcan frames"

                Expect.equal
                    (counts (info.GetProperty "can_frames_per_src"))
                    (counts (summary.GetProperty "can_frames_per_bus"))
                    "frames per src"

                Expect.equal
                    (counts (info.GetProperty "can_distinct_addresses_per_src"))
                    (counts (summary.GetProperty "can_distinct_addresses_per_bus"))
                    "addresses per src"

                Expect.equal
                    (info.GetProperty("car_fingerprint").GetString())
                    (summary.GetProperty("carParams").GetProperty("carFingerprint").GetString())
                    "fingerprint"

                let span =
                    float (
                        info.GetProperty("last_log_mono_time").GetUInt64()
                        - info.GetProperty("first_log_mono_time").GetUInt64()
                    )
                    / 1e9

                Expect.floatClose
                    Accuracy.high
                    (Math.Round(span, 3))
                    (summary.GetProperty("logMonoTime_span_s").GetDouble())
                    "time span"

                Expect.equal (info.GetProperty("warnings").GetArrayLength()) 0 "no warnings"
        }
        test "comma2k19 rlog summary" {
            let summary =
                readJson (
                    Path.Combine(
                        rlogs (),
                        "derived",
                        "comma2k19_rav4_b0c9d2329ad1606b_2018-08-02--08-34-47--40.summary.json"
                    )
                )

            for log in [ rav4 "zst"; rav4 "bz2" ] do
                let info = logInfo log
                Expect.equal (info.GetProperty("events").GetInt64()) (summary.GetProperty("events").GetInt64()) "events"

                Expect.equal
                    (counts (info.GetProperty "event_counts"))
                    (counts (summary.GetProperty "event_counts"))
                    "counts"

                Expect.equal
                    (info.GetProperty("can_frames").GetInt64())
                    (summary.GetProperty("total_can_frames").GetInt64())
                    "frames"

                Expect.equal
                    (counts (info.GetProperty "can_frames_per_src"))
                    (counts (summary.GetProperty "can_frames_per_src"))
                    "per src"

                Expect.equal
                    (counts (info.GetProperty "can_distinct_addresses_per_src"))
                    (counts (summary.GetProperty "can_distinct_addresses_per_src"))
                    "addresses"

                let number (e: JsonElement) =
                    if e.ValueKind = JsonValueKind.String then
                        UInt64.Parse(e.GetString())
                    else
                        e.GetUInt64()

                Expect.equal
                    (info.GetProperty("first_log_mono_time").GetUInt64())
                    (number (summary.GetProperty "first_logMonoTime"))
                    "first"

                Expect.equal
                    (info.GetProperty("last_log_mono_time").GetUInt64())
                    (number (summary.GetProperty "last_logMonoTime"))
                    "last"

                Expect.equal (info.GetProperty("car_fingerprint").GetString()) "TOYOTA RAV4 2017" "fingerprint"
        }
        test "synthetic truth files, per file and per route" {
            let check (truthPath: string) (resolveFile: string -> string) =
                let truth = readJson truthPath

                for file in truth.GetProperty("files").EnumerateArray() do
                    let info = logInfo (resolveFile (file.GetProperty("path").GetString()))

                    Expect.equal
                        (info.GetProperty("events").GetInt64())
                        (file.GetProperty("events").GetInt64())
                        "events"

                    Expect.equal
                        (counts (info.GetProperty "event_counts"))
                        (counts (file.GetProperty "event_counts"))
                        "counts"

                    Expect.equal
                        (info.GetProperty("can_frames").GetInt64())
                        (file.GetProperty("can_frames").GetInt64())
                        "frames"

                    Expect.equal
                        (counts (info.GetProperty "can_frames_per_src"))
                        (counts (file.GetProperty "can_frames_per_src"))
                        "per src"

                    Expect.equal
                        (counts (info.GetProperty "can_distinct_addresses_per_src"))
                        (counts (file.GetProperty "can_distinct_addresses_per_src"))
                        "addresses"

                    Expect.equal
                        (info.GetProperty("first_log_mono_time").GetUInt64())
                        (UInt64.Parse(file.GetProperty("first_logMonoTime").GetString()))
                        "first"

                    Expect.equal
                        (info.GetProperty("last_log_mono_time").GetUInt64())
                        (UInt64.Parse(file.GetProperty("last_logMonoTime").GetString()))
                        "last"

            let underShared (relative: string) =
                Path.Combine(TestEnv.sharedDir (), relative.Substring("shared/".Length))

            check (Path.Combine(rlogs (), "synthetic", "default.truth.json")) underShared
            check (Path.Combine(routeDir (), $"{routeName}.truth.json")) underShared
        }
        test "a route reads its segments as one stream, with slices and selectors" {
            let route = Path.Combine(routeDir (), routeName)
            let perSegment = [ for n in 0..2 -> (logInfo (segment n)).GetProperty("events").GetInt64() ]

            let events (address: string) =
                (logInfo address).GetProperty("events").GetInt64()

            Expect.equal (events route) (List.sum perSegment) "whole route"
            Expect.equal (events (route + "/1:3")) (perSegment[1] + perSegment[2]) "slice 1:3"
            Expect.equal (events (route + "/:1/r")) perSegment[0] "slice :1 rlog"
            Expect.equal (events (route + "/-1")) perSegment[2] "last segment"
            Expect.equal (events (route.Replace('|', '_') + "/2/a")) perSegment[2] "underscore form, auto selector"

            use err = new StringWriter()

            let code =
                Program.run [| "log"; "info"; "--json"; route + "/q" |] (new MemoryStream()) err

            Expect.equal code ExitCode.ClientError "no qlogs in this route"
            Expect.stringContains (err.ToString()) "no matching log" "says why"
        }
    ]

let canTests =
    testList "log can" [
        test "frames match the summary's sample frames and filters apply" {
            let summary =
                readJson (
                    Path.Combine(
                        rlogs (),
                        "derived",
                        "comma2k19_rav4_b0c9d2329ad1606b_2018-08-02--08-34-47--40.summary.json"
                    )
                )

            use err = new StringWriter()
            use out = new MemoryStream()
            let code = Program.run [| "log"; "can"; rav4 "zst" |] out err
            Expect.equal code 0 (err.ToString())

            let lines =
                Encoding.UTF8.GetString(out.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries)

            Expect.equal lines[0] "log_mono_time_ns,kind,src,address,data_hex" "header"

            Expect.equal
                (int64 (lines.Length - 1))
                (summary.GetProperty("total_can_frames").GetInt64())
                "one row per frame"

            for sample in summary.GetProperty("sample_frames").EnumerateArray() do
                let row = lines[sample.GetProperty("index").GetInt32() + 1].Split ','
                Expect.equal row[0] (sample.GetProperty("logMonoTime").GetString()) "time"
                Expect.equal row[1] "can" "kind"
                Expect.equal (int row[2]) (sample.GetProperty("src").GetInt32()) "src"
                Expect.equal row[3] $"""0x{sample.GetProperty("address").GetInt32():X3}""" "address"
                Expect.equal row[4] (sample.GetProperty("hex").GetString().ToUpperInvariant()) "payload"

            use filtered = new MemoryStream()

            let code =
                Program.run
                    [| "log"; "can"; rav4 "zst"; "--bus"; "128"; "--address"; "0x2e4" |]
                    filtered
                    (new StringWriter())

            Expect.equal code 0 "filtered"

            let rows =
                Encoding.UTF8.GetString(filtered.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries)
                |> Array.skip 1

            Expect.isNonEmpty rows "some frames"
            Expect.all rows (fun r -> r.Contains ",128,0x2E4,") "only src 128, address 0x2E4"
        }
        test "sendcan frames are listed with their kind" {
            use out = new MemoryStream()
            let code = Program.run [| "log"; "can"; demoBz2 () |] out (new StringWriter())
            Expect.equal code 0 "ok"

            let rows =
                Encoding.UTF8.GetString(out.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries)
                |> Array.skip 1

            Expect.equal (rows |> Array.filter (fun r -> r.Contains ",sendcan,") |> Array.length) 80 "80 sendcan frames"
            Expect.equal rows.Length (211 + 80) "all frames"
        }
    ]

let damageTests =
    testList "damaged logs" [
        test "a file with no event is an error, strict or not, naming the file (empty, header and garbage)" {
            let dir = TestEnv.tempDir "noevents"
            let empty = Path.Combine(dir, "empty.rlog.zst")
            File.WriteAllBytes(empty, [||])
            let garbage = Path.Combine(dir, "zstd_header_then_garbage.rlog.zst")
            File.WriteAllBytes(garbage, Array.append [| 0x28uy; 0xB5uy; 0x2Fuy; 0xFDuy |] (Array.create 64 0xEEuy))

            for file in [ empty; garbage ] do
                for strict in [ []; [ "--strict" ] ] do
                    use err = new StringWriter()

                    let code =
                        Program.run (Array.ofList ([ "log"; "info"; "--json"; file ] @ strict)) (new MemoryStream()) err

                    Expect.equal code ExitCode.ClientError $"{file} {strict}: exit 1"
                    Expect.stringContains (err.ToString()) file "names the file"
                    Expect.isFalse (err.ToString().Contains "warning:") "an error, not a warning"
        }
        test "a FIFO is refused, not waited on, by log and tool commands alike" {
            let dir = TestEnv.tempDir "fifo"
            let pipe = TestEnv.fifo dir "rlog.zst"
            let out = Path.Combine(dir, "out")

            for args in
                [
                    [ "log"; "info"; "--json"; pipe ]
                    [ "log"; "dump"; pipe ]
                    [ "run"; "log-summary"; pipe; "--local"; "--out-dir"; out ]
                ] do
                use err = new StringWriter()

                let work =
                    Threading.Tasks.Task.Run(fun () -> Program.run (Array.ofList args) (new MemoryStream()) err)

                Expect.isTrue (work.Wait(TimeSpan.FromSeconds 30.0)) $"{args}: answered, not blocked"
                Expect.equal work.Result ExitCode.ClientError $"{args}: exit 1"
                Expect.stringContains (err.ToString()) "not a regular file: a named pipe (FIFO)" $"{args}: says why"

            Expect.isFalse (Directory.Exists out) "a run that wrote nothing leaves no empty folder"
        }
        test "a truncated log keeps the events before the damage, warns, and fails under --strict" {
            let dir = TestEnv.tempDir "trunc"
            let raw = Path.Combine(dir, "rlog")

            do
                use source = decompressed (demoBz2 ())
                use target = File.Create raw
                source.CopyTo target

            let bytes = File.ReadAllBytes raw
            let cut = Path.Combine(dir, "cut")
            File.WriteAllBytes(cut, bytes[.. bytes.Length / 2])

            use err = new StringWriter()
            use out = new MemoryStream()
            let code = Program.run [| "log"; "info"; "--json"; cut |] out err
            Expect.equal code 0 "tolerated"
            let info = JsonDocument.Parse(out.ToArray()).RootElement
            let events = info.GetProperty("events").GetInt64()
            Expect.isGreaterThan events 1000L "kept the events before"
            Expect.isLessThan events 11388L "not all"
            Expect.stringContains (err.ToString()) "warning:" "warned"
            Expect.stringContains (err.ToString()) cut "names the file"
            Expect.stringContains (err.ToString()) "byte" "names the offset"

            use strictErr = new StringWriter()

            let strictCode =
                Program.run [| "log"; "info"; "--json"; cut; "--strict" |] (new MemoryStream()) strictErr

            Expect.equal strictCode ExitCode.ClientError "strict fails"
            let line = strictErr.ToString().Trim()
            Expect.isFalse (line.Contains "\n") "one line"
            Expect.stringContains line "truncated" "reason"

            let garbage = Path.Combine(dir, "garbage")
            File.WriteAllBytes(garbage, Array.append bytes (Array.create 100 0xEEuy))
            use gErr = new StringWriter()
            use gOut = new MemoryStream()

            Expect.equal
                (Program.run [| "log"; "info"; "--json"; garbage |] gOut gErr)
                0
                "garbage after valid messages is tolerated"

            Expect.equal
                (JsonDocument.Parse(gOut.ToArray()).RootElement.GetProperty("events").GetInt64())
                11388L
                "every valid event kept"

            Expect.stringContains (gErr.ToString()) "segment" "says what was wrong"
        }
        test "unknown inputs and services are clear errors" {
            use err = new StringWriter()

            Expect.equal
                (Program.run [| "log"; "info"; "--json"; "/no/such/file" |] (new MemoryStream()) err)
                ExitCode.ClientError
                "missing"

            Expect.stringContains (err.ToString()) "/no/such/file" "names it"
            use err2 = new StringWriter()

            Expect.equal
                (Program.run [| "log"; "dump"; demoBz2 (); "--service"; "carStat" |] (new MemoryStream()) err2)
                ExitCode.ClientError
                "bad service"

            Expect.stringContains (err2.ToString()) "carStat" "names it"
        }
        test "dump filters by service and stops at the limit" {
            use out = new MemoryStream()

            let code =
                Program.run
                    [|
                        "log"
                        "dump"
                        demoBz2 ()
                        "--service"
                        "carState"
                        "--service"
                        "can"
                        "--limit"
                        "50"
                    |]
                    out
                    (new StringWriter())

            Expect.equal code 0 "ok"

            let lines =
                Encoding.UTF8.GetString(out.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries)

            Expect.equal lines.Length 50 "limit"

            Expect.all
                lines
                (fun l -> l.Contains "\"carState\":" || l.Contains "\"can\":")
                "only the services asked for"
        }
    ]
