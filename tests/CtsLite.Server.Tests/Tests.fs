module CtsLite.Server.Tests.Tests

open Expecto

let all =
    testList "Server" [
        HttpCoreTests.all
        ConfigTests.all
        StoreTests.all
        EndpointTests.all
        RunTests.all
        EngineTests.all
        RunTests.authTests
        RunTests.openApiTests
        LimitsTests.all
        ProcessTests.all
    ]
