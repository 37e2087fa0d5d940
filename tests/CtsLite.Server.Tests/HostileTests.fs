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

let all = testList "hostile clients" [ multipart ]
