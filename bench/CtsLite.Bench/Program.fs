/// CtsLite benchmarks: `dotnet fsi build.fsx bench`. Each benchmark prints throughput and
/// allocations; the figures go into docs/benchmarks.md. Benchmarks measure, tests check.
module CtsLite.Bench.Program

open System
open System.Diagnostics
open System.IO
open Microsoft.AspNetCore.Http
open Microsoft.Extensions.DependencyInjection
open CtsLite.Server
open CtsLite.Server.Http

type Result = {
    Name: string
    Operations: int64
    Seconds: float
    BytesAllocated: int64
}

let private measure (name: string) (iterations: int) (operation: unit -> unit) : Result =
    for _ in 1 .. min 10_000 iterations do
        operation ()

    GC.Collect()
    GC.WaitForPendingFinalizers()
    let allocatedBefore = GC.GetAllocatedBytesForCurrentThread()
    let started = Stopwatch.GetTimestamp()

    for _ in 1..iterations do
        operation ()

    let seconds = Stopwatch.GetElapsedTime(started).TotalSeconds

    {
        Name = name
        Operations = int64 iterations
        Seconds = seconds
        BytesAllocated = GC.GetAllocatedBytesForCurrentThread() - allocatedBefore
    }

let private report (r: Result) =
    let perOp = r.Seconds * 1e9 / float r.Operations
    let opsPerSecond = float r.Operations / r.Seconds
    let bytesPerOp = float r.BytesAllocated / float r.Operations
    printfn "| %-40s | %12.0f | %10.1f | %10.1f |" r.Name opsPerSecond perOp bytesPerOp

/// The `/v1` pipeline dispatching in process: routing, handler and JSON body, no network.
let private pipelineBenchmarks (iterations: int) =
    let dataDir = Path.Combine(Path.GetTempPath(), $"ctslite-bench-{Guid.NewGuid():N}")
    Directory.CreateDirectory dataDir |> ignore

    use store =
        match SqliteStore.open' dataDir with
        | Ok s -> s
        | Error e -> failwith (StoreError.describe e)

    let context =
        Startup.createContext
            {
                Config.defaults () with
                    DataDir = dataDir
            }
            store
            TimeProvider.System

    let services = ServiceCollection()
    Startup.configureServices context services
    use provider = services.BuildServiceProvider()
    let pipeline = Routes.pipeline Routes.endpoints earlyReturn

    let request (method: string) (path: string) () =
        let ctx = DefaultHttpContext(RequestServices = provider)
        ctx.Request.Method <- method
        ctx.Request.Path <- PathString path
        ctx.Response.Body <- Stream.Null
        (pipeline ctx).GetAwaiter().GetResult() |> ignore

    [
        measure "GET /v1/version (route + JSON)" iterations (request "GET" "/v1/version")
        measure "GET /v1/capabilities (route + JSON)" iterations (request "GET" "/v1/capabilities")
        measure "GET /v1/unknown (404 problem)" iterations (request "GET" "/v1/unknown")
        measure "POST /v1/health (405 problem)" iterations (request "POST" "/v1/health")
    ]

[<EntryPoint>]
let main argv =
    let quick = argv |> Array.contains "--quick"
    let iterations = if quick then 20_000 else 500_000

    printfn
        "CtsLite benchmarks (%s, .NET %s, %d cores, %s)"
        (if quick then "quick" else "full")
        (string Environment.Version)
        Environment.ProcessorCount
        (Runtime.InteropServices.RuntimeInformation.OSDescription)

    printfn ""
    printfn "| %-40s | %12s | %10s | %10s |" "benchmark" "ops/s" "ns/op" "B/op"
    printfn "|%s|%s|%s|%s|" (String('-', 42)) (String('-', 14)) (String('-', 12)) (String('-', 12))

    for r in pipelineBenchmarks iterations do
        report r

    0
