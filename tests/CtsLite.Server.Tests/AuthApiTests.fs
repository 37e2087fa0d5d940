/// Authentication, rate limits and the OpenAPI document, through the API in process (the
/// service helpers are RunTests').
module CtsLite.Server.Tests.AuthApiTests

open System
open System.IO
open System.Net
open System.Net.Http
open System.Text
open System.Text.Json
open System.Threading
open System.Threading.Tasks
open Microsoft.AspNetCore.Http
open Microsoft.AspNetCore.TestHost
open Microsoft.Extensions.Primitives
open Microsoft.Extensions.Time.Testing
open Microsoft.Extensions.Hosting
open Expecto
open CtsLite
open CtsLite.Server
open CtsLite.Tools
open CtsLite.Tests
open CtsLite.Server.Tests.RunTests

let private secret = "a-test-secret-that-is-long-enough-1234"

/// A service on a fixed clock whose requests are sent with a chosen remote address.
let private withServer (change: ServiceConfig -> ServiceConfig) (f: TestServer -> Task<unit>) = task {
    let dataDir = TestEnv.tempDir "auth"
    let store = EndpointTests.openStore dataDir
    let config = change (EndpointTests.configFor dataDir)
    // Mid-minute, so a test's requests all fall in one rate-limit window.
    let clock = FakeTimeProvider(DateTimeOffset(2026, 12, 1, 12, 0, 20, TimeSpan.Zero))
    let context = Startup.createContext config store clock
    use host = EndpointTests.startHost context Startup.configureApp
    do! f (host.GetTestServer())
    do! host.StopAsync()
    store.Dispose()
}

/// GET /v1/runs from `address`, with an Authorization header and X-Forwarded-For when given.
let private getRuns (server: TestServer) (address: string) (auth: string option) (forwarded: string option) =
    server.SendAsync(fun ctx ->
        ctx.Request.Method <- "GET"
        ctx.Request.Path <- PathString "/v1/runs"
        ctx.Connection.RemoteIpAddress <- IPAddress.Parse address

        match auth with
        | Some a -> ctx.Request.Headers.Authorization <- StringValues a
        | None -> ()

        match forwarded with
        | Some f -> ctx.Request.Headers["X-Forwarded-For"] <- StringValues f
        | None -> ())

let private b64 (s: string) =
    Convert.ToBase64String(Encoding.UTF8.GetBytes s).TrimEnd('=').Replace('+', '-').Replace('/', '_')

/// A token of exactly this header and payload text, signed with `secret`.
let private signed (header: string) (payload: string) =
    let h, p = b64 header, b64 payload
    use hmac = new Security.Cryptography.HMACSHA256(Encoding.UTF8.GetBytes secret)
    let s = hmac.ComputeHash(Encoding.UTF8.GetBytes $"{h}.{p}")
    $"{h}.{p}.{Convert.ToBase64String(s).TrimEnd('=').Replace('+', '-').Replace('/', '_')}"

let private bodyOf (ctx: Microsoft.AspNetCore.Http.HttpContext) =
    use reader = new StreamReader(ctx.Response.Body)
    reader.ReadToEnd()

