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
open Microsoft.AspNetCore.TestHost
open Microsoft.Extensions.Hosting
open Expecto
open CtsLite
open CtsLite.Server
open CtsLite.Tools
open CtsLite.Tests
open CtsLite.Server.Tests.RunTests

let private secret = "a-test-secret-that-is-long-enough-1234"

let authTests =
    testList "auth and limits" [
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
                    Expect.equal secured (e.Auth = AuthRequirement.Token) $"{e.Method} {e.Template} security"

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
