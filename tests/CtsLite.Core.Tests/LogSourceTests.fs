/// `LogSource`: several files as one stream, with the one damage rule every reader shares.
module CtsLite.Core.Tests.LogSourceTests

open System
open System.IO
open System.Threading
open Expecto
open CtsLite.Capnp
open CtsLite.Logs
open CtsLite.Tests

let private routeName = "5ca1ab1e5ca1ab1e|2025-01-16--07-45-12"

let private segments () = [
    for n in 0..2 ->
        Path.Combine(TestEnv.sharedDir (), "data", "rlogs", "synthetic", "route", $"{routeName}--{n}", "rlog.zst")
]

/// Events of one file read alone.
let private count (file: string) =
    match LogReader.Open(file, ReaderOptions.Default) with
    | Ok reader ->
        use reader = reader
        let mutable n = 0L

        while reader.Next() do
            n <- n + 1L

        n
    | Error e -> failtest e

/// The first segment cut in half: its zstd stream ends early (damage in the middle of the file).
let private cutSegment () =
    let bytes = File.ReadAllBytes (segments ()).[0]
    let file = Path.Combine(TestEnv.tempDir "source", "cut.rlog.zst")
    File.WriteAllBytes(file, Array.sub bytes 0 (bytes.Length / 2))
    file

let private iterAll (options: LogSourceOptions) (files: string list) =
    use source = new LogSource(files, options)
    source.Iter(fun _ -> true)

