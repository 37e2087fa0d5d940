module CtsLite.Tests.Main

open System
open System.IO
open System.Text
open Expecto
open Expecto.Impl

/// The plain closing line CI reads, written as raw bytes so nothing Expecto left pending on
/// Console.Out (colour resets) can come after it.
let private writeSummary (summary: TestRunSummary) =
    let failed = summary.failed.Length + summary.errored.Length

    let line =
        $"{summary.passed.Length} passed, {failed} failed, {summary.ignored.Length} skipped\n"

    Console.Out.Flush()
    use stdout = Console.OpenStandardOutput()
    let bytes = Encoding.UTF8.GetBytes("\n" + line)
    stdout.Write(bytes, 0, bytes.Length)
    stdout.Flush()

/// The C# facade's tests: every public static method returning Task of the public classes of
/// CtsLite.CSharp.Tests (a C# project, so it has no Expecto of its own).
let private csharpTests =
    let assembly = typeof<CtsLite.CSharp.Tests.FacadeTests>.Assembly

    testList "C# facade" [
        for t in assembly.GetExportedTypes() do
            for m in t.GetMethods(Reflection.BindingFlags.Public ||| Reflection.BindingFlags.Static) do
                if
                    m.ReturnType = typeof<System.Threading.Tasks.Task>
                    && m.GetParameters().Length = 0
                then
                    testCaseTask $"{t.Name}.{m.Name}" (fun () -> task {
                        do! (m.Invoke(null, [||]) :?> System.Threading.Tasks.Task)
                    })
    ]

let allTests =
    testList "CtsLite" [
        CtsLite.Core.Tests.Tests.all
        CtsLite.Server.Tests.Tests.all
        CtsLite.Cli.Tests.All.all
        csharpTests
        CtsLite.Tests.SurfaceTests.all
    ]

/// Passes text on without ANSI escape sequences (colours, cursor moves): Expecto writes some
/// even with colours off, and a redirected log should hold plain lines.
type private PlainWriter(inner: TextWriter) =
    inherit TextWriter()
    // 0: text, 1: after ESC, 2: inside a CSI sequence (ESC [ ... final byte).
    let mutable state = 0

    override _.Encoding = inner.Encoding

    override _.Write(c: char) =
        match state with
        | 0 when c = '\u001b' -> state <- 1
        | 0 -> inner.Write c
        | 1 when c = '[' -> state <- 2
        | 1 -> state <- 0
        | _ when c >= '@' && c <= '~' -> state <- 0
        | _ -> ()

    override this.Write(text: string) =
        if not (isNull text) then
            if state = 0 && text.IndexOf '\u001b' < 0 then
                inner.Write text
            else
                for c in text do
                    this.Write c

    override _.Flush() = inner.Flush()

/// One line per test list as its last test ends (`tests: CtsLite.Core.capnp: 35 passed, 0 failed,
/// 0 skipped in 4.2 s`), so a long run shows where it is. Lists are the first three levels of
/// the tree; the time is the wall time from the list's first test start to its last end.
type private ListProgress(tests: Test) =
    let listOf (name: string list) =
        String.Join(".", name |> List.truncate 3)

    let flat = Test.toTestCodeList tests

    let totals = flat |> List.countBy (fun t -> listOf t.name) |> dict

    let lists =
        flat |> List.map (fun t -> String.Join(".", t.name), listOf t.name) |> dict

    let state = Collections.Generic.Dictionary<string, int * int * int * DateTime>()
    let gate = obj ()

    member _.Started(name: string) =
        lock gate (fun () ->
            match lists.TryGetValue name with
            | true, list when not (state.ContainsKey list) -> state[list] <- (0, 0, 0, DateTime.UtcNow)
            | _ -> ())

    member _.Ended (name: string) (outcome: int) =
        lock gate (fun () ->
            match lists.TryGetValue name with
            | true, list ->
                let passed, failed, skipped, started =
                    match state.TryGetValue list with
                    | true, s -> s
                    | false, _ -> (0, 0, 0, DateTime.UtcNow)

                let next =
                    match outcome with
                    | 0 -> (passed + 1, failed, skipped, started)
                    | 1 -> (passed, failed + 1, skipped, started)
                    | _ -> (passed, failed, skipped + 1, started)

                state[list] <- next
                let p, f, k, _ = next

                if p + f + k = totals[list] then
                    let seconds = (DateTime.UtcNow - started).TotalSeconds
                    eprintfn "tests: %s: %d passed, %d failed, %d skipped in %.1f s" list p f k seconds
            | false, _ -> ())

    /// `inner` with the progress lines added.
    member this.Wrap(inner: TestPrinters) : TestPrinters = {
        inner with
            beforeEach =
                fun name skipped ->
                    this.Started name
                    inner.beforeEach name skipped
            passed =
                fun name took ->
                    this.Ended name 0
                    inner.passed name took
            failed =
                fun name message took ->
                    this.Ended name 1
                    inner.failed name message took
            exn =
                fun name error took ->
                    this.Ended name 1
                    inner.exn name error took
            ignored =
                fun name message ->
                    this.Ended name 2
                    inner.ignored name message
    }

[<EntryPoint>]
let main argv =
    if not (Directory.Exists(Path.Combine(TestEnv.sharedDirCandidate, "data", "rlogs"))) then
        eprintfn "%s" TestEnv.sharedDirMissingMessage
        Console.Out.WriteLine "0 passed, 1 failed"
        1
    else
        let handler = SummaryHandler writeSummary
        let plain = Console.IsOutputRedirected || Console.IsErrorRedirected

        if Console.IsOutputRedirected then
            Console.SetOut(new PlainWriter(Console.Out))

        if Console.IsErrorRedirected then
            Console.SetError(new PlainWriter(Console.Error))

        let progress = ListProgress allTests

        // A redirected log (CI) gets no colour codes and no spinner: plain lines only.
        let plainArgs =
            if plain then
                [ CLIArguments.No_Spinner; CLIArguments.Colours 0 ]
            else
                []

        runTestsWithCLIArgs
            // The printer first: Append_Summary_Handler wraps the printer in place when it is set,
            // so a printer given after it would drop the closing line CI reads.
            ([ CLIArguments.Printer(progress.Wrap defaultConfig.printer) ]
             @ plainArgs
             @ [ CLIArguments.Append_Summary_Handler handler ])
            argv
            allTests
