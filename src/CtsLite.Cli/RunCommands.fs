namespace CtsLite.Cli

open System
open System.IO
open System.Threading
open Argu
open CtsLite
open CtsLite.Tools
open FsToolkit.ErrorHandling

/// `cts tools` and `cts run --local`: the tool catalog in this process.
[<RequireQualifiedAccess>]
module RunCommands =

    /// One descriptor with its parameters, for people.
    let private describe (ctx: CommandContext) (d: ToolDescriptor) =
        ctx.Out.WriteLine $"{d.Id} ({ToolCategory.name d.Category}): {d.Name}"
        ctx.Out.WriteLine $"  {d.Description}"
        let inputs = String.Join(", ", d.InputTypes)
        let outputs = String.Join(", ", d.OutputTypes)
        ctx.Out.WriteLine $"  input: {inputs}; output: {outputs}"

        for p in d.Parameters do
            let def =
                match p.Default with
                | Some v -> $" = {Parameters.render v}"
                | None when p.Required -> " (required)"
                | None -> ""

            let choices =
                match p.Choices with
                | [] -> ""
                | c -> " [" + String.Join("|", c) + "]"

            ctx.Out.WriteLine $"    {p.Name}: {ParameterType.name p.Type}{def}{choices}  {p.Description}"

        ctx.Out.WriteLine()

    /// `cts tools`: every tool with its parameters, then the monitors `cts mon run` runs
    /// (`--json`: the tools' capability objects, as `/v1/capabilities` serves them).
    let tools (ctx: CommandContext) : int =
        if ctx.Json then
            let all = Catalog.descriptors |> List.map Api.toolCapability
            let options = ApiJson.createOptions ()
            options.WriteIndented <- true
            ctx.Out.WriteLine(Text.Json.JsonSerializer.Serialize(all, options))
        else
            for d in Catalog.descriptors do
                describe ctx d

            ctx.Out.WriteLine "Monitors (cts mon run <monitor> --replay <log>):"
            ctx.Out.WriteLine()

            for d in CtsLite.Monitors.Catalog.descriptors do
                describe ctx d

        ExitCode.Ok

    /// Every `-p key=value`, parsed.
    let private paramsOf (args: ParseResults<RunArgs>) =
        args
        |> Results.choose (function
            | Param p -> Some p
            | _ -> None)
        |> List.traverseResultM Params.parse

    let private outDirOf (args: ParseResults<RunArgs>) =
        args
        |> Results.tryPick (function
            | Out_Dir d -> Some d
            | _ -> None)

    /// A terminal progress bar on stderr; nothing when stderr is not a terminal.
    type private ProgressBar(err: TextWriter, enabled: bool) =
        let mutable last = -1

        member _.Report(pct: float) =
            let p = int (Math.Clamp(pct, 0.0, 100.0))

            if enabled && p <> last then
                last <- p
                let filled = p * 30 / 100
                err.Write $"""{'\r'}[{String('#', filled)}{String(' ', 30 - filled)}] {p, 3}%%"""

        member _.Finish() =
            if enabled && last >= 0 then
                err.Write("\r" + String(' ', 40) + "\r")
                last <- -1

    /// Prints the error; the service's exit code.
    let internal fail (ctx: CommandContext) (error: ClientError) =
        ctx.Err.WriteLine $"error: {Client.describe error}"
        Client.exitCode error

    /// The error an unsuccessful answer is.
    let internal problem (response: Net.Http.HttpResponseMessage) = task {
        let! body = response.Content.ReadAsStringAsync()
        let detail = Client.problemDetail body

        return ClientError.Status(response.RequestMessage.RequestUri.ToString(), int response.StatusCode, detail)
    }

    /// Uploads a local file; returns its upload id.
    let internal upload (ctx: CommandContext) (path: string) = task {
        use stream = File.OpenRead path
        use content = new Net.Http.StreamContent(stream)
        content.Headers.Add("X-Filename", Path.GetFileName path)
        content.Headers.ContentType <- Net.Http.Headers.MediaTypeHeaderValue "application/octet-stream"
        use! response = ctx.Http.Value.PostAsync($"{ctx.Url}/v1/uploads", content)

        if response.IsSuccessStatusCode then
            let! body = response.Content.ReadAsStringAsync()
            use doc = Text.Json.JsonDocument.Parse body
            return Ok(doc.RootElement.GetProperty("upload_id").GetString())
        else
            let! e = problem response
            return Error e
    }

    /// Parameters as the service takes them: a local file given for one of `fileParams` is
    /// uploaded first and named by its upload id; every other value goes as written.
    let internal serviceParameters
        (ctx: CommandContext)
        (fileParams: string list)
        (given: (string * ParameterInput) list)
        : Threading.Tasks.Task<Result<Collections.Generic.Dictionary<string, obj>, ClientError>> = task {
        let mutable failure = None
        let parameters = Collections.Generic.Dictionary<string, obj>()

        for name, value in given do
            match value with
            | ParameterInput.Text v when List.contains name fileParams && File.Exists v && failure.IsNone ->
                match! upload ctx v with
                | Ok id -> parameters[name] <- box id
                | Error e -> failure <- Some e
            | ParameterInput.Text v -> parameters[name] <- box v
            | _ -> ()

        return
            match failure with
            | Some e -> Error e
            | None -> Ok parameters
    }

    /// `cts run <tool> <input>` on the service: local files (the input and file parameters) are
    /// uploaded, other inputs are paths on the service's side; the run's log is followed (SSE) to
    /// its end and every artifact is downloaded into `--out-dir`.
    let private remote (ctx: CommandContext) (args: ParseResults<RunArgs>) (toolId: string) (input: string) : int =
        let work = task {
            match paramsOf args with
            | Error bad ->
                ctx.Err.WriteLine $"error: {bad}"
                return ExitCode.ClientError
            | Ok given ->

                let fileParams =
                    Catalog.tryFind toolId
                    |> Option.map (fun t ->
                        t.Descriptor.Parameters
                        |> List.filter (fun p -> p.Type = ParameterType.File)
                        |> List.map _.Name)
                    |> Option.defaultValue []

                // Local files go up first; everything else is passed as written.
                let! uploaded = serviceParameters ctx fileParams given

                let mutable failure =
                    match uploaded with
                    | Error e -> Some e
                    | Ok _ -> None

                let parameters =
                    match uploaded with
                    | Ok p -> p
                    | Error _ -> Collections.Generic.Dictionary<string, obj>()

                let! inputSpec = task {
                    if failure.IsSome then
                        return None
                    elif File.Exists input then
                        match! upload ctx input with
                        | Ok id -> return Some("upload", id)
                        | Error e ->
                            failure <- Some e
                            return None
                    else
                        return Some("path", input)
                }

                match failure, inputSpec with
                | Some e, _ -> return fail ctx e
                | _, None -> return ExitCode.ClientError
                | None, Some(kind, value) ->
                    let request: Api.RunRequest = {
                        ToolId = toolId
                        Params = Some(Text.Json.JsonSerializer.SerializeToElement parameters)
                        Input =
                            Some(
                                InputRef.toDto (
                                    if kind = "upload" then
                                        InputRef.Upload value
                                    else
                                        InputRef.Path value
                                )
                            )
                        Inputs = None
                        Name = None
                    }

                    let body = Text.Json.JsonSerializer.Serialize(request, ApiJson.options)

                    use content =
                        new Net.Http.StringContent(body, Text.Encoding.UTF8, "application/json")

                    use! created = ctx.Http.Value.PostAsync($"{ctx.Url}/v1/runs", content)

                    if not created.IsSuccessStatusCode then
                        let! e = problem created
                        return fail ctx e
                    else
                        let! createdBody = created.Content.ReadAsStringAsync()

                        let runId =
                            Text.Json.JsonDocument.Parse(createdBody).RootElement.GetProperty("run_id").GetString()

                        if not ctx.Json then
                            ctx.Err.WriteLine $"run {runId} queued on {ctx.Url}"

                        // Follow the log to its end.
                        use request =
                            new Net.Http.HttpRequestMessage(Net.Http.HttpMethod.Get, $"{ctx.Url}/v1/runs/{runId}/logs")

                        use! stream =
                            ctx.Http.Value.SendAsync(request, Net.Http.HttpCompletionOption.ResponseHeadersRead)

                        use! body = stream.Content.ReadAsStreamAsync()
                        use reader = new StreamReader(body)
                        let mutable final = ""
                        let mutable event = ""
                        let mutable line = ""
                        let! first = reader.ReadLineAsync()
                        line <- first

                        while not (isNull line) do
                            if line.StartsWith "event: " then
                                event <- line.Substring 7
                            elif line.StartsWith "data: " then
                                let data = line.Substring 6

                                match event with
                                | "log" when not ctx.Json ->
                                    use d = Text.Json.JsonDocument.Parse data
                                    let level = d.RootElement.GetProperty("level").GetString()
                                    let message = d.RootElement.GetProperty("message").GetString()
                                    ctx.Err.WriteLine $"{level}: {message}"
                                | "end" -> final <- data
                                | _ -> ()

                            let! next = reader.ReadLineAsync()
                            line <- next

                        if final = "" then
                            ctx.Err.WriteLine $"error: the log stream of run {runId} ended early"
                            return ExitCode.ServiceError
                        else
                            use finalDoc = Text.Json.JsonDocument.Parse final
                            let status = finalDoc.RootElement.GetProperty("status").GetString()

                            let outDir =
                                outDirOf args
                                |> Option.defaultWith (fun () -> Path.Combine("cts-out", $"{toolId}-{runId}"))
                                |> Path.GetFullPath

                            Directory.CreateDirectory outDir |> ignore
                            let downloaded = ResizeArray<string>()

                            if status = "completed" then
                                match! Client.getJson ctx.Http.Value ctx.Url $"/v1/runs/{runId}/artifacts" [] with
                                | Error e -> failure <- Some e
                                | Ok(_, list) ->
                                    use list = list

                                    for a in list.RootElement.GetProperty("artifacts").EnumerateArray() do
                                        let name = Path.GetFileName(a.GetProperty("filename").GetString())

                                        let! bytes =
                                            ctx.Http.Value.GetByteArrayAsync(
                                                ctx.Url + a.GetProperty("download_url").GetString()
                                            )

                                        do! File.WriteAllBytesAsync(Path.Combine(outDir, name), bytes)
                                        downloaded.Add name

                            match failure with
                            | Some e -> return fail ctx e
                            | None ->
                                if ctx.Json then
                                    ctx.Out.WriteLine final
                                else
                                    ctx.Out.WriteLine $"run {runId}: {status}"

                                    match finalDoc.RootElement.GetProperty("error").ValueKind with
                                    | Text.Json.JsonValueKind.String ->
                                        ctx.Out.WriteLine
                                            $"""error: {finalDoc.RootElement.GetProperty("error").GetString()}"""
                                    | _ -> ()

                                    if downloaded.Count > 0 then
                                        ctx.Out.WriteLine $"artifacts in {outDir}:"

                                        for d in downloaded do
                                            ctx.Out.WriteLine $"  {d}"

                                return
                                    (if status = "completed" then
                                         ExitCode.Ok
                                     else
                                         ExitCode.ServiceError)
        }

        try
            work.GetAwaiter().GetResult()
        with
        | :? Net.Http.HttpRequestException as e -> fail ctx (ClientError.Unreachable(ctx.Url, e.Message))
        | :? Threading.Tasks.TaskCanceledException -> fail ctx (ClientError.Unreachable(ctx.Url, "timed out"))

    /// `cts run --local <tool> <input> -p k=v... --out-dir DIR [--json]`.
    let run (ctx: CommandContext) (args: ParseResults<RunArgs>) : int =
        match
            args
            |> Results.pick (function
                | Target(t, i) -> Some(t, i)
                | _ -> None)
        with
        | toolId, input when Results.has Local args ->
            match paramsOf args with
            | Error bad ->
                ctx.Err.WriteLine $"error: {bad}"
                ExitCode.ClientError
            | Ok given ->

                let outDir =
                    outDirOf args
                    |> Option.defaultWith (fun () ->
                        Path.Combine("cts-out", $"""{toolId}-{DateTime.Now.ToString "yyyyMMdd-HHmmss"}"""))

                use cancel = new CancellationTokenSource()

                let onCancel =
                    ConsoleCancelEventHandler(fun _ e ->
                        e.Cancel <- true
                        cancel.Cancel())

                Console.CancelKeyPress.AddHandler onCancel
                let bar = ProgressBar(ctx.Err, not Console.IsErrorRedirected && not ctx.Json)

                let request = {
                    ToolRunner.request toolId (ToolInput.Path input) given outDir with
                        Progress = bar.Report
                        Log =
                            fun level line ->
                                match level with
                                | ToolLogLevel.Debug -> ()
                                | ToolLogLevel.Info when ctx.Json -> ()
                                | _ ->
                                    bar.Finish()
                                    ctx.Err.WriteLine $"{(string level).ToLowerInvariant()}: {line}"
                        Cancellation = cancel.Token
                }

                let result =
                    try
                        (ToolRunner.runAsync ToolRunner.StopGrace request).GetAwaiter().GetResult()
                    finally
                        Console.CancelKeyPress.RemoveHandler onCancel
                        bar.Finish()

                match result with
                | Ok run ->
                    let output = run.Output

                    if ctx.Json then
                        let local: Api.LocalRun = {
                            ToolId = toolId
                            Status = "completed"
                            Input = input
                            Params = Api.parameters run.Parameters
                            OutputDir = run.OutputDir
                            Artifacts = output.Artifacts
                            Summary = output.Summary
                            Warnings = output.Warnings
                        }

                        let options = ApiJson.createOptions ()
                        options.WriteIndented <- true
                        ctx.Out.WriteLine(Text.Json.JsonSerializer.Serialize(local, options))
                    else
                        ctx.Out.WriteLine output.Summary
                        ctx.Out.WriteLine $"artifacts in {run.OutputDir}:"

                        for a in output.Artifacts do
                            ctx.Out.WriteLine $"  {a}"

                    ExitCode.Ok
                | Error ToolError.Canceled ->
                    ctx.Err.WriteLine "canceled"
                    130
                | Error(ToolError.InvalidParameters errors) ->
                    for e in errors do
                        ctx.Err.WriteLine $"error: parameter {e.Parameter}: {e.Detail}"

                    ExitCode.ClientError
                | Error e ->
                    ctx.Err.WriteLine $"error: {ToolError.describe e}"
                    ExitCode.ClientError
        | toolId, input -> remote ctx args toolId input