/// `f ()`, failed (not hung) when it takes more than 20 s: a blocked open would hang the suite.
let private withinSeconds (what: string) (f: unit -> 'T) : 'T =
    let work = Tasks.Task.Run f

    if not (work.Wait(TimeSpan.FromSeconds 20.0)) then
        failtest $"{what}: still blocked after 20 s"

    work.Result

let all =
    testList "log source" [
        test "files are one stream: every event of each, in order, by Iter and by Next alike" {
            let files = segments ()
            let expected = files |> List.sumBy count

            match iterAll (LogSourceOptions.Of ReaderOptions.Default) files with
            | Ok reading ->
                Expect.equal reading.Events expected "every event"
                Expect.isEmpty reading.Warnings "no damage"
            | Error e -> failtest (DecodeError.describe e)

            use source = new LogSource(files, LogSourceOptions.Of ReaderOptions.Default)
            let mutable pulled = 0L
            let mutable sources = []

            while source.Next() do
                pulled <- pulled + 1L

                if not (List.contains source.Reader.Source sources) then
                    sources <- sources @ [ source.Reader.Source ]

            Expect.equal pulled expected "Next gives the same events"
            Expect.equal sources files "in file order"
            Expect.isNone source.Error "no error"
        }
        test "damage ends its file with a warning and the next file is read; under Strict it is the error" {
            let cut = cutSegment ()
            let rest = segments () |> List.tail
            let files = cut :: rest

            match iterAll (LogSourceOptions.Of ReaderOptions.Default) files with
            | Ok reading ->
                Expect.equal reading.Warnings.Length 1 "one warning"
                Expect.stringContains reading.Warnings.Head "cut.rlog.zst" "names the file"
                Expect.isGreaterThan reading.Events (rest |> List.sumBy count) "events before the damage kept"
                Expect.isSome reading.FirstDamage "the damage is known"
            | Error e -> failtest (DecodeError.describe e)

            match
                iterAll
                    (LogSourceOptions.Of {
                        ReaderOptions.Default with
                            Strict = true
                    })
                    files
            with
            | Error e -> Expect.equal e.Source cut "strict: the damage of the first file"
            | Ok r -> failtestf "strict accepted damage: %A" r.Warnings
        }
        test "a file with no event is damage: a warning in a route, the error when nothing else is read" {
            let dir = TestEnv.tempDir "source"
            let empty = Path.Combine(dir, "empty.rlog.zst")
            File.WriteAllBytes(empty, [||])
            // A zstd frame header and then garbage: the magic is right, nothing decodes.
            let garbage = Path.Combine(dir, "garbage.rlog.zst")
            File.WriteAllBytes(garbage, Array.append [| 0x28uy; 0xB5uy; 0x2Fuy; 0xFDuy |] (Array.create 64 0xEEuy))
            let first, rest = (segments ()).[0], (segments ()).[1..]

            match iterAll (LogSourceOptions.Of ReaderOptions.Default) (first :: empty :: rest) with
            | Ok reading ->
                Expect.equal reading.Events (segments () |> List.sumBy count) "the other segments are read"

                match reading.Warnings with
                | [ w ] ->
                    Expect.stringContains w "empty.rlog.zst" "names the file"
                    Expect.stringContains w "no event" "says why"
                | ws -> failtestf "expected one warning: %A" ws
            | Error e -> failtest (DecodeError.describe e)

            let strict =
                LogSourceOptions.Of {
                    ReaderOptions.Default with
                        Strict = true
                }

            match iterAll strict (first :: empty :: rest) with
            | Error e -> Expect.equal (e.Source, e.Reason) (empty, DecodeReason.NoEvents) "strict: the empty segment"
            | Ok _ -> failtest "strict accepted an empty segment"

            for file in [ empty; garbage ] do
                for options in [ LogSourceOptions.Of ReaderOptions.Default; strict ] do
                    use source = new LogSource([ file ], options)

                    match source.Iter(fun _ -> true) with
                    | Error e ->
                        Expect.equal e.Source file "the file is named"
                        Expect.isEmpty source.Warnings "the damage is the error, not also a warning"
                    | Ok r -> failtestf "%s gave no event and was accepted: %A" file r

                    Expect.isFalse (source.Next()) "nothing to pull"
                    Expect.isSome source.Error "Next agrees"
        }
        test "a file that cannot be opened ends the reading naming it" {
            let missing = Path.Combine(TestEnv.tempDir "source", "missing.rlog.zst")

            match iterAll (LogSourceOptions.Of ReaderOptions.Default) [ (segments ()).[0]; missing ] with
            | Error {
                        Source = source
                        Reason = DecodeReason.Unreadable _
                    } -> Expect.equal source missing "the file"
            | other -> failtestf "%A" other
        }
        test "a visitor that returns false stops the reading" {
            use source = new LogSource(segments (), LogSourceOptions.Of ReaderOptions.Default)

            match source.Iter(fun _ -> source.Events < 10L) with
            | Ok reading -> Expect.equal reading.Events 10L "ten events"
            | Error e -> failtest (DecodeError.describe e)
        }
        test "files are classified by their first bytes, never by their name" {
            let head (path: string) =
                let bytes = File.ReadAllBytes path
                ReadOnlySpan(bytes, 0, min 512 bytes.Length).ToArray()

            let kind (bytes: byte array) = FileKind.classify (ReadOnlySpan bytes)
            Expect.equal (kind (head (segments ()).[0])) (Some FileKind.Rlog) "zstd"
            Expect.equal (kind (head (TestEnv.comma2k19 "bz2"))) (Some FileKind.Rlog) "bzip2"
            Expect.equal (kind [| 0uy; 0uy; 0uy; 0uy; 5uy; 0uy; 0uy; 0uy |]) (Some FileKind.Rlog) "raw framing"

            let dbc = TestEnv.generatedDbc "subaru_global_2017_generated.dbc"

            Expect.equal (kind (head dbc)) (Some FileKind.Dbc) "DBC"
            Expect.equal (kind "time_s,address\n1.0,0x146\n"B) (Some FileKind.Csv) "CSV"
            Expect.equal (kind "just some words\n"B) None "plain text"
            Expect.equal (kind [| 0x89uy; 0x50uy; 0x4Euy; 0x47uy; 13uy; 10uy; 26uy; 10uy |]) None "a PNG"
            Expect.equal (kind [||]) None "empty"
            Expect.equal (FileKind.name FileKind.Rlog) "rlog" "wire name"
        }
        test "progress rises to 1; a cancelled token ends the reading" {
            let seen = ResizeArray<float>()

            let options = {
                LogSourceOptions.Of ReaderOptions.Default with
                    Progress = seen.Add
            }

            iterAll options (segments ()) |> ignore
            Expect.isNonEmpty seen "reported"
            Expect.equal (Seq.last seen) 1.0 "ends at 1"
            Expect.isTrue (Seq.pairwise seen |> Seq.forall (fun (a, b) -> b >= a)) "never goes back"
            use cts = new CancellationTokenSource()
            cts.Cancel()

            Expect.throwsT<OperationCanceledException>
                (fun () ->
                    iterAll
                        {
                            LogSourceOptions.Of ReaderOptions.Default with
                                Cancellation = cts.Token
                        }
                        (segments ())
                    |> ignore)
                "canceled"
        }
        test "a FIFO, a device or a folder is refused before it is opened, naming what it is" {
            let pipe = TestEnv.fifo (TestEnv.tempDir "fifo") "rlog.zst"

            Expect.equal (CtsLite.Io.regularFile pipe) (Error "not a regular file: a named pipe (FIFO)") "a FIFO"

            Expect.equal
                (CtsLite.Io.regularFile "/dev/null")
                (Error "not a regular file: a character device")
                "a device"

            Expect.equal (CtsLite.Io.regularFile (Path.GetTempPath())) (Error "not a regular file: a folder") "a folder"
            Expect.equal (CtsLite.Io.regularFile (segments ()).[0]) (Ok()) "a log file"
            Expect.equal (CtsLite.Io.regularFile (Path.Combine(pipe + ".missing"))) (Ok()) "missing: the open says so"

            match withinSeconds "Route.resolve" (fun () -> Route.resolve pipe) with
            | Error e -> Expect.stringContains e "named pipe (FIFO)" "the path input is refused"
            | Ok files -> failtestf "accepted %A" files

            // The same file given among others (as uploads are) ends the reading at its turn.
            let files = [ (segments ()).[0]; pipe ]

            match withinSeconds "LogSource" (fun () -> iterAll (LogSourceOptions.Of ReaderOptions.Default) files) with
            | Error {
                        Source = source
                        Reason = DecodeReason.Unreadable reason
                    } ->
                Expect.equal source pipe "names the FIFO"
                Expect.stringContains reason "not a regular file: a named pipe (FIFO)" "says what it is"
            | other -> failtestf "%A" other

            match withinSeconds "LogReader" (fun () -> LogReader.Open(pipe, ReaderOptions.Default)) with
            | Error e -> Expect.stringContains e "named pipe" "the reader alone refuses it too"
            | Ok _ -> failtest "opened"

            Expect.isNone (withinSeconds "CanText.sniff" (fun () -> CanText.sniff pipe)) "not sniffed as text"
        }
    ]
