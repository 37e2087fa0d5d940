/// Monitor sessions through the API: started, listed, watched over WebSocket and SSE, stopped;
/// on a real Kestrel (a slow watcher needs real sockets) and, fed by a test publisher of the
/// bridge protocol, in a real server process.
module CtsLite.Server.Tests.MonitorApiTests

open System
open System.Collections.Concurrent
open System.Diagnostics
open System.IO
open System.Net
open System.Net.Http
open System.Net.Sockets
open System.Net.WebSockets
open System.Text
open System.Text.Json
open System.Threading
open System.Threading.Tasks
open Microsoft.Extensions.Hosting
open Microsoft.Extensions.Logging.Abstractions
open Expecto
open NetMQ
open CtsLite
open CtsLite.Server
open CtsLite.Tests

let private rlogs () =
    Path.Combine(TestEnv.sharedDir (), "data", "rlogs")

let private segment () =
    Path.Combine(rlogs (), "synthetic", "default.rlog.zst")

let private routeName = "5ca1ab1e5ca1ab1e|2025-01-16--07-45-12"

let private truthOf (file: string) =
    JsonDocument.Parse(File.ReadAllText file).RootElement

/// Planted frame counts by "0x13A/1" over the truth's files.
let private plantedCounts (truth: JsonElement) : Map<string, int64> =
    truth.GetProperty("expected_per_file").EnumerateArray()
    |> Seq.collect (fun f ->
        f.GetProperty("message_counts_by_address_src").EnumerateObject()
        |> Seq.map (fun p -> p.Name, p.Value.GetInt64()))
    |> Seq.groupBy fst
    |> Seq.map (fun (k, vs) -> k, vs |> Seq.sumBy snd)
    |> Map.ofSeq

/// The seen (bus, address) entries of a CAN check's data, by "0x13A/1".
let private entries (data: JsonElement) : Map<string, JsonElement> =
    data.GetProperty("addresses").EnumerateArray()
    |> Seq.filter (fun a -> a.GetProperty("bus").ValueKind = JsonValueKind.Number)
    |> Seq.map (fun a -> $"""{a.GetProperty("address").GetString()}/{a.GetProperty("bus").GetInt32()}""", a)
    |> Map.ofSeq

/// A real Kestrel service on a free loopback port for the duration of `f`.
let private withKestrel (change: ServiceConfig -> ServiceConfig) (f: string -> HttpClient -> Task<unit>) = task {
    let dataDir = TestEnv.tempDir "mon"

    let config =
        change {
            Config.defaults () with
                DataDir = dataDir
                ApiPort = 0
                InputRoots = [ rlogs () ]
                RateLimitPerMinute = 0
                LogLevel = Microsoft.Extensions.Logging.LogLevel.Warning
        }

    use store = EndpointTests.openStore dataDir

    use host =
        Startup.buildHost (Startup.createContext config store TimeProvider.System) false

    do! host.StartAsync()
    let url = Startup.addresses host |> List.head

    use http =
        new HttpClient(BaseAddress = Uri url, Timeout = TimeSpan.FromSeconds 60.0)

    try
        do! f url http
    finally
        host.StopAsync().GetAwaiter().GetResult()
}

let private post (http: HttpClient) (path: string) (body: string) = task {
    use content = new StringContent(body, Encoding.UTF8, "application/json")
    let! response = http.PostAsync(path, content)
    let! text = response.Content.ReadAsStringAsync()

    let json =
        if text = "" then
            JsonDocument.Parse("{}").RootElement
        else
            JsonDocument.Parse(text).RootElement

    return int response.StatusCode, json
}

let private get (http: HttpClient) (path: string) = task {
    let! response = http.GetAsync(path: string)
    let! text = response.Content.ReadAsStringAsync()
    return int response.StatusCode, JsonDocument.Parse(text).RootElement
}

let private started (status: int, body: JsonElement) =
    Expect.equal status 201 $"started: {body}"
    body.GetProperty("session_id").GetString()

/// Waits until the session's status is no longer `running`.
let private waitOver (http: HttpClient) (id: string) (seconds: float) = task {
    let deadline = DateTime.UtcNow.AddSeconds seconds
    let mutable last = JsonDocument.Parse("{}").RootElement
    let mutable over = false

    while not over do
        let! _, body = get http $"/v1/monitors/{id}"
        last <- body

        if body.GetProperty("status").GetString() <> "running" then
            over <- true
        elif DateTime.UtcNow > deadline then
            failtestf "session %s still running after %.0f s" id seconds
        else
            do! Task.Delay 50

    return last
}

