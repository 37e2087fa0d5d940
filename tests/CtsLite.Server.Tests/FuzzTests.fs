/// A bounded, seeded fuzzing pass against the real pipeline in process: malformed tokens,
/// multipart and JSON bodies, query strings, Range headers and paths. Whatever arrives, the
/// answer is not a 500, is small, and the service logs no stack trace.
module CtsLite.Server.Tests.FuzzTests

open System
open System.Collections.Concurrent
open System.IO
open System.Net.Http
open System.Text
open System.Threading.Tasks
open Microsoft.AspNetCore.Hosting
open Microsoft.AspNetCore.TestHost
open Microsoft.Extensions.DependencyInjection
open Microsoft.Extensions.Hosting
open Microsoft.Extensions.Logging
open Expecto
open CtsLite.Server
open CtsLite.Tests

/// Every log entry of the service, with its exception when there is one.
type private Capture() =
    let entries = ConcurrentQueue<string * exn option>()
    member _.Entries = entries

    interface ILoggerProvider with
        member _.CreateLogger _ = {
            new ILogger with
                member _.BeginScope _ = null
                member _.IsEnabled _ = true

                member _.Log(_, _, state, error, format) =
                    entries.Enqueue(format.Invoke(state, error), Option.ofObj error)
        }

        member _.Dispose() = ()

let private secret = "a-fuzzing-secret-that-is-long-enough-42"

/// Text made of the characters that break parsers most often.
let private noise (random: Random) (length: int) =
    let alphabet = "aZ09.-_~/\\\"'{}[]:,=;% \t\r\n\000é€😀<>&?#+*"
    String(Array.init length (fun _ -> alphabet[random.Next alphabet.Length]))

let private b64 (bytes: byte array) =
    Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_')

let private tokens (random: Random) = [
    let json = [|
        "[1]"
        "null"
        "\"x\""
        "1"
        "1e999"
        "{}"
        """{"alg":"HS256"}"""
        """{"alg":"HS256","alg":"none"}"""
        """{"exp":1e308}"""
        """{"exp":"x","nbf":[]}"""
        """{"aud":[[]],"exp":99999999999999999999}"""
        "{"
    |]

    for _ in 1..400 do
        let part () =
            match random.Next 5 with
            | 0 -> noise random (random.Next 40)
            | 1 -> b64 (Encoding.UTF8.GetBytes(noise random (random.Next 60)))
            | 2 -> String('A', random.Next 5000)
            | _ -> b64 (Encoding.UTF8.GetBytes json[random.Next json.Length])

        let scheme = [| "JWT "; "jwt "; "Bearer "; "Basic "; ""; "JWT  " |][random.Next 6]
        // Mostly the three parts of a token, so the parts get parsed, not just counted.
        let parts = if random.Next 4 = 0 then random.Next 5 else 3
        scheme + String.Join(".", List.init parts (fun _ -> part ()))
]

let private jsonBodies (random: Random) = [
    let valid =
        """{"tool_id":"log-summary","params":{"x":1},"input":{"type":"path","value":"synthetic/default.rlog.zst"},"name":"n"}"""

    for _ in 1..150 do
        match random.Next 6 with
        | 0 -> valid.Substring(0, random.Next valid.Length)
        | 1 ->
            let chars = valid.ToCharArray()

            for _ in 1..3 do
                chars[random.Next chars.Length] <- (noise random 1)[0]

            String chars
        | 2 -> String('[', 5000) + String(']', 5000)
        | 3 -> $"""{{"tool_id":{noise random 20 |> Text.Json.JsonSerializer.Serialize},"input":{random.Next()}}}"""
        | 4 ->
            """{"tool_id":"log-summary","params":{"a":1e999,"b":-0,"c":[[[[]]]]},"input":{"type":"uploads","value":[1,null,{}]}}"""
        | _ -> noise random (random.Next 200)
]

let private multipartBodies (random: Random) = [
    for _ in 1..100 ->
        let boundary =
            if random.Next 3 = 0 then
                noise random (random.Next 100)
            else
                "b"

        let contentType =
            [|
                $"multipart/form-data; boundary={boundary}"
                "multipart/form-data"
                $"multipart/form-data; boundary=\"{boundary}"
                "multipart/mixed; boundary=b"
                noise random 30
            |][random.Next 5]

        let body =
            match random.Next 4 with
            | 0 ->
                $"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"{noise random 10}\"\r\n\r\n{noise random 50}"
            | 1 -> $"--b\r\n{noise random (random.Next 300)}\r\n\r\nx\r\n--b--\r\n"
            | 2 -> $"--b\r\nContent-Disposition: {noise random 40}\r\n\r\nhello\r\n--b--\r\n"
            | _ -> noise random (random.Next 400)

        contentType, Encoding.UTF8.GetBytes body
]

let private queries (random: Random) = [
    for _ in 1..150 ->
        let value () =
            Uri.EscapeDataString(
                match random.Next 4 with
                | 0 -> string (random.Next(-1000, 100000))
                | 1 -> noise random (random.Next 30)
                | 2 -> "2026-01-01T00:00:00.0000000Z|" + noise random 8
                | _ -> ""
            )

        let key =
            [| "limit"; "cursor"; "status"; "tool_id"; "format"; "after"; noise random 5 |][random.Next 7]

        $"/v1/runs?{Uri.EscapeDataString key}={value ()}&limit={value ()}"
]

