/// Whole processes as a user times them: the installed `cts` against the native tools (`zstd -dc`,
/// `bzip2 -dc`) on the same file, in alternating pairs, medians of each.
module CtsLite.Bench.VsNative

open System
open System.Diagnostics
open System.IO
open System.Threading

/// One finished process: wall seconds and peak resident set (MiB).
type Sample = { Seconds: float; PeakMiB: float }

/// Runs `command` through `sh -c` (so the shell sends its output to /dev/null, as a user's
/// `> /dev/null` does; a failure shows in the exit code) and samples its peak resident set until it exits.
let private time (command: string) : Sample =
    let info =
        ProcessStartInfo("sh", [ "-c"; $"exec {command} > /dev/null 2> /dev/null" ], UseShellExecute = false)

    let started = Stopwatch.GetTimestamp()
    use proc = Process.Start info
    let mutable peak = 0.0

    // `exec`: the shell becomes the command, so its /proc entry is the command's own.
    while not proc.HasExited do
        try
            for line in File.ReadLines $"/proc/{proc.Id}/status" do
                if line.StartsWith "VmHWM:" then
                    peak <- max peak (float (int64 (line.Substring(6).Trim().Split(' ')[0])) / 1024.0)
        with :? IOException ->
            ()

        Thread.Sleep 2

    proc.WaitForExit()
    let seconds = Stopwatch.GetElapsedTime(started).TotalSeconds

    if proc.ExitCode <> 0 then
        failwith $"`{command}` exited {proc.ExitCode}"

    { Seconds = seconds; PeakMiB = peak }

let private median (xs: float list) =
    let sorted = List.sort xs
    let n = sorted.Length

    if n % 2 = 1 then
        sorted[n / 2]
    else
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0

/// `pairs` alternating runs of `native` and `ours` (the order flips each pair, so neither always
/// runs on a warm cache); the medians of each and of the per-pair ratio.
let private paired (pairs: int) (native: string) (ours: string) =
    // One run of each first, uncounted: the file is in the page cache for both.
    time native |> ignore
    time ours |> ignore

    let samples = [
        for i in 1..pairs ->
            if i % 2 = 0 then
                let n = time native
                let o = time ours
                n, o
            else
                let o = time ours
                let n = time native
                n, o
    ]

    let n = samples |> List.map (fst >> _.Seconds) |> median
    let o = samples |> List.map (snd >> _.Seconds) |> median
    let ratio = samples |> List.map (fun (n, o) -> o.Seconds / n.Seconds) |> median
    let peak = samples |> List.map (snd >> _.PeakMiB) |> List.max
    n, o, ratio, peak

/// The synthetic Subaru segment's decompressed bytes `minutes` times over (18.8 MB, 72,000 events
/// and 195,000 CAN frames a minute): a drive of that length (time jumps back at each join, as
/// `cat`-joined segments do). Built once
/// per length into `cache` as `.rlog.zst` (zstd -3, as openpilot writes) and `.rlog.bz2`.
let private longLog (shared: string) (cache: string) (minutes: int) =
    Directory.CreateDirectory cache |> ignore
    let zst = Path.Combine(cache, $"subaru-{minutes}min.rlog.zst")
    let bz2 = Path.Combine(cache, $"subaru-{minutes}min.rlog.bz2")

    if not (File.Exists zst && File.Exists bz2) then
        let source = Path.Combine(shared, "data", "rlogs", "synthetic", "default.rlog.zst")

        let raw = Path.Combine(cache, $"subaru-{minutes}min.rlog")

        do
            use one = new MemoryStream()

            do
                use z = new ZstdSharp.DecompressionStream(File.OpenRead source)
                z.CopyTo one

            use out = File.Create raw

            for _ in 1..minutes do
                out.Write(one.GetBuffer(), 0, int one.Length)

        eprintfn "building %s and %s (once)…" zst bz2

        for command in [ $"zstd -q -3 -f -o {zst} {raw}"; $"bzip2 -9 -k -c {raw} > {bz2}" ] do
            use p = Process.Start("sh", [ "-c"; command ])
            p.WaitForExit()

            if p.ExitCode <> 0 then
                failwith $"`{command}` failed"

        File.Delete raw

    zst, bz2