/// Every text message of a WebSocket until it closes, each with the time it arrived; waits
/// `delayEach` after each message until `slowUntil`.
let private readSlowly
    (socket: WebSocket)
    (delayEach: TimeSpan)
    (slowUntil: DateTime)
    (into: ConcurrentQueue<DateTime * JsonElement>)
    = task {
    let buffer = Array.zeroCreate<byte> 65536
    let message = new MemoryStream()
    let mutable go = true

    while go do
        let! r = socket.ReceiveAsync(ArraySegment buffer, CancellationToken.None)

        if r.MessageType = WebSocketMessageType.Close then
            do! socket.CloseOutputAsync(WebSocketCloseStatus.NormalClosure, "", CancellationToken.None)
            go <- false
        else
            message.Write(buffer, 0, r.Count)

            if r.EndOfMessage then
                let json = JsonDocument.Parse(message.ToArray()).RootElement
                into.Enqueue(DateTime.UtcNow, json)
                message.SetLength 0L

                if delayEach > TimeSpan.Zero && DateTime.UtcNow < slowUntil then
                    do! Task.Delay delayEach
}

/// Every text message of a WebSocket until it closes, each with the time it arrived.
let private readAll (socket: WebSocket) (into: ConcurrentQueue<DateTime * JsonElement>) =
    readSlowly socket TimeSpan.Zero DateTime.MinValue into

let private wsUrl (url: string) (path: string) =
    Uri(url.Replace("http://", "ws://") + path)

/// A WebSocket whose socket receives into a small kernel buffer, so a slow reader is slow at once.
let private smallBufferSocket (uri: Uri) = task {
    let handler =
        new SocketsHttpHandler(
            ConnectCallback =
                fun context ct ->
                    ValueTask<Stream>(
                        task {
                            let socket = new Socket(SocketType.Stream, ProtocolType.Tcp)
                            socket.ReceiveBufferSize <- 4096
                            do! socket.ConnectAsync(context.DnsEndPoint, ct)
                            return new NetworkStream(socket, true) :> Stream
                        }
                    )
        )

    let socket = new ClientWebSocket()
    do! socket.ConnectAsync(uri, new HttpMessageInvoker(handler), CancellationToken.None)
    return socket
}

let private types (messages: (DateTime * JsonElement) seq) =
    messages
    |> Seq.map (fun (_, m) -> m.GetProperty("type").GetString())
    |> List.ofSeq

/// The property names of a component of the served OpenAPI document.
let private componentKeys (http: HttpClient) (name: string) = task {
    let! _, document = get http "/v1/openapi.json"

    let schema =
        document.GetProperty("components").GetProperty("schemas").GetProperty(name)

    return
        [ for p in schema.GetProperty("properties").EnumerateObject() -> p.Name ]
        |> List.sort
}

let private keys (o: JsonElement) =
    [ for p in o.EnumerateObject() -> p.Name ] |> List.sort

