/// What a hostile log costs in memory, measured as a user sees it: the peak resident set of a real
/// `cts` process reading it.
module CtsLite.Cli.Tests.MemoryTests

open System
open System.Buffers.Binary
open System.Diagnostics
open System.IO
open Expecto
open CtsLite.Capnp
open CtsLite.Cli
open CtsLite.Logs
open CtsLite.Tests

/// The `pointer_amplification` shape: one `can` event (a single-segment message) of `frames`
/// CanData whose `dat` pointers all point at one blob of `blobBytes`. The message is
/// 16 bytes a frame plus the blob; a reader that copies each payload copies frames × blob bytes
/// (100,000 × 64 KiB is 6.5 GB from a 1.7 MB message).
let amplified (frames: int) (blobBytes: int) : byte array =
    let schema = Schema.cereal ()

    let layout =
        match EventLayout.ofSchema schema with
        | Ok l -> l
        | Error e -> failwith e

    let canData =
        schema.TryFindStruct "CanData"
        |> Option.defaultWith (fun () -> failwith "no CanData")

    let eventWords = layout.Event.DataWords + layout.Event.PointerCount
    let elementWords = canData.DataWords + canData.PointerCount
    // The root pointer, the event, the list's tag, the elements, the blob.
    let tag = 1 + eventWords
    let blob = tag + 1 + frames * elementWords
    let words = Array.zeroCreate<uint64>(blob + (blobBytes + 7) / 8)

    let structPointer (offset: int) (dataWords: int) (pointers: int) =
        uint64 (uint32 (offset <<< 2))
        ||| (uint64 dataWords <<< 32)
        ||| (uint64 pointers <<< 48)

    let listPointer (at: int) (target: int) (elementSize: int) (count: int) =
        1UL
        ||| uint64 (uint32 ((target - at - 1) <<< 2))
        ||| (uint64 elementSize <<< 32)
        ||| (uint64 count <<< 35)

    let put (word: int) (byteOffset: int) (bytes: int) (value: uint64) =
        let w = word + byteOffset / 8
        let shift = 8 * (byteOffset % 8)

        let mask =
            (if bytes = 8 then
                 UInt64.MaxValue
             else
                 (1UL <<< (8 * bytes)) - 1UL)
            <<< shift

        words[w] <- (words[w] &&& ~~~mask) ||| ((value <<< shift) &&& mask)

    words[0] <- structPointer 0 layout.Event.DataWords layout.Event.PointerCount
    put 1 layout.LogMonoTimeByte 8 1_000_000UL
    put 1 layout.DiscriminantByte 2 (uint64 layout.CanDiscriminant)
    let canPointer = 1 + layout.Event.DataWords + layout.CanPointer
    words[canPointer] <- listPointer canPointer tag 7 (frames * elementWords)
    // A composite list's tag: the element count where a struct pointer has its offset.
    words[tag] <- structPointer frames canData.DataWords canData.PointerCount

    for i in 0 .. frames - 1 do
        let element = tag + 1 + i * elementWords
        put element layout.AddressByte 4 0x1A0UL
        let dat = element + canData.DataWords + layout.DatPointer
        words[dat] <- listPointer dat blob 2 blobBytes

    for i in 0 .. blobBytes - 1 do
        put blob i 1 (uint64 (i % 251))

    let message = Array.zeroCreate<byte>(8 + words.Length * 8)
    BinaryPrimitives.WriteUInt32LittleEndian(message.AsSpan(0, 4), 0u)
    BinaryPrimitives.WriteUInt32LittleEndian(message.AsSpan(4, 4), uint32 words.Length)

    for i in 0 .. words.Length - 1 do
        BinaryPrimitives.WriteUInt64LittleEndian(message.AsSpan(8 + i * 8, 8), words[i])

    message

/// Runs the built `cts` with `args` and samples its peak resident set (VmHWM) until it exits.
/// Returns the exit code, standard error and the peak in MiB.
let private peakOf (args: string list) : int * string * float =
    let info =
        ProcessStartInfo(
            "dotnet",
            Path.Combine(TestEnv.projectOutput "CtsLite.Cli", "cts.dll") :: args,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false
        )

    use proc = Process.Start info
    let errors = proc.StandardError.ReadToEndAsync()
    // Standard output is read and dropped: `log dump` writes a line per event.
    let output = proc.StandardOutput.BaseStream.CopyToAsync Stream.Null
    let mutable peak = 0.0
    let deadline = DateTime.UtcNow.AddMinutes 3.0

    while not proc.HasExited && DateTime.UtcNow < deadline do
        try
            for line in File.ReadLines $"/proc/{proc.Id}/status" do
                if line.StartsWith "VmHWM:" then
                    let kb = line.Substring(6).Trim().Split(' ')[0]
                    peak <- max peak (float (int64 kb) / 1024.0)
        with :? IOException ->
            // Exited between the check and the read.
            ()

        Threading.Thread.Sleep 10

    if not proc.HasExited then
        proc.Kill true
        failtestf "cts %A still running after 3 minutes" args

    output.Wait()
    proc.ExitCode, errors.Result, peak

