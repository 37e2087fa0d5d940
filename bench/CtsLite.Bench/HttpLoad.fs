/// The loopback load benchmark: the real Kestrel host, 64 concurrent clients, health,
/// capabilities and run status; requests/s, latency percentiles and errors per endpoint.
module CtsLite.Bench.HttpLoad

open System
open System.Diagnostics
open System.IO
open System.Net.Http
open System.Text
open System.Text.Json
open System.Threading
open System.Threading.Tasks
open Microsoft.Extensions.Hosting
open CtsLite.Server

type private Sample = {
    Endpoint: int
    Millis: float
    Ok: bool
}

let private percentile (sorted: float array) (p: float) =
    if sorted.Length = 0 then
        nan
    else
        sorted[min (sorted.Length - 1) (int (Math.Ceiling(p / 100.0 * float sorted.Length)) - 1 |> max 0)]

/// Runs `clients` closed-loop clients for `duration` (after a warm-up) and prints the table.
let run (shared: string) (clients: int) (duration: TimeSpan) : unit =
    let dataDir = Path.Combine(Path.GetTempPath(), $"ctslite-load-{Guid.NewGuid():N}")
    Directory.CreateDirectory dataDir |> ignore

    use store =
        match SqliteStore.openIn dataDir with
        | Ok s -> s
        | Error e -> failwith (StoreError.describe e)

    let config = {
        Config.defaults () with
            DataDir = dataDir
            ApiPort = 0
            // The limiter would answer most of the load with 429: measured off, as the issue asks.
            RateLimitPerMinute = 0
            InputRoots = [ Path.Combine(shared, "data", "rlogs") ]
            LogLevel = Microsoft.Extensions.Logging.LogLevel.Warning
    }

    use host =
        Startup.buildHost (Startup.createContext config store TimeProvider.System) false

    host.Start()
    let baseUrl = (Startup.addresses host).Head

    use handler =
        new SocketsHttpHandler(MaxConnectionsPerServer = clients, PooledConnectionLifetime = TimeSpan.FromMinutes 10.0)

    use client = new HttpClient(handler, BaseAddress = Uri baseUrl)

    // One finished run whose status the clients read.
    let runUrl =
        let body =
            """{"tool_id":"log-summary","params":{},"input":{"type":"path","value":"synthetic/default.rlog.zst"}}"""

        use content = new StringContent(body, Encoding.UTF8, "application/json")
        let response = client.PostAsync("/v1/runs", content).Result

        let id =
            JsonDocument
                .Parse(response.Content.ReadAsStringAsync().Result)
                .RootElement.GetProperty("run_id")
                .GetString()

        let url = $"/v1/runs/{id}"
        let mutable status = ""

        while status <> "completed" do
            Thread.Sleep 50

            status <-
                JsonDocument.Parse(client.GetStringAsync(url).Result).RootElement.GetProperty("status").GetString()

            if status = "failed" then
                failwith "the load benchmark's run failed"

        url

    let endpoints = [| "/v1/health"; "/v1/capabilities"; runUrl |]
    let names = [| "GET /v1/health"; "GET /v1/capabilities"; "GET /v1/runs/{id}" |]

    let load (seconds: TimeSpan) (record: bool) =
        let stop = DateTime.UtcNow + seconds

        let workers = [|
            for i in 0 .. clients - 1 ->
                Task.Run<ResizeArray<Sample>>(fun () -> task {
                    let samples = ResizeArray<Sample>(if record then 100_000 else 0)
                    let mutable k = i % endpoints.Length

                    while DateTime.UtcNow < stop do
                        let started = Stopwatch.GetTimestamp()

                        let! ok = task {
                            try
                                use! response =
                                    client.GetAsync(endpoints[k], HttpCompletionOption.ResponseContentRead)

                                return response.IsSuccessStatusCode
                            with _ ->
                                return false
                        }

                        if record then
                            samples.Add {
                                Endpoint = k
                                Millis = Stopwatch.GetElapsedTime(started).TotalMilliseconds
                                Ok = ok
                            }

                        k <- (k + 1) % endpoints.Length

                    return samples
                })
        |]

        Task.WhenAll(workers).Result |> Array.collect _.ToArray()

    load (TimeSpan.FromSeconds 5.0) false |> ignore
    GC.Collect()
    let started = Stopwatch.GetTimestamp()
    let samples = load duration true
    let elapsed = Stopwatch.GetElapsedTime(started).TotalSeconds

    printfn ""

    printfn
        "Loopback HTTP load: %d clients, %.0f s, Kestrel on %s, rate limiting off (client and server in one process)"
        clients
        elapsed
        baseUrl

    printfn ""

    printfn
        "| %-24s | %9s | %9s | %8s | %8s | %8s | %8s | %6s |"
        "endpoint"
        "requests"
        "req/s"
        "p50 ms"
        "p90 ms"
        "p99 ms"
        "max ms"
        "errors"

    printfn
        "|%s|%s|%s|%s|%s|%s|%s|%s|"
        (String('-', 26))
        (String('-', 11))
        (String('-', 11))
        (String('-', 10))
        (String('-', 10))
        (String('-', 10))
        (String('-', 10))
        (String('-', 8))

    let line (name: string) (rows: Sample array) =
        let sorted = rows |> Array.map _.Millis |> Array.sort
        let errors = rows |> Array.filter (fun s -> not s.Ok) |> Array.length

        printfn
            "| %-24s | %9d | %9.0f | %8.2f | %8.2f | %8.2f | %8.2f | %6d |"
            name
            rows.Length
            (float rows.Length / elapsed)
            (percentile sorted 50.0)
            (percentile sorted 90.0)
            (percentile sorted 99.0)
            (if sorted.Length > 0 then sorted[sorted.Length - 1] else nan)
            errors

    for i in 0 .. endpoints.Length - 1 do
        line names[i] (samples |> Array.filter (fun s -> s.Endpoint = i))

    line "all" samples
    host.StopAsync().Wait()

    try
        Directory.Delete(dataDir, true)
    with _ ->
        ()