let private apiTests =
    testList "monitor sessions" [
        testCaseTask "the CAN checks' data is the shape the OpenAPI document gives" (fun () ->
            withKestrel id (fun _ http -> task {
                for monitor in [ "can_bus_check"; "can_hybrid_rx_check" ] do
                    let! code, body =
                        post
                            http
                            "/v1/monitors/start"
                            (sprintf
                                """{"monitor_id": "%s", "source": {"type": "replay", "path": "synthetic/default.rlog.zst", "speed": 0}}"""
                                monitor)

                    let id = started (code, body)
                    let! over = waitOver http id 30.0
                    let data = over.GetProperty("snapshot")
                    let! dataKeys = componentKeys http "CanCheckData"
                    let! entryKeys = componentKeys http "CanAddressState"
                    Expect.equal (keys data) dataKeys $"{monitor}: data"
                    let all = [ for a in data.GetProperty("addresses").EnumerateArray() -> a ]
                    Expect.isNonEmpty all "addresses"

                    for a in all do
                        Expect.equal (keys a) entryKeys $"{monitor}: an address"
            }))

        testCaseTask
            "start is checked as a run is: 404, a 422 per field with its pointer, 201 with the session"
            (fun () ->
                withKestrel id (fun _ http -> task {
                    let! status, body =
                        post http "/v1/monitors/start" """{"monitor_id": "no_such_monitor"}"""

                    Expect.equal status 404 "unknown monitor"

                    Expect.stringContains
                        (body.GetProperty("detail").GetString())
                        "can_bus_check"
                        "names the monitors"

                    let! status, body =
                        post
                            http
                            "/v1/monitors/start"
                            """{"monitor_id": "can_bus_check", "params": {"window_s": -1, "bogus": 1},
                            "source": {"type": "zmq", "host": "not a host"}, "update_ms": 1, "record_max_mb": 0}"""

                    Expect.equal status 422 $"{body}"

                    let pointers = [
                        for e in body.GetProperty("errors").EnumerateArray() -> e.GetProperty("pointer").GetString()
                    ]

                    for p in
                        [
                            "/params/window_s"
                            "/params/bogus"
                            "/source/host"
                            "/update_ms"
                            "/record_max_mb"
                        ] do
                        Expect.contains pointers p $"{p} in {pointers}"

                    // The monitor's own checks, once the parameters fit their declared types.
                    let! status, body =
                        post
                            http
                            "/v1/monitors/start"
                            """{"monitor_id": "can_bus_check", "params": {"addresses": ["0x13A", "nope"]}, "source": {"type": "zmq", "host": "127.0.0.1"}}"""

                    Expect.equal status 422 $"{body}"
                    Expect.stringContains (string body) "/params/addresses" "pointer"

                    let! status, body =
                        post
                            http
                            "/v1/monitors/start"
                            """{"monitor_id": "panda_state", "source": {"type": "replay", "path": "synthetic/default.rlog.zst"}, "record": true}"""

                    Expect.equal status 422 "a replay is not recorded"
                    Expect.stringContains (string body) "/record" "pointer"

                    let! status, body =
                        post
                            http
                            "/v1/monitors/start"
                            """{"monitor_id": "panda_state", "source": {"type": "replay", "path": "../../etc/passwd"}}"""

                    Expect.equal status 422 "outside the input roots"
                    Expect.isFalse ((string body).Contains(TestEnv.sharedDir ())) "no server path in the answer"

                    let! status, body =
                        post
                            http
                            "/v1/monitors/start"
                            """{"monitor_id": "can_bus_check", "params": {"dbc": "missing.dbc"}, "source": {"type": "replay", "path": "synthetic/default.rlog.zst"}}"""

                    Expect.equal status 422 "a dbc that is not there"
                    Expect.stringContains (string body) "/params/dbc" "pointer"

                    let! status, body =
                        post http "/v1/monitors/start" """{"monitor_id": "panda_state"}"""

                    Expect.equal status 422 "a source is required"
                    Expect.stringContains (string body) "/source" "pointer"

                    let! code, body =
                        post
                            http
                            "/v1/monitors/start"
                            """{"monitor_id": "panda_state", "source": {"type": "replay", "path": "synthetic/default.rlog.zst", "speed": 0}}"""

                    let id = started (code, body)

                    Expect.equal
                        (body.GetProperty("monitor_id").GetString())
                        "panda_state"
                        "the monitor stays its name"

                    Expect.equal (body.GetProperty("stream_url").GetString()) $"/v1/monitors/{id}/stream" "stream"
                    let! over = waitOver http id 30.0
                    Expect.equal (over.GetProperty("status").GetString()) "ended" "a replay ends"
                    let pandas = over.GetProperty("snapshot").GetProperty("pandas")
                    Expect.equal (pandas[0].GetProperty("safety_model").GetString()) "subaru" "the final state"

                    let! _, list = get http "/v1/monitors"

                    let ids = [
                        for s in list.GetProperty("sessions").EnumerateArray() ->
                            s.GetProperty("session_id").GetString()
                    ]

                    Expect.contains ids id "listed"

                    let! status, stopped = post http $"/v1/monitors/{id}/stop" ""
                    Expect.equal status 200 "stopping a session that is over answers it as it is"
                    Expect.equal (stopped.GetProperty("status").GetString()) "ended" "unchanged"
                    let! status, _ = get http "/v1/monitors/nope"
                    Expect.equal status 404 "no such session"
                }))

        testCaseTask
            "a replay of the 3-segment route at speed 0 counts every frame per (bus, address) as planted"
            (fun () ->
                withKestrel id (fun _ http -> task {
                    let! code, body =
                        post
                            http
                            "/v1/monitors/start"
                            ("""{"monitor_id": "can_bus_check", "source": {"type": "replay", "path": "synthetic/route/"""
                             + routeName
                             + """", "speed": 0}}""")

                    let id = started (code, body)
                    let! over = waitOver http id 60.0

                    let seen =
                        entries (over.GetProperty("snapshot"))
                        |> Map.map (fun _ a -> a.GetProperty("count").GetInt64())

                    let planted =
                        plantedCounts (
                            truthOf (Path.Combine(rlogs (), "synthetic", "route", $"{routeName}.truth.json"))
                        )

                    Expect.equal seen planted "frame counts per (address, src)"

                    let files =
                        CtsLite.Logs.Route.resolve (Path.Combine(rlogs (), "synthetic", "route", routeName))
                        |> Result.defaultWith failwith

                    let schema = CtsLite.Capnp.Schema.cereal ()
                    let layout = CtsLite.Logs.EventLayout.ofSchema schema |> Result.defaultWith failwith

                    let info =
                        CtsLite.Logs.LogInfo.compute schema layout CtsLite.Capnp.ReaderOptions.Default files
                        |> Result.defaultWith (fun e -> failwith (CtsLite.Capnp.DecodeError.describe e))

                    let perSrc =
                        seen
                        |> Map.toSeq
                        |> Seq.groupBy (fun (k, _) -> int (k.Split('/')[1]))
                        |> Seq.map (fun (src, xs) -> src, xs |> Seq.sumBy snd)
                        |> Map.ofSeq

                    Expect.equal
                        perSrc
                        (info.CanFramesPerSrc |> Seq.map (fun kv -> kv.Key, kv.Value) |> Map.ofSeq)
                        "as log info counts them"

                    Expect.equal
                        (over.GetProperty("counters").GetProperty("events").GetInt64())
                        info.EventCounts["can"]
                        "every can event"
                }))

        testCaseTask
            "WebSocket and SSE: a snapshot first, updates in order, end last; an ended session gives its final state"
            (fun () ->
                withKestrel id (fun url http -> task {
                    let! code, body =
                        post
                            http
                            "/v1/monitors/start"
                            """{"monitor_id": "panda_state", "source": {"type": "replay", "path": "synthetic/default.rlog.zst", "speed": 1}, "update_ms": 100}"""

                    let id = started (code, body)
                    use socket = new ClientWebSocket()
                    do! socket.ConnectAsync(wsUrl url $"/v1/monitors/{id}/stream", CancellationToken.None)
                    let messages = ConcurrentQueue<DateTime * JsonElement>()
                    let reading = readAll socket messages

                    // The same session as Server-Sent Events.
                    let request = new HttpRequestMessage(HttpMethod.Get, $"/v1/monitors/{id}/stream")
                    request.Headers.Accept.ParseAdd "text/event-stream"
                    let! sse = http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead)
                    Expect.equal sse.Content.Headers.ContentType.MediaType "text/event-stream" "SSE"
                    let! sseText = sse.Content.ReadAsStreamAsync()

                    let sseReading = task {
                        use reader = new StreamReader(sseText)
                        let! all = reader.ReadToEndAsync()
                        return all
                    }

                    TestBridge.waitFor "some updates" 20.0 (fun () -> messages.Count >= 8)
                    let! _, live = get http $"/v1/monitors/{id}"
                    Expect.equal (live.GetProperty("counters").GetProperty("clients").GetInt32()) 2 "two watchers"

                    Expect.isGreaterThan
                        (live.GetProperty("counters").GetProperty("events").GetInt64())
                        0L
                        "events counted live"

                    let! status, stopped = post http $"/v1/monitors/{id}/stop" ""
                    Expect.equal status 200 "stopped"
                    Expect.equal (stopped.GetProperty("status").GetString()) "stopped" "status"
                    Expect.equal (stopped.GetProperty("reason").GetString()) "stopped on request" "reason"
                    do! reading
                    let! sseAll = sseReading

                    let ws = types messages
                    Expect.equal ws.Head "snapshot" "a snapshot first"
                    Expect.equal (List.last ws) "end" "end last"
                    Expect.isGreaterThan (ws |> List.filter ((=) "update") |> List.length) 5 "updates"

                    let seqs =
                        messages
                        |> Seq.map (fun (_, m) -> m.GetProperty("seq").GetInt64())
                        |> List.ofSeq

                    Expect.equal (seqs.Tail) (List.sort seqs.Tail) "in order"

                    let final = (snd (Seq.last messages)).GetProperty("data")

                    Expect.equal
                        (string final)
                        (string (stopped.GetProperty("snapshot")))
                        "end carries the final state"

                    let events = [
                        for m in Text.RegularExpressions.Regex.Matches(sseAll, "(?m)^event: (\\w+)$") ->
                            m.Groups[1].Value
                    ]

                    Expect.equal events.Head "snapshot" "SSE: a snapshot first"
                    Expect.equal (List.last events) "end" "SSE: end last"
                    Expect.isGreaterThan (events |> List.filter ((=) "update") |> List.length) 5 "SSE: updates"

                    // A session that is over: its final state, then end, then the stream closes.
                    use late = new ClientWebSocket()
                    do! late.ConnectAsync(wsUrl url $"/v1/monitors/{id}/stream", CancellationToken.None)
                    let after = ConcurrentQueue<DateTime * JsonElement>()
                    do! readAll late after
                    Expect.equal (types after) [ "snapshot"; "end" ] "final state and end"
                    Expect.equal (string ((snd (Seq.last after)).GetProperty("data"))) (string final) "the same state"
                }))

        testCaseTask
            "a slow watcher loses its oldest messages, counted; a fast one on the same session gets every one"
            (fun () ->
                withKestrel id (fun url http -> task {
                    let! code, body =
                        post
                            http
                            "/v1/monitors/start"
                            """{"monitor_id": "can_bus_check", "source": {"type": "replay", "path": "synthetic/default.rlog.zst", "speed": 1}, "update_ms": 20}"""

                    let id = started (code, body)
                    let uri = wsUrl url $"/v1/monitors/{id}/stream"
                    use fast = new ClientWebSocket()
                    do! fast.ConnectAsync(uri, CancellationToken.None)
                    let! slow = smallBufferSocket uri
                    use slow = slow
                    let fastMessages = ConcurrentQueue<DateTime * JsonElement>()
                    let slowMessages = ConcurrentQueue<DateTime * JsonElement>()
                    let fastReading = readAll fast fastMessages
                    // One message a second for 10 s, then it drains what is left.
                    let slowReading =
                        readSlowly slow (TimeSpan.FromSeconds 1.0) (DateTime.UtcNow.AddSeconds 10.0) slowMessages

                    do! Task.Delay(TimeSpan.FromSeconds 10.0)
                    let! _ = post http $"/v1/monitors/{id}/stop" ""
                    do! fastReading
                    let! _, over = get http $"/v1/monitors/{id}"
                    Expect.equal (List.last (types fastMessages)) "end" "the fast watcher got the end"

                    let fastSeqs =
                        fastMessages
                        |> Seq.map (fun (_, m) -> m.GetProperty("seq").GetInt64())
                        |> List.ofSeq

                    Expect.equal fastSeqs.Tail [ fastSeqs.Tail.Head .. List.last fastSeqs ] "every message, no gap"
                    Expect.isGreaterThan fastSeqs.Length 200 "50 updates a second"

                    Expect.isTrue
                        (fastMessages
                         |> Seq.forall (fun (_, m) -> m.GetProperty("dropped").GetInt64() = 0L))
                        "the fast watcher dropped nothing"

                    // The slow one reads on (one a second, then faster): its count says what it lost.
                    let deadline = DateTime.UtcNow.AddSeconds 30.0

                    while not slowReading.IsCompleted && DateTime.UtcNow < deadline do
                        do! Task.Delay 100

                    let slowDropped =
                        slowMessages
                        |> Seq.map (fun (_, m) -> m.GetProperty("dropped").GetInt64())
                        |> Seq.max

                    Expect.isGreaterThan slowDropped 0L "the slow watcher was told what it lost"

                    Expect.isGreaterThan
                        (over.GetProperty("counters").GetProperty("dropped").GetInt64())
                        0L
                        "the session counts drops"
                }))

        testCaseTask
            "limits: max_monitors and max_stream_clients answer 429; an unwatched session stops itself"
            (fun () ->
                withKestrel
                    (fun c -> {
                        c with
                            MaxMonitors = 1
                            MaxStreamClients = 1
                            MonitorIdleTimeout = TimeSpan.FromSeconds 2.0
                    })
                    (fun url http -> task {
                        let start =
                            """{"monitor_id": "panda_state", "source": {"type": "replay", "path": "synthetic/default.rlog.zst", "speed": 1}}"""

                        let! first = post http "/v1/monitors/start" start
                        let id = started first
                        let! status, body = post http "/v1/monitors/start" start
                        Expect.equal status 429 "max_monitors"

                        Expect.stringContains
                            (body.GetProperty("detail").GetString())
                            "max_monitors"
                            "names the setting"

                        use watcher = new ClientWebSocket()
                        do! watcher.ConnectAsync(wsUrl url $"/v1/monitors/{id}/stream", CancellationToken.None)

                        let! second =
                            http.GetAsync($"/v1/monitors/{id}/stream", HttpCompletionOption.ResponseHeadersRead)

                        Expect.equal (int second.StatusCode) 429 "max_stream_clients"

                        // Watched, it runs past the idle timeout; unwatched, it stops within it.
                        do! Task.Delay(TimeSpan.FromSeconds 3.0)
                        let! _, running = get http $"/v1/monitors/{id}"
                        Expect.equal (running.GetProperty("status").GetString()) "running" "watched"
                        do! watcher.CloseAsync(WebSocketCloseStatus.NormalClosure, "bye", CancellationToken.None)
                        let! over = waitOver http id 10.0
                        Expect.equal (over.GetProperty("status").GetString()) "stopped" "stopped itself"

                        Expect.stringContains
                            (over.GetProperty("reason").GetString())
                            "monitor_idle_timeout_s"
                            "says why"

                        let! again = post http "/v1/monitors/start" start
                        let next = started again
                        let! _ = post http $"/v1/monitors/{next}/stop" ""
                        ()
                    }))

        testCaseTask
            "browsers' GETs take ?access_token=: the stream, run logs and downloads; nothing else does"
            (fun () ->
                let secret = "monitor-test-secret-of-enough-length-0123456789"

                withKestrel (fun c -> { c with JwtSecret = Some secret }) (fun url http -> task {
                    let now = DateTimeOffset.UtcNow
                    let token = Security.Jwt.create secret "alice" now (now.AddHours 1.0) None None
                    http.DefaultRequestHeaders.Authorization <- Headers.AuthenticationHeaderValue("JWT", token)

                    let! code, body =
                        post
                            http
                            "/v1/monitors/start"
                            """{"monitor_id": "panda_state", "source": {"type": "replay", "path": "synthetic/default.rlog.zst", "speed": 0}}"""

                    let id = started (code, body)
                    let! _ = waitOver http id 30.0
                    use anonymous = new HttpClient(BaseAddress = Uri url)

                    let! refused = anonymous.GetAsync $"/v1/monitors/{id}/stream"
                    Expect.equal refused.StatusCode HttpStatusCode.Unauthorized "no token"
                    let! refusedText = refused.Content.ReadAsStringAsync()
                    Expect.stringContains refusedText "access_token" "says how"

                    let! stream = anonymous.GetAsync $"/v1/monitors/{id}/stream?access_token={token}"
                    Expect.equal stream.StatusCode HttpStatusCode.OK "the stream"
                    let! text = stream.Content.ReadAsStringAsync()
                    Expect.stringContains text "event: end" "the whole stream"
                    Expect.isFalse (text.Contains token) "the token is not echoed"

                    let! socket = task {
                        let s = new ClientWebSocket()

                        do!
                            s.ConnectAsync(
                                wsUrl url $"/v1/monitors/{id}/stream?access_token={token}",
                                CancellationToken.None
                            )

                        return s
                    }

                    let got = ConcurrentQueue<DateTime * JsonElement>()
                    do! readAll socket got
                    Expect.equal (types got) [ "snapshot"; "end" ] "a WebSocket with the token in the query"

                    let! bad = anonymous.GetAsync $"/v1/monitors/{id}/stream?access_token=not.a.token"
                    Expect.equal bad.StatusCode HttpStatusCode.Unauthorized "a bad token"

                    let! logs = anonymous.GetAsync $"/v1/runs/{Guid.NewGuid()}/logs?access_token={token}"
                    Expect.equal logs.StatusCode HttpStatusCode.NotFound "run logs: authenticated, then no such run"

                    let! download =
                        anonymous.GetAsync $"/v1/artifacts/{Guid.NewGuid()}/download?access_token={token}"

                    Expect.equal
                        download.StatusCode
                        HttpStatusCode.NotFound
                        "downloads: authenticated, then no such artifact"

                    let! listing = anonymous.GetAsync $"/v1/monitors?access_token={token}"
                    Expect.equal listing.StatusCode HttpStatusCode.Unauthorized "other endpoints want the header"
                }))

        testCaseTask "at start-up, sessions of a process that is gone are marked stopped with a reason" (fun () -> task {
            let dataDir = TestEnv.tempDir "mon-orphans"
            use _store = EndpointTests.openStore dataDir
            let sessions = SqliteMonitorStore.create dataDir SessionOwners.lease
            let now = DateTimeOffset.UtcNow

            let session (id: string) (owner: string) (created: DateTimeOffset) : SessionRecord = {
                SessionId = id
                MonitorId = "panda_state"
                ParamsJson = "{}"
                SourceJson = """{"type": "zmq", "host": "127.0.0.1"}"""
                Record = false
                UpdateMs = 100
                Status = SessionStatus.Running
                SourceStatus = "connected"
                CreatedAt = created
                StoppedAt = None
                Reason = None
                Owner = owner
                Counts = SessionCounts.Zero
                FinalJson = None
                Recordings = []
            }

            // A process of this machine that no longer runs (its lease has not run out), one of
            // another machine whose lease ran out, and one of another machine still alive.
            let dead = Process.Start("true")
            dead.WaitForExit()
            do! sessions.AddSession(session "crashed" $"{Environment.MachineName}/{dead.Id}/x" now)
            do! sessions.AddSession(session "expired" "elsewhere/1/y" (now - TimeSpan.FromMinutes 5.0))
            do! sessions.AddSession(session "alive" "elsewhere/2/z" now)

            let monitors =
                new MonitorSessions(
                    {
                        Config.defaults () with
                            DataDir = dataDir
                    },
                    sessions,
                    SqliteRunStore.create dataDir,
                    TimeProvider.System,
                    NullLogger<MonitorSessions>.Instance
                )

            do! (monitors :> IHostedService).StartAsync CancellationToken.None
            let! crashed = sessions.GetSession "crashed"
            let! expired = sessions.GetSession "expired"
            let! alive = sessions.GetSession "alive"
            do! (monitors :> IHostedService).StopAsync CancellationToken.None

            for s in [ crashed; expired ] do
                Expect.equal s.Value.Status SessionStatus.Stopped s.Value.SessionId
                Expect.stringContains s.Value.Reason.Value "gone" "a reason"

            Expect.equal alive.Value.Status SessionStatus.Running "a live process keeps its sessions"
        })
    ]

