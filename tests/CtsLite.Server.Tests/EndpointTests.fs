/// Every endpoint and every error path, in process through ASP.NET's TestHost.
module CtsLite.Server.Tests.EndpointTests

open System
open System.IO
open System.Net
open System.Net.Http
open System.Text
open System.Text.Json
open System.Threading.Tasks
open Microsoft.AspNetCore.Builder
open Microsoft.AspNetCore.Hosting
open Microsoft.AspNetCore.TestHost
open Microsoft.Extensions.DependencyInjection
open Microsoft.Extensions.Hosting
open Microsoft.Extensions.Logging
open Expecto
open CtsLite
open CtsLite.Server
open CtsLite.Server.Http
open CtsLite.Tests

let configFor (dataDir: string) : ServiceConfig = {
    Config.defaults () with
        DataDir = dataDir
}

let openStore (dataDir: string) : IStore =
    match SqliteStore.openIn dataDir with
    | Ok s -> s
    | Error e -> failwith (StoreError.describe e)

/// A test host running `configureApp` (the real pipeline unless a test gives its own).
let startHost (context: ServiceContext) (configureApp: IApplicationBuilder -> unit) : IHost =
    HostBuilder()
        .ConfigureLogging(fun l -> l.ClearProviders() |> ignore)
        .ConfigureWebHost(fun wb ->
            wb.UseTestServer().ConfigureServices(Startup.configureServices context).Configure(configureApp)
            |> ignore)
        .Start()

let withService (store: IStore option) (f: ServiceContext -> HttpClient -> Task<unit>) : Task<unit> = task {
    let dataDir = TestEnv.tempDir "svc"
    let store = store |> Option.defaultWith (fun () -> openStore dataDir)
    let context = Startup.createContext (configFor dataDir) store TimeProvider.System
    use host = startHost context Startup.configureApp
    use client = host.GetTestClient()
    do! f context client
    do! host.StopAsync()
    store.Dispose()
}

let parse (response: HttpResponseMessage) : Task<JsonElement> = task {
    let! body = response.Content.ReadAsStringAsync()
    return JsonDocument.Parse(body).RootElement
}

let mediaType (response: HttpResponseMessage) =
    response.Content.Headers.ContentType.MediaType

let expectProblem (response: HttpResponseMessage) (status: int) : Task<JsonElement> = task {
    Expect.equal (int response.StatusCode) status "status"
    Expect.equal (mediaType response) "application/problem+json" "problem media type"
    let! p = parse response
    Expect.equal (p.GetProperty("status").GetInt32()) status "status member"
    Expect.isNonEmpty (p.GetProperty("title").GetString()) "title"
    Expect.isNonEmpty (p.GetProperty("detail").GetString()) "detail"
    Expect.isNonEmpty (p.GetProperty("request_id").GetString()) "request id"
    return p
}

type FailingStore() =
    interface IStore with
        member _.SchemaVersion = SqliteStore.supportedVersion

        member _.Check _ =
            Task.FromResult(Error(StoreError.Unavailable "disk on fire"))

        member _.CheckWrite _ =
            Task.FromResult(Error(StoreError.Unavailable "disk on fire"))

        member _.SizeBytes() = 0L
        member _.Dispose() = ()