/// The bound the issue states for the analyzer and `log dump` on the amplified log; a run of the
/// analyzer on a real one-minute rlog peaks near 90 MiB on the development machine.
let private boundMiB = 300.0

let all =
    testList "memory" [
        test "a log whose 100,000 CAN payloads point at one 64 KiB blob costs no more than a small log" {
            let dir = TestEnv.tempDir "amplified"
            let file = Path.Combine(dir, "rlog")
            File.WriteAllBytes(file, amplified 100_000 65_536)
            let out = Path.Combine(dir, "out")

            let code, errors, peak =
                peakOf [ "run"; "cruise-control-analyzer"; file; "--local"; "--out-dir"; out ]

            Expect.stringContains errors "65536 bytes (CAN FD carries at most 64)" "the analyzer names the damage"
            // The event itself was read: its CAN list is damage, a warning, and the run answers.
            Expect.equal code 0 "the analyzer answers"
            Expect.isLessThan peak boundMiB $"the analyzer peaked at {peak:F0} MiB"

            // Dumped, the event is traversed until the 64 MiB limit stops it: 230 MB of JSON text
            // that once sat in memory (535 MiB peak) and now waits on disk, then is dropped.
            let code, errors, peak = peakOf [ "log"; "dump"; file ]
            Expect.stringContains errors "traversal limit" "log dump names the damage"
            // The event was read, so its damage is a warning (an error under --strict).
            Expect.equal code 0 "a warning"
            Expect.isLessThan peak boundMiB $"log dump peaked at {peak:F0} MiB"

            // Written whole or not at all: no part of the event's line reaches the output.
            use out = new MemoryStream()
            use err = new StringWriter()
            Program.run [| "log"; "dump"; file |] out err |> ignore
            Expect.equal out.Length 0L "nothing of the damaged event"
            Expect.isEmpty (Directory.GetFiles(Path.GetTempPath(), "cts-event-*")) "its spill file is gone"
        }
        test "the analyzer's memory does not grow with the drive: 20 joined segments" {
            // 20 copies of the synthetic segment, `cat`-joined (zstd frames concatenate): 4 M CAN
            // frames and 60 marker windows. Keeping every frame peaked near 400 MiB here.
            let dir = TestEnv.tempDir "drive"
            let file = Path.Combine(dir, "drive.rlog.zst")

            let segment =
                File.ReadAllBytes(Path.Combine(TestEnv.sharedDir (), "data", "rlogs", "synthetic", "default.rlog.zst"))

            do
                use out = File.Create file

                for _ in 1..20 do
                    out.Write segment

            let code, errors, peak =
                peakOf [
                    "run"
                    "cruise-control-analyzer"
                    file
                    "--local"
                    "--out-dir"
                    Path.Combine(dir, "out")
                ]

            Expect.equal code 0 $"analysed: {errors}"
            Expect.isLessThan peak 200.0 $"the analyzer peaked at {peak:F0} MiB on 20 minutes"
            let summary = File.ReadAllText(Path.Combine(dir, "out", "summary.json"))
            Expect.stringContains summary "time steps back" "each join is reported"
            Directory.Delete(dir, true)
        }
        test "100,000 valid payloads sharing one 64-byte blob are read and stay within the bound" {
            let dir = TestEnv.tempDir "amplified"
            let file = Path.Combine(dir, "rlog")
            File.WriteAllBytes(file, amplified 100_000 64)

            let code, errors, peak = peakOf [ "log"; "can"; file ]
            Expect.equal code 0 $"read: {errors}"
            Expect.isLessThan peak boundMiB $"log can peaked at {peak:F0} MiB"

            let code, errors, peak = peakOf [ "log"; "dump"; file ]
            Expect.equal code 0 $"dumped: {errors}"
            Expect.isLessThan peak boundMiB $"log dump peaked at {peak:F0} MiB"

            // Its 24 MB line passed through the disk on the way: still capnp's bytes exactly.
            use out = new MemoryStream()
            use err = new StringWriter()
            Expect.equal (Program.run [| "log"; "dump"; file |] out err) 0 "dumped in process"
            let schemaDir = Path.Combine(TestEnv.sharedDir (), "reference", "cereal")

            use capnp = Process.Start(LogTests.capnpConvert schemaDir)
            let errors = capnp.StandardError.ReadToEndAsync()
            use expected = new MemoryStream()
            let reading = capnp.StandardOutput.BaseStream.CopyToAsync expected
            capnp.StandardInput.BaseStream.Write(File.ReadAllBytes file)
            capnp.StandardInput.Close()
            reading.Wait()
            capnp.WaitForExit()
            Expect.equal capnp.ExitCode 0 $"capnp convert: {errors.Result}"
            Expect.isGreaterThan out.Length (4L <<< 20) "longer than what is kept in memory"
            Expect.isTrue (out.ToArray().AsSpan().SequenceEqual(expected.ToArray())) "equal to capnp convert"
        }
    ]