/// `/proc/net/tcp` rows (IPv4 and IPv6) connecting to `port`, not closing.
let private connectionsTo (port: int) : string list = [
    for table in [ "/proc/net/tcp"; "/proc/net/tcp6" ] do
        if File.Exists table then
            for line in File.ReadAllLines table |> Array.skip 1 do
                let cols = line.Split(' ', StringSplitOptions.RemoveEmptyEntries)
                let remotePort = Convert.ToInt32(cols[2].Split(':')[1], 16)
                // 01 established, 02 syn-sent: a live or opening connection.
                if remotePort = port && (cols[3] = "01" || cols[3] = "02") then
                    line
]

/// The names of the process's threads.
let private threadNames (pid: int) : string list = [
    for dir in Directory.GetDirectories $"/proc/{pid}/task" do
        try
            (File.ReadAllText(Path.Combine(dir, "comm"))).Trim()
        with :? IOException ->
            ()
]

let private percentile (p: float) (values: float list) =
    let sorted = List.sort values |> Array.ofList
    sorted[min (sorted.Length - 1) (int (Math.Ceiling(p * float sorted.Length)) - 1)]

let private liveTest =
    testCaseTask
        "live through the server process: rates and panda state as planted, recovery, stop frees all, the recording"
        (fun () -> task {
            let messages = TestBridge.timedMessagesOf (segment ())
            let truth = truthOf (Path.Combine(rlogs (), "synthetic", "default.truth.json"))
            let dataDir = TestEnv.tempDir "mon-live"

            use server =
                ProcessTests.start [
                    "CTS_API_PORT", "0"
                    "CTS_DATA_DIR", dataDir
                    "CTS_RATE_LIMIT_PER_MINUTE", "0"
                ]

            let url =
                match server.WaitFor(@"listening on (http://127\.0\.0\.1:\d+)", TimeSpan.FromSeconds 60.0) with
                | Some u -> u
                | None -> failtestf "server did not start:\n%s" server.Output

            use http =
                new HttpClient(BaseAddress = Uri url, Timeout = TimeSpan.FromSeconds 60.0)

            let mutable can = TestBridge.publisher "can"
            use pandas = TestBridge.publisher "pandaStates"

            let! code, body =
                post
                    http
                    "/v1/monitors/start"
                    """{"monitor_id": "can_bus_check", "params": {"window_s": 5}, "source": {"type": "zmq", "host": "127.0.0.1"}, "record": true}"""

            let canId = started (code, body)

            let! code, body =
                post
                    http
                    "/v1/monitors/start"
                    """{"monitor_id": "panda_state", "source": {"type": "zmq", "host": "localhost"}}"""

            let pandaId = started (code, body)
            use socket = new ClientWebSocket()
            do! socket.ConnectAsync(wsUrl url $"/v1/monitors/{canId}/stream", CancellationToken.None)
            let received = ConcurrentQueue<DateTime * JsonElement>()
            let reading = readAll socket received

            let statuses () =
                received
                |> Seq.map snd
                |> Seq.filter (fun m -> m.GetProperty("type").GetString() = "source_status")
                |> Seq.map (fun m -> m.GetProperty("data").GetProperty("status").GetString())
                |> List.ofSeq

            Expect.contains
                (threadNames server.Process.Id
                 |> List.map (fun n -> n.Substring(0, min 7 n.Length)))
                "cts-mon"
                "a thread per session"

            // ZMQ's subscriber joins late: publish the first event until the session sees it.
            let firstCan = messages |> List.find (fun (s, _, _) -> s = "can")
            let _, _, firstBytes = firstCan

            TestBridge.waitFor "the connection" 20.0 (fun () ->
                can.SendFrame firstBytes
                Thread.Sleep 50
                List.contains "connected" (statuses ()))

            // 7 s of the drive at real time, a corrupt message in the middle.
            let _, start, _ = messages.Head
            let span = 7_000_000_000L
            let clock = Stopwatch.StartNew()
            let published = ResizeArray<float * int64>()
            let mutable lastTime = start

            for service, mono, bytes in messages |> List.filter (fun (_, t, _) -> t - start < span) do
                let due = float (mono - start) / 1e9
                let wait = due - clock.Elapsed.TotalSeconds

                if wait > 0.0 then
                    Thread.Sleep(TimeSpan.FromSeconds wait)

                match service with
                | "can" ->
                    can.SendFrame bytes
                    lastTime <- mono
                | "pandaStates" -> pandas.SendFrame bytes
                | _ -> ()

                if service = "can" then
                    published.Add(float (DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()) / 1000.0, mono)

                if abs (mono - start - span / 2L) < 5_000_000L && service = "can" then
                    can.SendFrame [| 0xFFuy; 0xFFuy; 0xFFuy |]

            TestBridge.waitFor "the last update" 10.0 (fun () ->
                received
                |> Seq.exists (fun (_, m) ->
                    m.GetProperty("type").GetString() = "update"
                    && m.GetProperty("data").GetProperty("log_time_s").ValueKind = JsonValueKind.Number
                    && abs (
                        m.GetProperty("data").GetProperty("log_time_s").GetDouble()
                        - float lastTime / 1e9
                    )
                        <
                        0.002))

            let last =
                received
                |> Seq.map snd
                |> Seq.filter (fun m -> m.GetProperty("type").GetString() = "update")
                |> Seq.last

            // Rates over the 5 s window as planted (count / 60 s), for messages of 10 Hz and more
            // (a 1 Hz message is ±1 frame of 5 in the window).
            let planted = plantedCounts truth

            for KeyValue(key, entry) in entries (last.GetProperty("data")) do
                let hz = float planted[key] / 60.0

                if hz >= 10.0 then
                    let rate = entry.GetProperty("rate_hz").GetDouble()
                    Expect.isLessThan (abs (rate - hz) / hz) 0.05 $"{key}: {rate} Hz, planted {hz}"

            // Latency: an update's send time to its arrival, and from a frame's publish to the first
            // update that shows it.
            let updates =
                received
                |> Seq.filter (fun (_, m) -> m.GetProperty("type").GetString() = "update")
                |> List.ofSeq

            let delivery = [
                for at, m in updates ->
                    (float ((DateTimeOffset at).ToUnixTimeMilliseconds()) / 1000.0
                     - m.GetProperty("t").GetDouble())
                    * 1000.0
            ]

            let visible = [
                for publishedAt, mono in published do
                    match
                        updates
                        |> List.tryFind (fun (_, m) ->
                            let t = m.GetProperty("data").GetProperty("log_time_s")

                            t.ValueKind = JsonValueKind.Number
                            && t.GetDouble() >= Math.Round(float mono / 1e9, 3))
                    with
                    | Some(at, _) ->
                        (float ((DateTimeOffset at).ToUnixTimeMilliseconds()) / 1000.0 - publishedAt)
                        * 1000.0
                    | None -> ()
            ]

            eprintfn
                "monitor latency over %d updates: delivery p50 %.1f ms p99 %.1f ms; publish to visible p50 %.1f ms p99 %.1f ms"
                delivery.Length
                (percentile 0.5 delivery)
                (percentile 0.99 delivery)
                (percentile 0.5 visible)
                (percentile 0.99 visible)

            Expect.isLessThan (percentile 0.5 delivery) 100.0 "an update arrives within 100 ms of its send"
            Expect.isLessThan (percentile 0.5 visible) 200.0 "a frame shows within an update interval and 100 ms"

            // Silence, then the publisher gone, then back: the same session recovers.
            TestBridge.waitFor "silent" 10.0 (fun () -> List.contains "silent" (statuses ()))
            can.Dispose()
            TestBridge.waitFor "reconnecting" 10.0 (fun () -> List.contains "reconnecting" (statuses ()))
            can <- TestBridge.publisher "can"

            TestBridge.waitFor "recovered" 20.0 (fun () ->
                can.SendFrame firstBytes
                Thread.Sleep 50

                statuses ()
                |> List.rev
                |> List.takeWhile ((<>) "reconnecting")
                |> List.contains "connected")

            let! statusKeys = componentKeys http "SourceStatusData"

            for _, m in received do
                if m.GetProperty("type").GetString() = "source_status" then
                    Expect.equal (keys (m.GetProperty("data"))) statusKeys "source_status data as documented"

            let! _, live = get http $"/v1/monitors/{canId}"
            Expect.equal (live.GetProperty("status").GetString()) "running" "never restarted"

            Expect.equal
                (live.GetProperty("counters").GetProperty("corrupt").GetInt64())
                1L
                "the corrupt message counted"

            let! _, panda = get http $"/v1/monitors/{pandaId}"
            let state = panda.GetProperty("snapshot").GetProperty("pandas")[0]

            Expect.equal
                (state.GetProperty("safety_model").GetString())
                (truth.GetProperty("car").GetProperty("safetyModel").GetString())
                "safety model"

            let allowedAtStart =
                let file = truth.GetProperty("expected_per_file")[0]
                let changes = file.GetProperty("panda").GetProperty("controlsAllowed_changes")
                changes[0].GetProperty("controlsAllowed").GetBoolean()

            Expect.equal (state.GetProperty("controls_allowed").GetBoolean()) allowedAtStart "controlsAllowed"

            // Stop frees everything: connections, the session threads; the recording is an upload
            // holding exactly the events received.
            let canPort = CtsLite.Monitors.Bridge.port "can"
            Expect.isNonEmpty (connectionsTo canPort) "connected while running"
            let! status, stopped = post http $"/v1/monitors/{canId}/stop" ""
            Expect.equal status 200 "stopped"
            let! _ = post http $"/v1/monitors/{pandaId}/stop" ""
            do! reading
            Expect.equal (List.last (types received)) "end" "the stream ends"
            TestBridge.waitFor "no connection left" 10.0 (fun () -> (connectionsTo canPort).IsEmpty)

            Expect.isEmpty
                (threadNames server.Process.Id |> List.filter (fun n -> n.StartsWith "cts-mon"))
                "no session thread left"

            let recordings = [ for r in stopped.GetProperty("recordings").EnumerateArray() -> r.GetString() ]
            Expect.isNonEmpty recordings "recorded"
            Expect.isFalse (Directory.Exists(Path.Combine(dataDir, "recordings", canId))) "nothing left behind"
            let files = [ for r in recordings -> Path.Combine(dataDir, "uploads", r) ]
            let! _, upload = get http $"/v1/uploads/{recordings.Head}"
            Expect.equal (upload.GetProperty("content_type").GetString()) "rlog" "an rlog upload"
            let schema = CtsLite.Capnp.Schema.cereal ()
            let layout = CtsLite.Logs.EventLayout.ofSchema schema |> Result.defaultWith failwith

            let info =
                CtsLite.Logs.LogInfo.compute schema layout CtsLite.Capnp.ReaderOptions.Default files
                |> Result.defaultWith (fun e -> failwith (CtsLite.Capnp.DecodeError.describe e))

            Expect.equal
                info.Events
                (stopped.GetProperty("counters").GetProperty("events").GetInt64())
                "every event received, once"

            Expect.equal (List.ofSeq info.EventCounts.Keys) [ "can" ] "only the session's service"
            can.Dispose()
        })

// The bridge's ports are fixed by the services' names: every test that binds them runs alone.
let all =
    testSequencedGroup "zmq bridge ports" (testList "monitors" [ apiTests; liveTest ])
