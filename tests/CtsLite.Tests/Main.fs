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
    ]

[<EntryPoint>]
let main argv =
    if not (Directory.Exists(Path.Combine(TestEnv.sharedDirCandidate, "data", "rlogs"))) then
        eprintfn "%s" TestEnv.sharedDirMissingMessage
        Console.Out.WriteLine "0 passed, 1 failed"
        1
    else
        let handler = SummaryHandler writeSummary
        runTestsWithCLIArgs [ CLIArguments.Append_Summary_Handler handler ] argv allTests