let private hostileTokens =
    testList "hostile tokens" [
        testCaseTask "a malformed token is a 401 with a reason, never a 500; schemes ignore case" (fun () ->
            withServer
                (fun c -> {
                    c with
                        JwtSecret = Some secret
                        JwtAudience = Some "cts"
                })
                (fun server -> task {
                    let exp = DateTimeOffset(2026, 12, 1, 13, 0, 0, TimeSpan.Zero).ToUnixTimeSeconds()

                    for name, token in
                        [
                            "[1] header (the curl reproduction)", "WzFd.e30.AAAA"
                            "string header", signed "\"x\"" "{}"
                            "number header", signed "1" "{}"
                            "null header", signed "null" "{}"
                            "array payload", signed """{"alg":"HS256"}""" "[1]"
                            "exp beyond int64", signed """{"alg":"HS256"}""" """{"exp":1e30,"aud":"cts"}"""
                            "duplicate alg",
                            signed """{"alg":"HS256","alg":"HS256"}""" $"""{{"exp":{exp},"aud":"cts"}}"""
                        ] do
                        let! ctx = getRuns server "192.0.2.10" (Some $"JWT {token}") None
                        Expect.equal ctx.Response.StatusCode 401 name
                        Expect.stringContains (bodyOf ctx) "malformed" name

                    let good =
                        signed """{"alg":"HS256"}""" $"""{{"sub":"ann","exp":{exp},"aud":["x","cts"]}}"""

                    for scheme in [ "JWT"; "jwt"; "Jwt"; "bearer"; "Bearer" ] do
                        let! ctx = getRuns server "192.0.2.11" (Some $"{scheme} {good}") None
                        Expect.equal ctx.Response.StatusCode 200 $"{scheme} with aud as an array"
                }))
        testCaseTask "failed authentications are limited per address before any token is read" (fun () ->
            withServer
                (fun c -> {
                    c with
                        JwtSecret = Some secret
                        RateLimitPerMinute = 5
                })
                (fun server -> task {
                    let exp = DateTimeOffset(2026, 12, 1, 13, 0, 0, TimeSpan.Zero).ToUnixTimeSeconds()
                    let good = signed """{"alg":"HS256"}""" $"""{{"sub":"ann","exp":{exp}}}"""
                    let statuses = ResizeArray()

                    for _ in 1..8 do
                        let! ctx = getRuns server "198.51.100.1" (Some "JWT WzFd.e30.AAAA") None
                        statuses.Add ctx.Response.StatusCode

                    Expect.equal
                        (List.ofSeq statuses)
                        [ 401; 401; 401; 401; 401; 429; 429; 429 ]
                        "five failures, then 429"

                    let! limited = getRuns server "198.51.100.1" (Some $"JWT {good}") None
                    Expect.equal limited.Response.StatusCode 429 "the address is refused before its token is read"
                    Expect.isTrue (limited.Response.Headers.ContainsKey "Retry-After") "Retry-After"

                    let! other = getRuns server "198.51.100.2" (Some $"JWT {good}") None
                    Expect.equal other.Response.StatusCode 200 "another address is not slowed by those failures"

                    // Without trusted proxies, X-Forwarded-For names nobody: the connection is the caller.
                    let! spoofed =
                        getRuns server "198.51.100.1" (Some $"JWT {good}") (Some "203.0.113.9")

                    Expect.equal spoofed.Response.StatusCode 429 "X-Forwarded-For is not trusted by default"
                }))
        testCaseTask "behind a trusted proxy, X-Forwarded-For names the remote address" (fun () ->
            withServer
                (fun c -> {
                    c with
                        JwtSecret = Some secret
                        RateLimitPerMinute = 3
                        TrustedProxies = [ Net.IPNetwork.Parse "10.0.0.0/8" ]
                })
                (fun server -> task {
                    for _ in 1..3 do
                        let! ctx = getRuns server "10.1.2.3" None (Some "203.0.113.7, 10.9.9.9")
                        Expect.equal ctx.Response.StatusCode 401 "a failure of 203.0.113.7"

                    let! limited = getRuns server "10.1.2.3" None (Some "203.0.113.7")
                    Expect.equal limited.Response.StatusCode 429 "203.0.113.7 is over its failures"

                    let! neighbour = getRuns server "10.1.2.3" None (Some "203.0.113.8")
                    Expect.equal neighbour.Response.StatusCode 401 "the same proxy, another client"
                }))
        test "an address over its failures is logged once per window" {
            let lines = ResizeArray<string>()

            let logger = {
                new Microsoft.Extensions.Logging.ILogger<AuthFailures> with
                    member _.BeginScope _ = null
                    member _.IsEnabled _ = true

                    member _.Log(_, _, state, error, format) = lines.Add(format.Invoke(state, error))
            }

            let clock = FakeTimeProvider(DateTimeOffset(2026, 12, 1, 12, 0, 5, TimeSpan.Zero))
            let failures = AuthFailures(RateLimiter(3, clock), logger)

            for _ in 1..50 do
                failures.Record "192.0.2.1"

            Expect.equal lines.Count 1 "one line for 50 failures"
            Expect.stringContains lines[0] "192.0.2.1" "names the address"
            Expect.isSome (failures.Refused "192.0.2.1") "refused"
            clock.Advance(TimeSpan.FromMinutes 1.0)
            Expect.isNone (failures.Refused "192.0.2.1") "a new window"
        }
    ]

