/// Hostile clients: malformed bodies get a 400 that says what is wrong, never a 500, and leave
/// nothing behind (the service helpers are RunTests').
module CtsLite.Server.Tests.HostileTests

open System
open System.IO
open System.Net
open System.Net.Http
open System.Net.Http.Headers
open System.Text
open Expecto
open CtsLite.Server
open CtsLite.Tests
open CtsLite.Server.Tests.RunTests

/// POST /v1/uploads with exactly this Content-Type and body.
let private upload (client: HttpClient) (contentType: string) (body: byte array) = task {
    use request = new HttpRequestMessage(HttpMethod.Post, "/v1/uploads")
    request.Content <- new ByteArrayContent(body)

    request.Content.Headers.TryAddWithoutValidation("Content-Type", contentType)
    |> ignore

    return! client.SendAsync request
}

let private multipart =
    testList "multipart" [
        testCaseTask "a malformed multipart body is a 400 naming the problem; nothing is kept" (fun () ->
            withRuns [] 1 (fun svc client -> task {
                let dbc = File.ReadAllText(TestEnv.generatedDbc "subaru_global_2017_generated.dbc")

                let part (boundary: string) (headers: string) (closing: bool) =
                    Encoding.ASCII.GetBytes(
                        $"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.dbc\"\r\n{headers}\r\n{dbc}\r\n"
                        + (if closing then $"--{boundary}--\r\n" else "")
                    )

                let long = String('b', 200)

                for name, contentType, body, expected in
                    [
                        "no boundary", "multipart/form-data", part "x" "" true, "boundary"
                        "a 200-character boundary", $"multipart/form-data; boundary={long}", part long "" true, "70"
                        "not multipart at all",
                        "multipart/form-data; boundary=zz",
                        Encoding.ASCII.GetBytes "hello",
                        "boundary"
                        "an unterminated part", "multipart/form-data; boundary=zz", part "zz" "" false, "ended"
                        "a part header over 16 KiB",
                        "multipart/form-data; boundary=zz",
                        part "zz" $"X-Pad: {String('p', 20_000)}\r\n" true,
                        "16 KiB"
                        "a broken media type",
                        "multipart/form-data; boundary=\"unclosed",
                        part "zz" "" true,
                        "boundary"
                    ] do
                    let! response = upload client contentType body
                    let! problem = EndpointTests.expectProblem response 400
                    Expect.stringContains (problem.GetProperty("detail").GetString()) expected name

                let uploads = Path.Combine(svc.Config.DataDir, "uploads")

                let left =
                    if Directory.Exists uploads then
                        Directory.GetFiles uploads
                    else
                        [||]

                Expect.isEmpty left "no file, not even a partial one, is left"

                // The well-formed body still works.
                let! good = upload client "multipart/form-data; boundary=zz" (part "zz" "" true)
                Expect.equal good.StatusCode HttpStatusCode.Created "a good multipart upload"
            }))
    ]

let private bounded =
    testList "bounded answers" [
        testCaseTask "a run name over 256 bytes and 60,000 unknown parameters get small 422s" (fun () ->
            withRuns [] 1 (fun _ client -> task {
                let longName =
                    $"""{{"tool_id":"log-summary","name":"{String('n', 300)}","input":{{"type":"path","value":"synthetic/default.rlog.zst"}}}}"""

                let! named = post client longName None
                let! p = EndpointTests.expectProblem named 422
                Expect.equal (p.GetProperty("errors").Item(0).GetProperty("pointer").GetString()) "/name" "the name"

                let many =
                    let ps = String.Join(",", [ for i in 1..60_000 -> $"\"p{i}\":1" ])
                    $"""{{"tool_id":"log-summary","params":{{{ps}}},"input":{{"type":"path","value":"synthetic/default.rlog.zst"}}}}"""

                let! response = post client many None
                Expect.equal (int response.StatusCode) 422 "422"
                let! body = response.Content.ReadAsStringAsync()
                Expect.isLessThan body.Length 4096 $"a small body ({body.Length} bytes)"
                Expect.stringContains body "more than 64 parameters" "says why"
            }))
        testCaseTask "GET /v1/runs is bounded in bytes: a page ends early and its cursor goes on" (fun () ->
            withRuns [] 1 (fun svc client -> task {
                // Runs with large parameters, stored directly (the API refuses values this long).
                let big = String('v', 100_000)

                for i in 1..60 do
                    let run = {
                        RunRecord.queued
                            "log-summary"
                            $"""{{"pad":"{big}"}}"""
                            (CtsLite.InputRef.Path "synthetic/default.rlog.zst")
                            (Some $"run {i}")
                            (DateTimeOffset.UtcNow.AddSeconds(float i)) with
                            Status = RunStatus.Completed
                    }

                    let! _ = svc.Runs.CreateRun(run, None, 100_000)
                    ()

                let seen = Collections.Generic.HashSet<string>()
                let mutable cursor: string option = None
                let mutable pages = 0
                let mutable go = true

                while go do
                    let url =
                        match cursor with
                        | Some c -> $"/v1/runs?limit=500&cursor={Uri.EscapeDataString c}"
                        | None -> "/v1/runs?limit=500"

                    let! response = client.GetAsync(url: string)
                    let! body = response.Content.ReadAsStringAsync()
                    Expect.isLessThan body.Length (5 * 1024 * 1024) $"page {pages} is bounded ({body.Length} bytes)"
                    let page = Text.Json.JsonDocument.Parse(body).RootElement
                    pages <- pages + 1

                    for r in page.GetProperty("runs").EnumerateArray() do
                        Expect.isTrue (seen.Add(r.GetProperty("run_id").GetString())) "no run twice"

                    match page.GetProperty("next_cursor").ValueKind with
                    | Text.Json.JsonValueKind.String -> cursor <- Some(page.GetProperty("next_cursor").GetString())
                    | _ -> go <- false

                Expect.equal seen.Count 60 "every run, over the pages"
                Expect.isGreaterThan pages 1 "more than one page for 6 MB of runs"
            }))
    ]

let all = testList "hostile clients" [ multipart; bounded ]