let endpoints =
    testList "endpoints" [
        testCaseTask "GET /v1/health reports healthy with passing checks" (fun () ->
            withService None (fun _ client -> task {
                use! response = client.GetAsync "/v1/health"
                Expect.equal response.StatusCode HttpStatusCode.OK "200"
                Expect.equal (mediaType response) "application/json" "json"
                Expect.isTrue (response.Headers.Contains RequestId.Header) "request id echoed"
                let! body = parse response
                Expect.equal (body.GetProperty("status").GetString()) "healthy" "status"
                Expect.equal (body.GetProperty("version").GetString()) Product.version "version"
                Expect.isMatch (body.GetProperty("uptime").GetString()) @"^\d+d \d+h \d+m \d+s$" "uptime"
                Expect.isGreaterThan (body.GetProperty("store_size_bytes").GetInt64()) 0L "store size"

                let checks = [
                    for c in body.GetProperty("checks").EnumerateArray() ->
                        c.GetProperty("name").GetString(), c.GetProperty("status").GetString()
                ]

                Expect.equal
                    checks
                    [
                        "data_dir_writable", "pass"
                        "store_reachable", "pass"
                        "store_writable", "pass"
                    ]
                    "checks"
            }))

        testCaseTask "a store that reads but cannot write is unhealthy, and health says which part" (fun () ->
            let dataDir = TestEnv.tempDir "readonly"
            (openStore dataDir).Dispose()

            let readOnly =
                match SqliteStore.openReadOnly dataDir with
                | Ok s -> s
                | Error e -> failtest (StoreError.describe e)

            withService (Some readOnly) (fun _ client -> task {
                use! response = client.GetAsync "/v1/health"
                Expect.equal response.StatusCode HttpStatusCode.ServiceUnavailable "503"
                let! body = parse response

                let check (name: string) =
                    body.GetProperty("checks").EnumerateArray()
                    |> Seq.find (fun c -> c.GetProperty("name").GetString() = name)

                Expect.equal ((check "store_reachable").GetProperty("status").GetString()) "pass" "it reads"
                let write = check "store_writable"
                Expect.equal (write.GetProperty("status").GetString()) "fail" "it cannot write"
                Expect.stringContains (write.GetProperty("detail").GetString()) "read-only" "why"
            }))

        testCaseTask "health is 503 naming the failed check when the store is down" (fun () ->
            withService (Some(new FailingStore())) (fun _ client -> task {
                use! response = client.GetAsync "/v1/health"
                Expect.equal response.StatusCode HttpStatusCode.ServiceUnavailable "503"
                let! body = parse response
                Expect.equal (body.GetProperty("status").GetString()) "unhealthy" "status"
                let store = body.GetProperty("checks").[1]
                Expect.equal (store.GetProperty("status").GetString()) "fail" "store fails"
                Expect.stringContains (store.GetProperty("detail").GetString()) "disk on fire" "reason"
            }))

        testCaseTask "health fails when the data dir is gone" (fun () ->
            withService None (fun context client -> task {
                Directory.Delete(context.Config.DataDir, true)
                use! response = client.GetAsync "/v1/health"
                Expect.equal response.StatusCode HttpStatusCode.ServiceUnavailable "503"
                let! body = parse response
                let dataDir = body.GetProperty("checks").[0]
                Expect.equal (dataDir.GetProperty("status").GetString()) "fail" "data dir fails"
            }))

        testCaseTask "GET /v1/version" (fun () ->
            withService None (fun _ client -> task {
                use! response = client.GetAsync "/v1/version"
                let! body = parse response
                Expect.equal (body.GetProperty("api_version").GetString()) Product.ApiVersion "api"

                Expect.equal
                    (body.GetProperty("min_client_version").GetString())
                    Product.MinClientVersion
                    "min client"

                Expect.equal (body.GetProperty("server_version").GetString()) Product.version "server"
            }))

        testCaseTask "GET /v1/capabilities lists exactly the runnable catalog" (fun () ->
            withService None (fun context client -> task {
                use! response = client.GetAsync "/v1/capabilities"
                let! body = parse response

                let ids (name: string) = [
                    for t in body.GetProperty(name).EnumerateArray() -> t.GetProperty("id").GetString()
                ]

                Expect.equal (ids "tools") (CtsLite.Tools.Catalog.descriptors |> List.map (fun t -> t.Id)) "tools"

                Expect.equal
                    (ids "monitors")
                    (CtsLite.Monitors.Catalog.descriptors |> List.map (fun t -> t.Id))
                    "monitors"

                Expect.equal (body.GetProperty("api_version").GetString()) Product.ApiVersion "api version"

                let features = [ for f in body.GetProperty("features").EnumerateArray() -> f.GetString() ]
                Expect.equal features context.Features "features"

                // Every Tool Capability parameter has every member (null where it does not apply),
                // in declaration order (`cts tools --json` prints the same documents: CLI tests).
                for tool, d in Seq.zip (body.GetProperty("tools").EnumerateArray()) CtsLite.Tools.Catalog.descriptors do
                    let parameters = tool.GetProperty("parameters").EnumerateObject() |> List.ofSeq

                    Expect.equal
                        (parameters |> List.map _.Name)
                        (d.Parameters |> List.map _.Name)
                        $"{d.Id} parameters in order"

                    for p in parameters do
                        Expect.equal
                            (p.Value.EnumerateObject() |> Seq.map _.Name |> List.ofSeq)
                            [ "type"; "default"; "description"; "choices"; "required"; "min"; "max" ]
                            $"{d.Id}.{p.Name} members"
            }))

        testCaseTask "HEAD answers like GET without a body" (fun () ->
            withService None (fun _ client -> task {
                use request = new HttpRequestMessage(HttpMethod.Head, "/v1/version")
                use! response = client.SendAsync request
                Expect.equal response.StatusCode HttpStatusCode.OK "200"
                let! bytes = response.Content.ReadAsByteArrayAsync()
                Expect.isEmpty bytes "no body"
            }))

        testCaseTask "unknown paths are 404 problems" (fun () ->
            withService None (fun _ client -> task {
                use! response = client.GetAsync "/v1/nothing-here?token=secret"
                let! p = expectProblem response 404
                Expect.equal (p.GetProperty("instance").GetString()) "/v1/nothing-here" "instance is the path"
                Expect.stringContains (p.GetProperty("detail").GetString()) "/v1/nothing-here" "names the path"
                Expect.isFalse (p.GetRawText().Contains "secret") "query not echoed"
            }))

        testCaseTask "a wrong verb is a 405 problem with Allow" (fun () ->
            withService None (fun _ client -> task {
                use! response = client.PostAsync("/v1/capabilities", new StringContent("{}"))
                let! _ = expectProblem response 405
                Expect.equal (String.Join(", ", response.Content.Headers.Allow)) "GET, HEAD" "Allow"
            }))

        testCaseTask "an acceptable client request id is echoed, a bad one replaced" (fun () ->
            withService None (fun _ client -> task {
                use good = new HttpRequestMessage(HttpMethod.Get, "/v1/version")
                good.Headers.Add(RequestId.Header, "trace-42.a_b:c")
                use! r1 = client.SendAsync good
                Expect.equal (r1.Headers.GetValues(RequestId.Header) |> Seq.head) "trace-42.a_b:c" "echoed"

                use bad = new HttpRequestMessage(HttpMethod.Get, "/v1/nope")

                bad.Headers.TryAddWithoutValidation(RequestId.Header, String('x', 500))
                |> ignore

                use! r2 = client.SendAsync bad
                let replaced = r2.Headers.GetValues(RequestId.Header) |> Seq.head
                Expect.equal replaced.Length 32 "a fresh id"
                let! p = parse r2
                Expect.equal (p.GetProperty("request_id").GetString()) replaced "problem carries the same id"
            }))
    ]