let private ranges (random: Random) = [
    for _ in 1..100 ->
        match random.Next 6 with
        | 0 -> $"bytes={random.Next(-50, 5000)}-{random.Next(-50, 5000)}"
        | 1 -> $"bytes=-{random.Next 100000}"
        | 2 -> $"bytes={random.Next 100}-"
        | 3 -> $"bytes=0-1,{random.Next 100}-{random.Next 100},5-"
        | 4 -> "bytes=99999999999999999999-"
        | _ -> noise random (random.Next 40)
]

let all =
    testList "fuzzing" [
        testCaseTask "malformed requests get small non-500 answers and no stack trace in the log" (fun () -> task {
            let random = Random 20261201
            let dataDir = TestEnv.tempDir "fuzz"
            let store = EndpointTests.openStore dataDir

            let config = {
                EndpointTests.configFor dataDir with
                    JwtSecret = Some secret
                    RateLimitPerMinute = 0
                    InputRoots = [ Path.Combine(TestEnv.sharedDir (), "data", "rlogs") ]
            }

            let capture = new Capture()
            let context = Startup.createContext config store TimeProvider.System

            use host =
                HostBuilder()
                    .ConfigureLogging(fun l ->
                        l.ClearProviders().AddProvider(capture).SetMinimumLevel(LogLevel.Debug)
                        |> ignore)
                    .ConfigureWebHost(fun wb ->
                        wb
                            .UseTestServer()
                            .ConfigureServices(Startup.configureServices context)
                            .Configure(Startup.configureApp)
                        |> ignore)
                    .Start()

            use client = host.GetTestClient()
            let now = DateTimeOffset.UtcNow

            let good =
                CtsLite.Security.Jwt.create secret "fuzz" now (now.AddHours 1.0) None None

            let deadline = DateTime.UtcNow.AddSeconds 50.0
            let mutable sent = 0

            let send (request: HttpRequestMessage) (what: string) = task {
                if DateTime.UtcNow < deadline then
                    use! response = client.SendAsync request
                    let! body = response.Content.ReadAsByteArrayAsync()
                    sent <- sent + 1
                    Expect.isLessThan (int response.StatusCode) 500 $"{what}: {Encoding.UTF8.GetString body}"
                    Expect.isLessThan body.Length 65_536 $"{what}: a small answer"
            }

            let authorized (request: HttpRequestMessage) =
                request.Headers.TryAddWithoutValidation("Authorization", $"JWT {good}")
                |> ignore

                request

            // An artifact to ask ranges of.
            let! created =
                client.SendAsync(
                    authorized (
                        new HttpRequestMessage(
                            HttpMethod.Post,
                            "/v1/runs",
                            Content =
                                new StringContent(
                                    """{"tool_id":"log-summary","input":{"type":"path","value":"synthetic/default.rlog.zst"}}""",
                                    Encoding.UTF8,
                                    "application/json"
                                )
                        )
                    )
                )

            let! c = EndpointTests.parse created
            let runId = c.GetProperty("run_id").GetString()
            let mutable artifact = None

            while artifact.IsNone && DateTime.UtcNow < deadline do
                let! listing =
                    client.SendAsync(
                        authorized (new HttpRequestMessage(HttpMethod.Get, $"/v1/runs/{runId}/artifacts"))
                    )

                let! l = EndpointTests.parse listing

                match l.TryGetProperty "artifacts" with
                | true, a when a.GetArrayLength() > 0 ->
                    artifact <- Some(a.Item(0).GetProperty("download_url").GetString())
                | _ -> do! Task.Delay 100

            for token in tokens random do
                let request = new HttpRequestMessage(HttpMethod.Get, "/v1/runs")
                request.Headers.TryAddWithoutValidation("Authorization", token) |> ignore
                do! send request "token"

            for body in jsonBodies random do
                let request =
                    authorized (
                        new HttpRequestMessage(
                            HttpMethod.Post,
                            "/v1/runs",
                            Content = new StringContent(body, Encoding.UTF8, "application/json")
                        )
                    )

                do! send request $"JSON {body.Substring(0, min 80 body.Length)}"

            for contentType, body in multipartBodies random do
                let request = authorized (new HttpRequestMessage(HttpMethod.Post, "/v1/uploads"))
                request.Content <- new ByteArrayContent(body)

                request.Content.Headers.TryAddWithoutValidation("Content-Type", contentType)
                |> ignore

                do! send request $"multipart {contentType}"

            for query in queries random do
                do! send (authorized (new HttpRequestMessage(HttpMethod.Get, query))) $"query {query}"

            match artifact with
            | Some url ->
                for range in ranges random do
                    let request = authorized (new HttpRequestMessage(HttpMethod.Get, url))
                    request.Headers.TryAddWithoutValidation("Range", range) |> ignore
                    do! send request $"range {range}"
            | None -> failtest "the run made no artifact to ask ranges of"

            for _ in 1..100 do
                let path =
                    "/v1/"
                    + String.Join(
                        "/",
                        List.init (random.Next(1, 4)) (fun _ ->
                            Uri.EscapeDataString((noise random 12).Replace("\000", "")))
                    )

                do! send (authorized (new HttpRequestMessage(HttpMethod.Get, path))) $"path {path}"

            Expect.isGreaterThan sent 500 $"the pass sent {sent} requests in its time"

            let traces =
                capture.Entries
                |> Seq.filter (fun (message, error) -> error.IsSome || message.Contains "   at ")
                |> List.ofSeq

            Expect.isGreaterThan capture.Entries.Count sent "every request was logged (the capture works)"
            Expect.isEmpty traces "no stack trace in the service's log"
            do! host.StopAsync()
            store.Dispose()
        })
    ]