let authTests =
    testList "auth and limits" [
        hostileTokens
        testCaseTask "with a secret: anonymous endpoints stay open, the rest need a valid token" (fun () ->
            withConfig
                []
                1
                (fun c -> {
                    c with
                        JwtSecret = Some secret
                        JwtAudience = Some "cts"
                })
                (fun _ client -> task {
                    let! health = client.GetAsync "/v1/health"
                    Expect.equal health.StatusCode HttpStatusCode.OK "health is anonymous"
                    let! caps = client.GetAsync "/v1/capabilities"
                    Expect.equal caps.StatusCode HttpStatusCode.OK "capabilities are anonymous"

                    let call (auth: string option) = task {
                        use request = new HttpRequestMessage(HttpMethod.Get, "/v1/runs")

                        match auth with
                        | Some a -> request.Headers.TryAddWithoutValidation("Authorization", a) |> ignore
                        | None -> ()

                        return! client.SendAsync request
                    }

                    let now = DateTimeOffset.UtcNow

                    let good =
                        Security.Jwt.create secret "alice" now (now.AddHours 1.0) (Some "cts") None

                    let! withJwt = call (Some $"JWT {good}")
                    Expect.equal withJwt.StatusCode HttpStatusCode.OK "JWT <token>"
                    let! withBearer = call (Some $"Bearer {good}")
                    Expect.equal withBearer.StatusCode HttpStatusCode.OK "Bearer <token>"

                    let header =
                        Convert.ToBase64String(Encoding.UTF8.GetBytes """{"alg":"none"}""").TrimEnd('=')

                    let payload = good.Split('.')[1]

                    for name, auth, expected in
                        [
                            "no token", None, "needs a token"
                            "wrong scheme", Some $"Basic {good}", "needs a token"
                            "alg none", Some $"JWT {header}.{payload}.", "algorithm 'none'"
                            "wrong secret",
                            Some
                                $"""JWT {Security.Jwt.create (secret + "!") "alice" now (now.AddHours 1.0) (Some "cts") None}""",
                            "signature"
                            "expired",
                            Some
                                $"""JWT {Security.Jwt.create secret "alice" (now.AddDays -2.0) (now.AddDays -1.0) (Some "cts") None}""",
                            "expired"
                            "wrong audience",
                            Some
                                $"""JWT {Security.Jwt.create secret "alice" now (now.AddHours 1.0) (Some "other") None}""",
                            "audience"
                        ] do
                        let! response = call auth
                        let! p = EndpointTests.expectProblem response 401
                        Expect.stringContains (p.GetProperty("detail").GetString()) expected name
                        Expect.isTrue (response.Headers.WwwAuthenticate.Count > 0) $"{name}: WWW-Authenticate"
                        let! body = response.Content.ReadAsStringAsync()
                        Expect.isFalse (body.Contains secret) "the secret never appears"

                        match auth with
                        | Some a -> Expect.isFalse (body.Contains(a.Substring(a.IndexOf ' ' + 1))) "nor the token"
                        | None -> ()
                }))
        testCaseTask "rate limiting: 429 with Retry-After once the minute's requests are used" (fun () ->
            withConfig [] 1 (fun c -> { c with RateLimitPerMinute = 3 }) (fun _ client -> task {
                let statuses = ResizeArray()

                for _ in 1..5 do
                    let! r = client.GetAsync "/v1/version"
                    statuses.Add(int r.StatusCode)

                    if int r.StatusCode = 429 then
                        Expect.isTrue r.Headers.RetryAfter.Delta.HasValue "Retry-After"

                // The window may roll over mid-test; at least the 4th or 5th call is limited.
                Expect.equal (statuses |> Seq.take 3 |> List.ofSeq) [ 200; 200; 200 ] "within the limit"
                Expect.contains statuses 429 "over the limit"
            }))
    ]

let openApiTests =
    testList "OpenAPI" [
        test "docs/openapi.json is the document the route table generates" {
            let committed = Path.Combine(TestEnv.repoRoot, "docs", "openapi.json")
            let generated = (ApiDocument.ofEndpoints Routes.endpoints).Text

            Expect.isTrue (File.Exists committed) "docs/openapi.json exists (dotnet fsi build.fsx openapi writes it)"

            Expect.equal
                (File.ReadAllText committed)
                generated
                "docs/openapi.json is out of date: run `dotnet fsi build.fsx openapi` and commit it"
        }
        testCaseTask "the document lists exactly the route table, with security and schemas" (fun () ->
            withRuns [] 1 (fun _ client -> task {
                let! doc = getJson client "/v1/openapi.json"
                Expect.equal (doc.GetProperty("openapi").GetString()) "3.1.0" "version"

                let documented =
                    [
                        for path in doc.GetProperty("paths").EnumerateObject() do
                            for op in path.Value.EnumerateObject() -> op.Name.ToUpperInvariant(), path.Name
                    ]
                    |> List.sort

                let table =
                    Routes.endpoints |> List.map (fun e -> e.Method, e.Template) |> List.sort

                Expect.equal documented table "every endpoint, nothing else"

                for e in Routes.endpoints do
                    let op =
                        doc.GetProperty("paths").GetProperty(e.Template).GetProperty(e.Method.ToLowerInvariant())

                    let secured = op.GetProperty("security").GetArrayLength() > 0
                    Expect.equal secured (e.Auth <> AuthRequirement.Anonymous) $"{e.Method} {e.Template} security"

                let schemas = doc.GetProperty("components").GetProperty("schemas")
                let runRequest = schemas.GetProperty("RunRequest").GetProperty("properties")
                Expect.isTrue (runRequest.TryGetProperty("tool_id") |> fst) "snake_case properties"

                let! page = client.GetStringAsync "/docs"

                for e in Routes.endpoints do
                    Expect.stringContains page (Net.WebUtility.HtmlEncode e.Template) e.Template

                Expect.isFalse (page.Contains "<script") "no scripts"
                Expect.isFalse (page.Contains "src=\"http") "no external assets"
            }))
    ]