type Echo = { Name: string; Count: int }

/// A pipeline with the service's middleware around test-only routes that throw or bind JSON.
let private errorApp (app: IApplicationBuilder) =
    let logger =
        app.ApplicationServices.GetRequiredService<ILoggerFactory>().CreateLogger "test"

    let boom: HttpHandler =
        fun _ _ -> raise (InvalidOperationException "secret-boom at /srv/private/path")

    app
        .UseRequestLogging(logger)
        .UseGiraffeErrorHandler(ErrorHandlers.problemDetails)
        .UseGiraffe(
            choose [
                route "/boom" >=> boom
                route "/echo" >=> POST >=> bindJson<Echo> json
                route "/small" >=> POST >=> bindJsonWithin<Echo> 64 json
                Routes.notFound
            ]
        )
    |> ignore

let private withErrorApp (f: HttpClient -> Task<unit>) = task {
    let dataDir = TestEnv.tempDir "err"
    use store = openStore dataDir
    let context = Startup.createContext (configFor dataDir) store TimeProvider.System
    use host = startHost context errorApp
    use client = host.GetTestClient()
    do! f client
}

let private jsonContent (s: string) =
    new StringContent(s, Encoding.UTF8, "application/json")

let errors =
    testList "errors" [
        testCaseTask "an exception becomes a generic 500 without its text" (fun () ->
            withErrorApp (fun client -> task {
                use! response = client.GetAsync "/boom"
                let! p = expectProblem response 500
                let raw = p.GetRawText()
                Expect.isFalse (raw.Contains "secret-boom") "no exception text"
                Expect.isFalse (raw.Contains "/srv/private") "no paths"
                Expect.isFalse (raw.Contains "at CtsLite") "no stack trace"

                Expect.stringContains
                    (p.GetProperty("detail").GetString())
                    (p.GetProperty("request_id").GetString())
                    "points to the log"
            }))

        testCaseTask "valid JSON binds" (fun () ->
            withErrorApp (fun client -> task {
                use! response = client.PostAsync("/echo", jsonContent """{"name":"a","count":2}""")
                Expect.equal response.StatusCode HttpStatusCode.OK "200"
                let! body = parse response
                Expect.equal (body.GetProperty("count").GetInt32()) 2 "round trip"
            }))

        testCaseTask "malformed JSON is a 400 naming line and byte" (fun () ->
            withErrorApp (fun client -> task {
                use! response =
                    client.PostAsync("/echo", jsonContent "{\"name\":\"a\",\n \"count\": tru }")

                let! p = expectProblem response 400
                let detail = p.GetProperty("detail").GetString()
                Expect.stringContains detail "line 2" "line"
                Expect.stringContains detail "byte" "byte"
            }))

        testCaseTask "JSON of the wrong shape is a 400" (fun () ->
            withErrorApp (fun client -> task {
                use! response = client.PostAsync("/echo", jsonContent """{"name": 5}""")
                let! _ = expectProblem response 400
                use! nullBody = client.PostAsync("/echo", jsonContent "null")
                let! _ = expectProblem nullBody 400
                ()
            }))

        testCaseTask "a body over the limit is a 413, declared or streamed" (fun () ->
            withErrorApp (fun client -> task {
                let big = $"""{{"name":"{String('a', 100)}","count":1}}"""
                use! declared = client.PostAsync("/small", jsonContent big)
                let! p = expectProblem declared 413
                Expect.stringContains (p.GetProperty("detail").GetString()) "64 bytes" "names the limit"

                // No Content-Length: the limit must hold while reading.
                let streamed = new StreamContent(new MemoryStream(Encoding.UTF8.GetBytes big))
                streamed.Headers.ContentType <- Headers.MediaTypeHeaderValue("application/json")
                use request = new HttpRequestMessage(HttpMethod.Post, "/small", Content = streamed)
                request.Headers.TransferEncodingChunked <- true
                use! chunked = client.SendAsync request
                let! _ = expectProblem chunked 413
                ()
            }))

        testCaseTask "a non-JSON media type is a 415" (fun () ->
            withErrorApp (fun client -> task {
                use! response =
                    client.PostAsync("/echo", new StringContent("name=a", Encoding.UTF8, "text/plain"))

                let! _ = expectProblem response 415
                ()
            }))
    ]

let all = testList "in-process" [ endpoints; errors ]