/// A 60-segment route (an hour's drive as a device uploads it): the shared route's three segments
/// copied round, `<cache>/route60/<dongle>|<time>--N/rlog.zst`. Built once; returns the route
/// address and a glob of its files for the native tool.
let private longRoute (shared: string) (cache: string) =
    let name = "5ca1ab1e5ca1ab1e|2025-01-16--07-45-12"
    let source = Path.Combine(shared, "data", "rlogs", "synthetic", "route")
    let folder = Path.Combine(cache, "route60")

    for n in 0..59 do
        let dir = Path.Combine(folder, $"{name}--{n}")
        let file = Path.Combine(dir, "rlog.zst")

        if not (File.Exists file) then
            Directory.CreateDirectory dir |> ignore
            File.Copy(Path.Combine(source, $"{name}--{n % 3}", "rlog.zst"), file)

    $"'{folder}/{name}'", $"'{folder}'/*/rlog.zst"

/// Prints the whole-process table: `cts` (the installed tool at `cts`) against the native tools.
let run (shared: string) (cts: string) (quick: bool) =
    let pairs = if quick then 3 else 7
    let cache = Path.Combine(Path.GetTempPath(), "ctslite-bench")
    let zst, bz2 = longLog shared cache 20

    let segment =
        Path.Combine(
            shared,
            "data",
            "rlogs",
            "derived",
            "comma2k19_rav4_b0c9d2329ad1606b_2018-08-02--08-34-47--40.rlog.zst"
        )

    let segmentBz2 = Path.ChangeExtension(segment, ".bz2")

    printfn ""
    printfn "Whole processes, %d alternating pairs, medians (the installed `cts` tool: %s)" pairs cts
    printfn ""
    printfn "| command | native tool | cts | cts ÷ native (median of pairs) | cts peak RSS |"
    printfn "|---|---:|---:|---:|---:|"

    let row (name: string) (native: string) (ours: string) =
        let n, o, ratio, peak = paired pairs native ours
        printfn "| %s | %.3f s | %.3f s | %.2f× | %.0f MiB |" name n o ratio peak

    row "20-min zstd log, `cts log info --json`" $"zstd -dc {zst}" $"{cts} log info --json {zst}"

    row
        "20-min zstd log, `cts log --decompressor managed info --json`"
        $"zstd -dc {zst}"
        $"{cts} log --decompressor managed info --json {zst}"

    row "20-min bzip2 log, `cts log info --json`" $"bzip2 -dc {bz2}" $"{cts} log info --json {bz2}"
    row "1-min zstd segment (comma2k19), `cts log info --json`" $"zstd -dc {segment}" $"{cts} log info --json {segment}"

    row
        "1-min bzip2 segment (comma2k19), `cts log info --json`"
        $"bzip2 -dc {segmentBz2}"
        $"{cts} log info --json {segmentBz2}"
    // The same counts as tables for people (Spectre.Console's share of the start-up).
    row "1-min zstd segment (comma2k19), `cts log info` (tables)" $"zstd -dc {segment}" $"{cts} log info {segment}"
    row "`cts version` (against `zstd --version`)" "zstd --version" $"{cts} version"
    row "`cts --version` (against `zstd --version`)" "zstd --version" $"{cts} --version"

    // The analyzer on the same logs (its output folder reused: artifacts are replaced whole).
    let out = Path.Combine(cache, "analyzer-out")

    let synthetic =
        Path.Combine(shared, "data", "rlogs", "synthetic", "default.rlog.zst")

    row
        "1-min zstd segment (synthetic Subaru), `cts run --local cruise-control-analyzer`"
        $"zstd -dc {synthetic}"
        $"{cts} run --local cruise-control-analyzer {synthetic} --out-dir {out}"

    row
        "20-min zstd log, `cts run --local cruise-control-analyzer`"
        $"zstd -dc {zst}"
        $"{cts} run --local cruise-control-analyzer {zst} --out-dir {out}"

    // The issue's hour: memory must stay flat in the number of segments too.
    let route, routeFiles = longRoute shared cache

    row "60-segment route, `cts log info --json`" $"zstd -dc {routeFiles}" $"{cts} log info --json {route}"

    row
        "60-segment route, `cts run --local cruise-control-analyzer`"
        $"zstd -dc {routeFiles}"
        $"{cts} run --local cruise-control-analyzer {route} --out-dir {out}"
