module CtsLite.Cli.Tests.All

open Expecto

let all =
    testList "Cli" (Tests.cliTests @ [ LogTests.all; RunTests.all; PackageTests.all ])
