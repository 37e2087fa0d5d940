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

    /// `cts tools [ID]`: every tool and monitor this cts runs, with its parameters
    /// (`--json`: the tools' capability objects, as `/v1/capabilities` serves them).
    let tools (ctx: CommandContext) (args: ParseResults<CatalogArgs>) : int =
        let options = ApiJson.createOptions ()
        options.WriteIndented <- true
        let toolsAll = Catalog.descriptors |> List.map Api.toolCapability

        let toolsJson = JsonSerializer.SerializeToElement(toolsAll, options)

        let monitorsJson =
            JsonSerializer.SerializeToElement(
                CtsLite.Monitors.Catalog.descriptors |> List.map Api.toolCapability,
                options
            )

        Remote.printCatalog
            ctx
            (args
             |> Results.tryPick (function
                 | CatalogArgs.Id i -> Some i))
            (fun () -> JsonSerializer.Serialize(toolsAll, options))
            toolsJson
            monitorsJson
            "this cts"
            ("cts run --local <tool> <input>", "cts mon run <monitor> --replay <log>")

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

    /// A note for people on standard error (none with `--quiet` or `--json`).
    let internal note (ctx: CommandContext) (text: string) =
        if not ctx.Quiet && not ctx.Json then
            ctx.Err.WriteLine text

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

    /// The name an upload goes by: the file's, with its segment folder's in front for a log in
    /// a segment folder (`2024-05-01--10-00-00--3.rlog.zst`, as segment files are named outside
    /// their folders), so that the logs of a route keep apart on the service.
    let internal uploadName (path: string) : string =
        let name = Path.GetFileName path
        let folder = Path.GetFileName(Path.GetDirectoryName(Path.GetFullPath path))

        if
            (name.StartsWith("rlog", StringComparison.Ordinal)
             || name.StartsWith("qlog", StringComparison.Ordinal))
            && Text.RegularExpressions.Regex.IsMatch(folder, @"--\d+$")
        then
            $"{folder}.{name}"
        else
            name

    /// Uploads `length` bytes from `open'` as `name`, with a progress bar on a terminal; the
    /// answer's status (201 stored, 200 the same content was stored already) and body (the
    /// upload's JSON).
    let private uploadContent
        (ctx: CommandContext)
        (name: string)
        (length: int64)
        (open': unit -> Stream)
        : Task<Result<int * string, ClientError>> =
        Ui.withProgress ctx (fun progress -> task {
            use source = open' ()
            let bar = progress.Add($"upload {name}", Some length)
            use stream = new Ui.CountingStream(source, bar.Bytes)
            use content = new Net.Http.StreamContent(stream)
            content.Headers.ContentLength <- Nullable length
            content.Headers.Add("X-Filename", name)
            content.Headers.ContentType <- Net.Http.Headers.MediaTypeHeaderValue "application/octet-stream"
            use! response = ctx.Http.Value.PostAsync($"{ctx.Url}/v1/uploads", content)
            bar.Finish()

            if response.IsSuccessStatusCode then
                let! body = response.Content.ReadAsStringAsync()
                return Ok(int response.StatusCode, body)
            else
                let! e = problem response
                return Error e
        })

    /// Uploads a local file, as `uploadContent`.
    let internal uploadFile (ctx: CommandContext) (path: string) : Task<Result<int * string, ClientError>> =
        uploadContent ctx (uploadName path) (FileInfo(path).Length) (fun () -> File.OpenRead path)

    let private uploadId (ctx: CommandContext) (path: string) (answer: Result<int * string, ClientError>) =
        match answer with
        | Ok(_, body) ->
            use doc = JsonDocument.Parse body
            let id = doc.RootElement.GetProperty("upload_id").GetString()

            if not ctx.Json then
                note ctx $"uploaded {path} as {id}"

            Ok id
        | Error e -> Error e

    /// Uploads a local file; returns its upload id.
    let internal upload (ctx: CommandContext) (path: string) : Task<Result<string, ClientError>> = task {
        let! answer = uploadFile ctx path
        return uploadId ctx path answer
    }

    /// Uploads a local file given for a `file` parameter. A DBC that imports others goes as one
    /// file with its imports written in (the service has not got them); a DBC with errors is
    /// refused here, before anything is sent, with each error where it is.
    let private uploadParameterFile (ctx: CommandContext) (path: string) : Task<Result<string, ClientError>> = task {
        if not (path.EndsWith(".dbc", StringComparison.OrdinalIgnoreCase)) then
            return! upload ctx path
        else
            match CtsLite.Can.Dbc.inlineImports path, CtsLite.Can.Dbc.readFile path with
            | Error errors, _ ->
                let described = errors |> List.map CtsLite.Can.DbcError.describe

                return Error(ClientError.Local(String.Join("\nerror: ", described)))
            | Ok text, Ok original when text = original -> return! upload ctx path
            | Ok text, _ ->
                let bytes = Text.Encoding.UTF8.GetBytes text

                let! answer =
                    uploadContent ctx (Path.GetFileName path) bytes.LongLength (fun () -> new MemoryStream(bytes))

                return uploadId ctx $"{path} (with its imports)" answer
    }

    /// The parameters of tool or monitor `id` (`section`: "tools" or "monitors" of
    /// `/v1/capabilities`), typed and checked by its schema before anything is sent, as the JSON
    /// values of the run's `params`; a local file given for a `file` parameter is uploaded and
    /// named by its upload id. On an error it is printed and its exit code returned.
    let internal typedParameters
        (ctx: CommandContext)
        (section: string)
        (id: string)
        (given: (string * ParameterInput) list)
        : Task<Result<Collections.Generic.Dictionary<string, obj>, int>> = task {
        match! Client.getJson ctx.Http.Value ctx.Url "/v1/capabilities" [] with
        | Error e -> return Error(fail ctx e)
        | Ok(_, doc) ->
            use doc = doc
            let all = doc.RootElement.GetProperty(section).EnumerateArray() |> List.ofSeq

            let kind = if section = "tools" then "tool" else "monitor"

            match all |> List.tryFind (fun t -> t.GetProperty("id").GetString() = id) with
            | None ->
                let known = all |> List.map (fun t -> t.GetProperty("id").GetString())

                ctx.Err.WriteLine
                    $"""error: the service at {ctx.Url} has no {kind} '{id}' (it has: {String.Join(", ", known)})"""

                return Error ExitCode.ClientError
            | Some capability ->
                match Api.descriptorOf capability with
                | Error e ->
                    ctx.Err.WriteLine $"error: {e}"
                    return Error ExitCode.ClientError
                | Ok descriptor ->
                    match Parameters.validate descriptor given with
                    | Error errors ->
                        for e in errors do
                            ctx.Err.WriteLine $"error: parameter {e.Parameter}: {e.Detail}"

                        ctx.Err.WriteLine $"(cts cap {id} lists its parameters)"
                        return Error ExitCode.ClientError
                    | Ok typed ->
                        let parameters = Collections.Generic.Dictionary<string, obj>()
                        let mutable failure = None

                        for name in given |> List.map fst |> List.distinct do
                            match typed.TryFind name with
                            | Some(ParameterValue.File v) when File.Exists v && failure.IsNone ->
                                match! uploadParameterFile ctx v with
                                | Ok uploadId -> parameters[name] <- box uploadId
                                | Error e -> failure <- Some e
                            | Some(ParameterValue.Str v)
                            | Some(ParameterValue.File v) -> parameters[name] <- box v
                            | Some(ParameterValue.Int i) -> parameters[name] <- box i
                            | Some(ParameterValue.Float f) -> parameters[name] <- box f
                            | Some(ParameterValue.Bool b) -> parameters[name] <- box b
                            | Some(ParameterValue.List items) -> parameters[name] <- box (Array.ofList items)
                            | None -> ()

                        match failure with
                        | Some e -> return Error(fail ctx e)
                        | None -> return Ok parameters
    }

    /// Follows a run's log (SSE) to its `end`, giving each line to `onLine` once: when the
    /// connection drops or the stream ends early (the service restarted) it resumes after the
    /// last line received (`Last-Event-ID`). The `end` event's run, or None when `stop` ended it.
    let internal follow
        (ctx: CommandContext)
        (runId: string)
        (onLine: JsonElement -> unit)
        (onStatus: JsonElement -> unit)
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
                                | "status" ->
                                    use d = JsonDocument.Parse(line.Substring 6)
                                    onStatus d.RootElement
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
            let total = artifact.GetProperty("size").GetInt64()

            do!
                Ui.withProgress ctx (fun progress -> task {
                    let bar = progress.Add($"download {Path.GetFileName target}", Some total)
                    let start = if resumed then have else 0L
                    bar.Bytes start

                    use file =
                        new FileStream(part, (if resumed then FileMode.Append else FileMode.Create), FileAccess.Write)

                    use counted = new Ui.CountingStream(file, (fun n -> bar.Bytes(start + n)))
                    use! body = response.Content.ReadAsStreamAsync()
                    do! body.CopyToAsync counted
                    bar.Finish()
                })

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

    /// What a run reads, as the command line names it.
    [<RequireQualifiedAccess>]
    type private Source =
        /// Files, segment folders or routes here.
        | Here of string list
        /// `--upload`: files here, uploaded.
        | Upload of string list
        /// `--upload-id`: uploads already on the service.
        | UploadIds of string list
        /// `--path`: a path on the service.
        | ServicePath of string

    /// The tool and what it reads, or what is wrong with the command line.
    let private targetOf (args: ParseResults<RunArgs>) : Result<string * Source, string> =
        let pick f = Results.choose f args

        let target =
            args
            |> Results.pick (function
                | Target t -> Some t
                | _ -> None)

        let uploads =
            pick (function
                | RunArgs.Upload f -> Some f
                | _ -> None)

        let ids =
            pick (function
                | Upload_Id i -> Some i
                | _ -> None)

        let paths =
            pick (function
                | RunArgs.Path p -> Some p
                | _ -> None)

        match target with
        | [] -> Error "give the tool id, then its input (see cts run --help)"
        | toolId :: here ->
            let sources = [
                if not here.IsEmpty then
                    Source.Here here
                if not uploads.IsEmpty then
                    Source.Upload uploads
                if not ids.IsEmpty then
                    Source.UploadIds ids
                match paths with
                | [] -> ()
                | [ p ] -> Source.ServicePath p
                | _ -> ()
            ]

            match sources with
            | _ when paths.Length > 1 ->
                Error "--path names one path on the service (a route folder reads as one input)"
            | [ source ] -> Ok(toolId, source)
            | [] ->
                Error $"give {toolId} an input: a file, folder or route here, --upload FILE, --upload-id ID or --path P"
            | _ -> Error "give one kind of input: files here, --upload, --upload-id or --path"

    /// The files several inputs given here stand for, in order: each a log file, or a segment
    /// folder or route read as its files.
    let private filesHere (inputs: string list) : Result<string list, string> =
        inputs
        |> List.traverseResultM (fun input ->
            if File.Exists input then
                Ok [ input ]
            else
                CtsLite.Logs.Route.resolve input)
        |> Result.map List.concat

    /// Uploads `files` in order: one upload input, or several read as one route.
    let private uploadAll (ctx: CommandContext) (files: string list) : Task<Result<InputRef, ClientError>> = task {
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
    }

    /// What a remote run reads: files here are uploaded (a segment folder or route as each of
    /// its logs, in order, as one `uploads` input, as are several files); a single input that is
    /// not here is taken as a path on the service, as `--path` is.
    let private inputOf (ctx: CommandContext) (source: Source) : Task<Result<InputRef, ClientError>> = task {
        match source with
        | Source.ServicePath p ->
            // A path that is also here is the same folder the service shares: sent absolute.
            return
                Ok(
                    InputRef.Path(
                        if File.Exists p || Directory.Exists p then
                            Path.GetFullPath p
                        else
                            p
                    )
                )
        | Source.UploadIds [ id ] -> return Ok(InputRef.Upload id)
        | Source.UploadIds ids -> return Ok(InputRef.Uploads ids)
        | Source.Upload files -> return! uploadAll ctx files
        | Source.Here [ input ] when not (File.Exists input || Directory.Exists input || input.Contains '|') ->
            note ctx $"{input} is not here: reading it as a path on the service"
            return Ok(InputRef.Path input)
        | Source.Here inputs ->
            match filesHere inputs with
            | Error e -> return Error(ClientError.Local e)
            | Ok files -> return! uploadAll ctx files
    }

    /// A run's state line for the progress bar: `running 42%`.
    let private statusOf (run: JsonElement) =
        let status = run.GetProperty("status").GetString()

        match run.TryGetProperty "progress" with
        | true, p when p.ValueKind = JsonValueKind.Number -> status, p.GetDouble()
        | _ -> status, 0.0

    /// `cts run <tool> <input>…` on the service: the input and local `file` parameters uploaded
    /// (see `inputOf`), the parameters typed by the tool's schema from the service's
    /// capabilities, the run created with an Idempotency-Key (so that its retries are the same
    /// run), its log followed live to its end (resumed when the connection drops), every
    /// artifact downloaded into `--out-dir`. The first Ctrl+C asks the service to cancel the run
    /// and waits for its end; a second leaves at once (130) and the run to the service. Exit 0
    /// completed, 3 failed, 4 canceled.
    let private remote (ctx: CommandContext) (args: ParseResults<RunArgs>) (toolId: string) (source: Source) : int =
        use leave = new CancellationTokenSource()
        let mutable runId: string option = None
        let mutable presses = 0

        let onCancel () =
            presses <- presses + 1

            match runId, presses with
            | Some id, 1 ->
                ctx.Err.WriteLine $"canceling run {id} (Ctrl+C again to leave it running)"

                ctx.Http.Value.PostAsync($"{ctx.Url}/v1/runs/{id}/cancel", null) |> ignore
            | _ -> leave.Cancel()

        use _ = Signals.onInterrupt onCancel

        let work = task {
            match paramsOf args with
            | Error bad ->
                ctx.Err.WriteLine $"error: {bad}"
                return ExitCode.ClientError
            | Ok given ->
                match! typedParameters ctx "tools" toolId given with
                | Error code -> return code
                | Ok parameters ->
                    match! inputOf ctx source with
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
                        // A retried request with the same key is the same run, never a second one.
                        let key = Guid.NewGuid().ToString()

                        use! created =
                            Client.sendIdempotent ctx.Http.Value (fun () ->
                                let message =
                                    new Net.Http.HttpRequestMessage(Net.Http.HttpMethod.Post, $"{ctx.Url}/v1/runs")

                                message.Content <-
                                    new Net.Http.StringContent(body, Text.Encoding.UTF8, "application/json")

                                message.Headers.Add("Idempotency-Key", key)
                                message)

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
                                note ctx $"run {id} queued on {ctx.Url}"

                                let! followed =
                                    Ui.withProgress ctx (fun progress -> task {
                                        let bar = progress.Add($"{toolId} queued", None)

                                        let onLine (entry: JsonElement) =
                                            if ctx.Json then
                                                // NDJSON on stderr would mix with errors: --json
                                                // keeps standard output to the final document.
                                                ()
                                            else
                                                progress.Line
                                                    $"""{entry.GetProperty("level").GetString()}: {entry.GetProperty("message").GetString()}"""

                                        let onStatus (run: JsonElement) =
                                            let status, pct = statusOf run
                                            bar.Describe $"{toolId} {status}"
                                            bar.Percent pct

                                        let! result = follow ctx id onLine onStatus leave.Token
                                        bar.Finish()
                                        return result
                                    })

                                match followed with
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
            work.GetAwaiter().GetResult()
        with
        | :? Net.Http.HttpRequestException as e -> fail ctx (ClientError.Unreachable(ctx.Url, e.Message))
        | :? TaskCanceledException when not leave.IsCancellationRequested ->
            fail ctx (ClientError.Unreachable(ctx.Url, "timed out"))
        | :? TaskCanceledException -> 130

    /// `cts run --local <tool> <input>… -p k=v... --out-dir DIR [--json]`: the tool in this
    /// process, its parameters checked by the catalog's schema before it starts.
    let private local (ctx: CommandContext) (args: ParseResults<RunArgs>) (toolId: string) (inputs: string list) : int =
        match paramsOf args with
        | Error bad ->
            ctx.Err.WriteLine $"error: {bad}"
            ExitCode.ClientError
        | Ok given ->

            let outDir =
                outDirOf args
                |> Option.defaultWith (fun () ->
                    Path.Combine("cts-out", $"""{toolId}-{DateTime.Now.ToString "yyyyMMdd-HHmmss"}"""))

            let input =
                match inputs with
                | [ one ] -> Ok(ToolInput.Path one)
                | several -> filesHere several |> Result.map ToolInput.Files

            match input with
            | Error e ->
                ctx.Err.WriteLine $"error: {e}"
                ExitCode.ClientError
            | Ok input ->

                use cancel = new CancellationTokenSource()
                use _ = Signals.onInterrupt cancel.Cancel

                let result =
                    (Ui.withProgress ctx (fun progress ->
                        let bar = progress.Add(toolId, None)

                        let request = {
                            ToolRunner.request toolId input given outDir with
                                Progress = bar.Percent
                                Log =
                                    fun level line ->
                                        match level with
                                        | ToolLogLevel.Debug -> ()
                                        | ToolLogLevel.Info when ctx.Json -> ()
                                        | ToolLogLevel.Info -> progress.Line $"info: {line}"
                                        | _ -> ctx.Err.WriteLine $"{(string level).ToLowerInvariant()}: {line}"
                                Cancellation = cancel.Token
                        }

                        ToolRunner.runAsync ToolRunner.StopGrace request))
                        .GetAwaiter()
                        .GetResult()

                match result with
                | Ok run ->
                    let output = run.Output

                    if ctx.Json then
                        let local: Api.LocalRun = {
                            ToolId = toolId
                            Status = "completed"
                            Input = String.Join(" ", inputs)
                            Params = Api.parameters run.Parameters
                            OutputDir = run.OutputDir
                            Artifacts = output.Artifacts
                            Summary = output.Summary
                            Facts = Api.facts output.Facts
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

                    ctx.Err.WriteLine $"(cts tools {toolId} lists its parameters)"
                    ExitCode.ClientError
                | Error e ->
                    ctx.Err.WriteLine $"error: {ToolError.describe e}"
                    ExitCode.ClientError

    /// `cts run <tool> <input>…`: on the service, or in this process with `--local`.
    let run (ctx: CommandContext) (args: ParseResults<RunArgs>) : int =
        match targetOf args with
        | Error e ->
            ctx.Err.WriteLine $"error: {e}"
            ExitCode.ClientError
        | Ok _ when Results.has No_Wait args && Results.has Follow args ->
            ctx.Err.WriteLine "error: --no-wait and --follow exclude each other"
            ExitCode.ClientError
        | Ok(toolId, Source.Here inputs) when Results.has Local args -> local ctx args toolId inputs
        | Ok _ when Results.has Local args ->
            ctx.Err.WriteLine
                "error: --upload, --upload-id and --path are inputs on the service; --local reads files here"

            ExitCode.ClientError
        | Ok(toolId, source) -> remote ctx args toolId source
