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
        AuthApiTests.authTests
        AuthApiTests.openApiTests
        LimitsTests.all
        ProcessTests.all
        HostileTests.all
        FuzzTests.all
        MonitorApiTests.all
    ]
