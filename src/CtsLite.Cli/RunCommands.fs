namespace CtsLite.Cli

open System
open System.IO
open System.Text.Json
open System.Threading
open System.Threading.Tasks
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

    /// Runs a command's requests; an unreachable service or a timeout is its error.
    let internal calling (ctx: CommandContext) (work: unit -> Task<int>) : int =
        try
            work().GetAwaiter().GetResult()
        with
        | :? Net.Http.HttpRequestException as e -> fail ctx (ClientError.Unreachable(ctx.Url, e.Message))
        | :? TaskCanceledException -> fail ctx (ClientError.Unreachable(ctx.Url, "timed out"))

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

    /// Follows a run's log (SSE) to its `end`, giving each line to `onLine` once: when the
    /// connection drops or the stream ends early (the service restarted) it resumes after the
    /// last line received (`Last-Event-ID`). The `end` event's run, or None when `stop` ended it.
    let internal follow
        (ctx: CommandContext)
        (runId: string)
        (onLine: JsonElement -> unit)
        (stop: CancellationToken)
        : Task<Result<string option, ClientError>> = task {
        let path = $"{ctx.Url}/v1/runs/{Uri.EscapeDataString runId}/logs"
        let mutable lastSeq = 0L
        let mutable final: string option = None
        let mutable failure = None
        let mutable drops = 0

        let retry (why: string) = task {
            drops <- drops + 1

            if drops > 30 then
                failure <- Some(ClientError.Unreachable(ctx.Url, why))
            else
                try
                    do! Task.Delay(min 5000 (200 * drops), stop)
                with :? OperationCanceledException ->
                    ()
        }

        while final.IsNone && failure.IsNone && not stop.IsCancellationRequested do
            let! dropped = task {
                try
                    use request = new Net.Http.HttpRequestMessage(Net.Http.HttpMethod.Get, path)
                    request.Headers.Accept.ParseAdd "text/event-stream"

                    if lastSeq > 0L then
                        request.Headers.TryAddWithoutValidation("Last-Event-ID", string lastSeq)
                        |> ignore

                    use! response =
                        ctx.Http.Value.SendAsync(request, Net.Http.HttpCompletionOption.ResponseHeadersRead, stop)

                    if not response.IsSuccessStatusCode then
                        let! e = problem response
                        failure <- Some e
                    else
                        use! body = response.Content.ReadAsStreamAsync(stop)
                        use reader = new StreamReader(body)
                        let mutable event = ""
                        let mutable id = 0L
                        let mutable go = true

                        while go do
                            let! line = reader.ReadLineAsync(stop)

                            if isNull line then
                                go <- false
                            elif line.StartsWith "event: " then
                                event <- line.Substring 7
                            elif line.StartsWith "id: " then
                                match Int64.TryParse(line.Substring 4) with
                                | true, n -> id <- n
                                | false, _ -> ()
                            elif line.StartsWith "data: " then
                                match event with
                                | "log" when id > lastSeq ->
                                    use d = JsonDocument.Parse(line.Substring 6)
                                    onLine d.RootElement
                                    lastSeq <- id
                                | "end" ->
                                    final <- Some(line.Substring 6)
                                    go <- false
                                | _ -> ()

                    return false
                with
                | :? OperationCanceledException when stop.IsCancellationRequested -> return false
                | :? IOException
                | :? Net.Http.HttpRequestException -> return true
            }

            if final.IsNone && failure.IsNone && not stop.IsCancellationRequested then
                do!
                    retry (
                        if dropped then
                            "the log stream kept dropping"
                        else
                            "the log stream kept ending early"
                    )

        return
            match failure with
            | Some e -> Error e
            | None -> Ok final
    }

    /// Downloads one artifact (the `/v1/artifacts/{id}` JSON) to `target` through `target.part`,
    /// resuming a partial file with `Range`/`If-Range`, checked against its SHA-256.
    let internal fetchArtifact
        (ctx: CommandContext)
        (artifact: JsonElement)
        (target: string)
        : Task<Result<int64, string>> = task {
        let sha = artifact.GetProperty("sha256").GetString()
        let url = ctx.Url + artifact.GetProperty("download_url").GetString()
        let part = target + ".part"
        let have = if File.Exists part then FileInfo(part).Length else 0L
        use request = new Net.Http.HttpRequestMessage(Net.Http.HttpMethod.Get, url)

        if have > 0L then
            request.Headers.Range <- Net.Http.Headers.RangeHeaderValue(Nullable have, Nullable())
            request.Headers.TryAddWithoutValidation("If-Range", $"\"{sha}\"") |> ignore

        use! response =
            ctx.Http.Value.SendAsync(request, Net.Http.HttpCompletionOption.ResponseHeadersRead)

        if not response.IsSuccessStatusCode then
            let! e = problem response
            return Error(Client.describe e)
        else
            let resumed = int response.StatusCode = 206

            do! task {
                use file =
                    new FileStream(part, (if resumed then FileMode.Append else FileMode.Create), FileAccess.Write)

                use! body = response.Content.ReadAsStreamAsync()
                do! body.CopyToAsync file
            }

            let actual =
                use s = File.OpenRead part
                Convert.ToHexString(Security.Cryptography.SHA256.HashData s).ToLowerInvariant()

            if actual <> sha then
                File.Delete part
                return Error $"{target}: the bytes received do not match the artifact's SHA-256; run the command again"
            else
                File.Move(part, target, true)
                return Ok(if resumed then have else 0L)
    }

    /// The exit code of a run's final state: 0 completed, 3 failed, 4 canceled.
    let exitOf (status: string) : int =
        match status with
        | "completed" -> ExitCode.Ok
        | "failed" -> 3
        | "canceled" -> 4
        | _ -> ExitCode.ServiceError

    /// What a remote run reads: a local file is uploaded; a local segment folder or route has
    /// each of its logs uploaded, in order, as one `uploads` input; anything else (or anything
    /// with `--path`) is a path on the service.
    let private inputOf (ctx: CommandContext) (input: string) (asPath: bool) : Task<Result<InputRef, ClientError>> =
        task {
            if asPath then
                return
                    Ok(
                        InputRef.Path(
                            if File.Exists input || Directory.Exists input then
                                Path.GetFullPath input
                            else
                                input
                        )
                    )
            elif File.Exists input then
                let! id = upload ctx input
                return id |> Result.map InputRef.Upload
            else
                match Directory.Exists input || input.Contains '|', CtsLite.Logs.Route.resolve input with
                | true, Ok files ->
                    let ids = ResizeArray<string>()
                    let mutable failure = None

                    for f in files do
                        if failure.IsNone then
                            match! upload ctx f with
                            | Ok id -> ids.Add id
                            | Error e -> failure <- Some e

                    match failure with
                    | Some e -> return Error e
                    | None when ids.Count = 1 -> return Ok(InputRef.Upload ids[0])
                    | None -> return Ok(InputRef.Uploads(List.ofSeq ids))
                | _ -> return Ok(InputRef.Path input)
        }

    /// `cts run <tool> <input>` on the service: the input and local `file` parameters uploaded
    /// (see `inputOf`), the run created with an Idempotency-Key, its log followed live to its end
    /// (resumed when the connection drops), every artifact downloaded into `--out-dir`. The first
    /// Ctrl+C asks the service to cancel the run and waits for its end; a second leaves at once
    /// (130) and the run to the service. Exit 0 completed, 3 failed, 4 canceled.
    let private remote (ctx: CommandContext) (args: ParseResults<RunArgs>) (toolId: string) (input: string) : int =
        use leave = new CancellationTokenSource()
        let mutable runId: string option = None
        let mutable presses = 0

        let onCancel =
            ConsoleCancelEventHandler(fun _ e ->
                e.Cancel <- true
                presses <- presses + 1

                match runId, presses with
                | Some id, 1 ->
                    ctx.Err.WriteLine $"canceling run {id} (Ctrl+C again to leave it running)"

                    ctx.Http.Value.PostAsync($"{ctx.Url}/v1/runs/{id}/cancel", null) |> ignore
                | _ -> leave.Cancel())

        Console.CancelKeyPress.AddHandler onCancel

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
                match! serviceParameters ctx fileParams given with
                | Error e -> return fail ctx e
                | Ok parameters ->
                    match! inputOf ctx input (Results.has RunArgs.Path args) with
                    | Error e -> return fail ctx e
                    | Ok inputRef ->
                        let request: Api.RunRequest = {
                            ToolId = toolId
                            Params = Some(JsonSerializer.SerializeToElement parameters)
                            Input = Some(InputRef.toDto inputRef)
                            Inputs = None
                            Name =
                                args
                                |> Results.tryPick (function
                                    | Name n -> Some n
                                    | _ -> None)
                        }

                        let body = JsonSerializer.Serialize(request, ApiJson.options)

                        use content =
                            new Net.Http.StringContent(body, Text.Encoding.UTF8, "application/json")
                        // A retried request with the same key is the same run, never a second one.
                        content.Headers.Add("Idempotency-Key", Guid.NewGuid().ToString())
                        use! created = ctx.Http.Value.PostAsync($"{ctx.Url}/v1/runs", content)

                        if not created.IsSuccessStatusCode then
                            let! e = problem created
                            return fail ctx e
                        else
                            let! createdBody = created.Content.ReadAsStringAsync()

                            let id =
                                JsonDocument.Parse(createdBody).RootElement.GetProperty("run_id").GetString()

                            runId <- Some id

                            if Results.has No_Wait args then
                                if ctx.Json then
                                    ctx.Out.WriteLine createdBody
                                else
                                    ctx.Out.WriteLine id

                                return ExitCode.Ok
                            else
                                if not ctx.Json then
                                    ctx.Err.WriteLine $"run {id} queued on {ctx.Url}"

                                let onLine (entry: JsonElement) =
                                    if not ctx.Json then
                                        ctx.Err.WriteLine
                                            $"""{entry.GetProperty("level").GetString()}: {entry.GetProperty("message").GetString()}"""

                                match! follow ctx id onLine leave.Token with
                                | Error e -> return fail ctx e
                                | Ok None ->
                                    ctx.Err.WriteLine $"left run {id} to the service (cts logs {id} --follow)"
                                    return 130
                                | Ok(Some final) ->
                                    use finalDoc = JsonDocument.Parse final
                                    let status = finalDoc.RootElement.GetProperty("status").GetString()

                                    let outDir =
                                        outDirOf args
                                        |> Option.defaultWith (fun () -> Path.Combine("cts-out", $"{toolId}-{id}"))
                                        |> Path.GetFullPath

                                    let downloaded = ResizeArray<string>()
                                    let problems = ResizeArray<string>()

                                    if status = "completed" then
                                        Directory.CreateDirectory outDir |> ignore

                                        match! Client.getJson ctx.Http.Value ctx.Url $"/v1/runs/{id}/artifacts" [] with
                                        | Error e -> problems.Add(Client.describe e)
                                        | Ok(_, list) ->
                                            use list = list

                                            for a in list.RootElement.GetProperty("artifacts").EnumerateArray() do
                                                let name = Path.GetFileName(a.GetProperty("filename").GetString())
                                                let target = Path.Combine(outDir, name)

                                                if File.Exists target && not (Results.has Force args) then
                                                    problems.Add $"{target} exists; --force to overwrite it"
                                                else
                                                    match! fetchArtifact ctx a target with
                                                    | Ok _ -> downloaded.Add name
                                                    | Error e -> problems.Add e

                                    if ctx.Json then
                                        ctx.Out.WriteLine final
                                    else
                                        ctx.Out.WriteLine $"run {id}: {status}"

                                        match finalDoc.RootElement.GetProperty("error").ValueKind with
                                        | JsonValueKind.String ->
                                            ctx.Out.WriteLine
                                                $"""error: {finalDoc.RootElement.GetProperty("error").GetString()}"""
                                        | _ -> ()

                                        if downloaded.Count > 0 then
                                            ctx.Out.WriteLine $"artifacts in {outDir}:"

                                            for d in downloaded do
                                                ctx.Out.WriteLine $"  {d}"

                                    for p in problems do
                                        ctx.Err.WriteLine $"error: {p}"

                                    return
                                        if problems.Count > 0 then
                                            ExitCode.ClientError
                                        else
                                            exitOf status
        }

        try
            try
                work.GetAwaiter().GetResult()
            with
            | :? Net.Http.HttpRequestException as e -> fail ctx (ClientError.Unreachable(ctx.Url, e.Message))
            | :? TaskCanceledException when not leave.IsCancellationRequested ->
                fail ctx (ClientError.Unreachable(ctx.Url, "timed out"))
            | :? TaskCanceledException -> 130
        finally
            Console.CancelKeyPress.RemoveHandler onCancel

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
