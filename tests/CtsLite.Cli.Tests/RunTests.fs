/// `cts tools` and `cts run --local`.
module CtsLite.Cli.Tests.RunTests

open System
open System.IO
open System.Text
open System.Text.Json
open Expecto
open CtsLite.Cli
open CtsLite.Tests

let private cts (args: string list) =
    use err = new StringWriter()
    use out = new MemoryStream()
    let code = Program.run (Array.ofList args) out err
    code, Encoding.UTF8.GetString(out.ToArray()), err.ToString()

let all =
    testList "cts run and tools" [
        test "the argument types are a valid Argu structure (cts skips the check at start-up)" {
            Argu.ArgumentParser<CtsArgs>.CheckStructure()
        }
        test "cts token create mints a token the service accepts; no or a short secret is refused" {
            let secret = "cli-test-secret-long-enough-0123456789"
            use err = new StringWriter()
            use out = new StringWriter()

            let ctx: CommandContext = {
                Url = ""
                Json = false
                Quiet = false
                Color = false
                ErrColor = false
                Live = false
                Http = lazy (failtest "no HTTP for a token")
                Out = out
                OutStream = Stream.Null
                Err = err
            }

            let parser = Argu.ArgumentParser.Create<TokenCreateArgs>()

            let args =
                parser.ParseCommandLine [| "--sub"; "ci"; "--ttl"; "2h"; "--audience"; "cts" |]

            let code =
                TokenCommands.create ctx (fun name -> if name = "CTS_JWT_SECRET" then Some secret else None) args

            Expect.equal code 0 (err.ToString())
            let token = out.ToString().Trim()

            match
                CtsLite.Security.Jwt.validate
                    secret
                    {
                        Audience = Some "cts"
                        Issuer = None
                        ClockSkew = TimeSpan.Zero
                    }
                    DateTimeOffset.UtcNow
                    token
            with
            | Ok c ->
                Expect.equal c.Subject (Some "ci") "sub"
                Expect.isTrue (c.Expires > DateTimeOffset.UtcNow.AddMinutes 119.0) "2 hours"
            | Error e -> failtestf "%A" e

            Expect.equal (TokenCommands.create ctx (fun _ -> None) args) 1 "no secret"
            Expect.equal (TokenCommands.create ctx (fun _ -> Some "tiny-s3cr3t") args) 1 "short secret"
            Expect.isFalse (err.ToString().Contains "tiny-s3cr3t") "the secret is never printed"
        }
        test "cts tools --json lists exactly the catalog, with parameter schemas" {
            let code, out, err = cts [ "tools"; "--json" ]
            Expect.equal code 0 err
            let doc = JsonDocument.Parse(out).RootElement

            Expect.equal
                (doc.EnumerateArray()
                 |> Seq.map (fun t -> t.GetProperty("id").GetString())
                 |> List.ofSeq)
                (CtsLite.Tools.Catalog.descriptors |> List.map _.Id)
                "ids"

            let analyzer =
                doc.EnumerateArray()
                |> Seq.find (fun t -> t.GetProperty("id").GetString() = "cruise-control-analyzer")

            let speedMin = analyzer.GetProperty("parameters").GetProperty("speed_min")
            Expect.equal (speedMin.GetProperty("type").GetString()) "float" "type"
            Expect.equal (speedMin.GetProperty("default").GetDouble()) 55.0 "default"
        }
        test "cts tools --json prints exactly the documents /v1/capabilities serves" {
            Tests.withService (fun url ->
                use http = new Net.Http.HttpClient()
                let served = http.GetStringAsync($"{url}/v1/capabilities").Result
                let tools = Text.Json.Nodes.JsonNode.Parse(served)["tools"]
                let code, out, err = cts [ "tools"; "--json" ]
                Expect.equal code 0 err
                let printed = Text.Json.Nodes.JsonNode.Parse out

                Expect.isTrue
                    (Text.Json.Nodes.JsonNode.DeepEquals(tools, printed))
                    $"service and CLI documents differ:\n{tools.ToJsonString()}\n{printed.ToJsonString()}")
        }
        test "cts tools prints every tool and monitor with its parameters for people" {
            let code, out, _ = cts [ "tools" ]
            Expect.equal code 0 "exit"

            for d in CtsLite.Tools.Catalog.descriptors @ CtsLite.Monitors.Catalog.descriptors do
                Expect.stringContains out $"{d.Id}: {d.Name}" d.Id

                for p in d.Parameters do
                    Expect.isMatch out $"(?m)^{p.Name} +{CtsLite.Tools.ParameterType.name p.Type}" p.Name

            // A list default reads as -p takes it: an empty one as nothing, not as JSON.
            let addresses =
                CtsLite.Monitors.Catalog.descriptors
                |> List.find (fun d -> d.Id = "can_bus_check")
                |> _.Parameters
                |> List.find (fun p -> p.Name = "addresses")

            match addresses.Default with
            | Some(CtsLite.Tools.ParameterValue.List items) ->
                Expect.stringContains
                    out
                    $"""addresses list  {String.Join(",", items)} """
                    "can_bus_check's list default"
            | other -> failtestf "a list default expected, got %A" other
        }
        test "cts run --local runs the analyzer and reports its artifacts as JSON" {
            let dir = TestEnv.tempDir "cli-run"
            let log = Path.Combine(LogTests.rlogs (), "synthetic", "default.rlog.zst")

            let code, out, err =
                cts [
                    "run"
                    "--local"
                    "cruise-control-analyzer"
                    log
                    "-p"
                    "speed_min=55"
                    "--out-dir"
                    dir
                    "--json"
                ]

            Expect.equal code 0 err
            let doc = JsonDocument.Parse(out).RootElement
            Expect.equal (doc.GetProperty("status").GetString()) "completed" "status"
            Expect.equal (doc.GetProperty("params").GetProperty("speed_min").GetDouble()) 55.0 "typed params"

            for a in doc.GetProperty("artifacts").EnumerateArray() do
                Expect.isTrue (File.Exists(Path.Combine(dir, a.GetString()))) (a.GetString())

            Expect.stringContains (doc.GetProperty("summary").GetString()) "3 Set press(es)" "summary"
            let facts = doc.GetProperty "facts"
            Expect.equal (facts.GetProperty("set_presses").GetInt32()) 3 "the planted Set presses as a figure"

            Expect.equal
                (facts.EnumerateObject() |> Seq.map _.Name |> List.ofSeq)
                [ "set_presses"; "target_speed_events"; "marker_windows"; "can_frames" ]
                "facts in the summary line's order"
        }
        test "bad parameters exit 1 naming each one; unknown tools list the known ones" {
            let code, _, err =
                cts [
                    "run"
                    "--local"
                    "rlog-to-csv"
                    "x.zst"
                    "-p"
                    "window_dur=-1"
                    "-p"
                    "nope=1"
                ]

            Expect.equal code 1 "exit"
            Expect.stringContains err "parameter window_dur" "range"
            Expect.stringContains err "parameter nope" "unknown"

            let code, _, err = cts [ "run"; "--local"; "no-such-tool"; "x.zst" ]
            Expect.equal code 1 "exit"
            Expect.stringContains err "rlog-to-csv" "lists tools"

            let code, _, err =
                cts [
                    "run"
                    "--local"
                    "rlog-to-csv"
                    "/nonexistent/file.zst"
                    "--out-dir"
                    TestEnv.tempDir "cli-missing"
                ]

            Expect.equal code 1 "missing input exits 1"
            Expect.stringContains err "/nonexistent/file.zst" "names the input"
        }
    ]
