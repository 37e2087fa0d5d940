module CtsLite.Cli.Tests.All

open Expecto

let all =
    testList
        "Cli"
        (Tests.cliTests
         @ [
             DbcCommandTests.all
             RunTests.all
             MonTests.all
             RunsTests.all
             CommandLineTests.all
             TerminalTests.all
             PackageTests.all
             MemoryTests.all
         ])
