namespace CtsLite.Cli

open System
open System.IO
open System.Net.Http
open System.Text.Json
open System.Threading
open System.Threading.Tasks
open Argu

/// `cts runs …`, `cts logs`, `cts art …`: runs, their logs and artifacts on the service.
[<RequireQualifiedAccess>]
module RunsCommands =

    let private indented = JsonSerializerOptions(WriteIndented = true)

    let private text (e: JsonElement) (name: string) =
        match e.TryGetProperty name with
        | true, v when v.ValueKind = JsonValueKind.String -> v.GetString()
        | true, v when v.ValueKind = JsonValueKind.Null -> ""
        | true, v -> v.GetRawText()
        | _ -> ""

    let private calling = RunCommands.calling

    let private getJson (ctx: CommandContext) (path: string) =
        Client.getJson ctx.Http.Value ctx.Url path []

    let private size = Ui.size

    let private when' (e: JsonElement) (name: string) =
        match DateTimeOffset.TryParse(text e name) with
        | true, t -> Ui.time t
        | false, _ -> text e name

    /// What a run read, as the user named it: its files' names (or ids, for a run recorded
    /// before names were kept).
    let private inputOf (r: JsonElement) =
        match r.TryGetProperty "input" with
        | true, input when input.ValueKind = JsonValueKind.Object ->
            let names = [
                match input.TryGetProperty "filenames" with
                | true, n when n.ValueKind = JsonValueKind.Array ->
                    for x in n.EnumerateArray() do
                        x.GetString()
                | _ -> ()
            ]

            match names, input.GetProperty "value" with
            | [], v when v.ValueKind = JsonValueKind.String -> v.GetString()
            | [], v -> $"{v.GetArrayLength()} uploads"
            | [ one ], _ -> one
            | first :: rest, _ -> $"{first} +{rest.Length}"
        | _ -> ""

    let private runRow (r: JsonElement) : Ui.Cell list =
        let progress =
            match r.GetProperty "progress" with
            | p when p.ValueKind = JsonValueKind.Number && text r "status" = "running" -> $"{p.GetDouble():F0}%%"
            | _ -> ""

        [
            Ui.Plain(text r "run_id")
            Ui.Plain(text r "tool_id")
            Ui.State(text r "status")
            Ui.Plain(progress.Replace("%%", "%"))
            Ui.Dim(when' r "created_at")
            Ui.Plain(inputOf r)
            Ui.Plain(text r "name")
        ]

    /// `cts runs list [--status S] [--tool T] [--limit N] [--all]`.
    let list (ctx: CommandContext) (args: ParseResults<RunsListArgs>) : int =
        let query = [
            for a in args.GetAllResults() do
                match a with
                | RunsListArgs.Status s -> $"status={Uri.EscapeDataString s}"
                | RunsListArgs.Tool t -> $"tool_id={Uri.EscapeDataString t}"
                | RunsListArgs.Limit n -> $"limit={n}"
                | RunsListArgs.All -> ()
        ]

        let all = Results.has RunsListArgs.All args

        calling ctx (fun () -> task {
            let runs = ResizeArray<JsonElement>()
            let mutable cursor: string option = None
            let mutable failure = None
            let mutable go = true

            while go do
                let parts =
                    query
                    @ (cursor
                       |> Option.map (fun c -> $"cursor={Uri.EscapeDataString c}")
                       |> Option.toList)

                let path =
                    if parts.IsEmpty then
                        "/v1/runs"
                    else
                        "/v1/runs?" + String.Join("&", parts)

                match! getJson ctx path with
                | Error e ->
                    failure <- Some e
                    go <- false
                | Ok(_, doc) ->
                    let root = doc.RootElement.Clone()
                    doc.Dispose()

                    for r in root.GetProperty("runs").EnumerateArray() do
                        runs.Add r

                    cursor <-
                        match root.GetProperty "next_cursor" with
                        | c when c.ValueKind = JsonValueKind.String -> Some(c.GetString())
                        | _ -> None

                    go <- all && cursor.IsSome

            match failure with
            | Some e -> return RunCommands.fail ctx e
            | None ->
                if ctx.Json then
                    ctx.Out.WriteLine(
                        JsonSerializer.Serialize(
                            {|
                                runs = runs
                                next_cursor = cursor |> Option.toObj
                            |}
                        )
                    )
                elif runs.Count = 0 then
                    ctx.Out.WriteLine "no runs"
                else
                    Ui.table ctx [ "RUN"; "TOOL"; "STATUS"; "DONE"; "CREATED"; "INPUT"; "NAME" ] (Seq.map runRow runs)

                    match cursor with
                    | Some _ -> ctx.Err.WriteLine "more runs: --all for every page"
                    | None -> ()

                return ExitCode.Ok
        })

    let private runId (args: ParseResults<RunIdArgs>) =
        args |> Results.pick (fun (RunIdArgs.Run_Id id) -> Some id)

    let private printRun (ctx: CommandContext) (r: JsonElement) =
        if ctx.Json then
            ctx.Out.WriteLine(r.GetRawText())
        else
            ctx.Out.WriteLine $"""run {text r "run_id"}: {text r "tool_id"}, {text r "status"}"""

            let rows = [
                match text r "name" with
                | "" -> ()
                | v -> [ Ui.Dim "name"; Ui.Plain v ]
                [ Ui.Dim "input"; Ui.Plain(inputOf r) ]
                for name in [ "created_at"; "started_at"; "completed_at" ] do
                    match text r name with
                    | "" -> ()
                    | _ -> [ Ui.Dim(name.Replace("_at", "")); Ui.Plain(when' r name) ]
                match text r "error" with
                | "" -> ()
                | v -> [ Ui.Dim "error"; Ui.Plain v ]
                [ Ui.Dim "params"; Ui.Plain(r.GetProperty("params").GetRawText()) ]
                for a in r.GetProperty("artifacts").EnumerateArray() do
                    [ Ui.Dim "artifact"; Ui.Plain(a.GetString()) ]
            ]

            Ui.table ctx [ ""; "" ] rows

    /// `cts runs get ID`.
    let get (ctx: CommandContext) (args: ParseResults<RunIdArgs>) : int =
        calling ctx (fun () -> task {
            match! getJson ctx $"/v1/runs/{Uri.EscapeDataString(runId args)}" with
            | Error e -> return RunCommands.fail ctx e
            | Ok(_, doc) ->
                use doc = doc
                printRun ctx doc.RootElement
                return ExitCode.Ok
        })

    /// `cts runs cancel ID`: a queued run ends at once, a running one as soon as its tool notices.
    let cancel (ctx: CommandContext) (args: ParseResults<RunIdArgs>) : int =
        calling ctx (fun () -> task {
            use! response =
                ctx.Http.Value.PostAsync($"{ctx.Url}/v1/runs/{Uri.EscapeDataString(runId args)}/cancel", null)

            if not response.IsSuccessStatusCode then
                let! e = RunCommands.problem response
                return RunCommands.fail ctx e
            else
                let! body = response.Content.ReadAsStringAsync()
                use doc = JsonDocument.Parse body
                printRun ctx doc.RootElement
                return ExitCode.Ok
        })

    let private logLine (ctx: CommandContext) (entry: JsonElement) =
        if ctx.Json then
            ctx.Out.WriteLine(entry.GetRawText())
        else
            let at =
                match DateTimeOffset.TryParse(text entry "timestamp") with
                | true, t -> t.ToLocalTime().ToString "HH:mm:ss.fff"
                | false, _ -> ""

            ctx.Out.WriteLine $"""{at} {text entry "level"} [{text entry "source"}] {text entry "message"}"""

        ctx.Out.Flush()

    /// `cts logs ID [--follow]`: the log so far; with `--follow`, live until the run ends, the
    /// connection resumed after the last line received (`Last-Event-ID`) whenever it drops, so
    /// no line is shown twice or missed. Exit 0 completed, 3 failed, 4 canceled.
    let logs (ctx: CommandContext) (args: ParseResults<LogsArgs>) : int =
        let id =
            args
            |> Results.pick (function
                | LogsArgs.Run_Id r -> Some r
                | _ -> None)

        let path = $"/v1/runs/{Uri.EscapeDataString id}/logs"

        if not (Results.has LogsArgs.Follow args) then
            calling ctx (fun () -> task {
                match! getJson ctx (path + "?format=json") with
                | Error e -> return RunCommands.fail ctx e
                | Ok(_, doc) ->
                    use doc = doc

                    for entry in doc.RootElement.GetProperty("entries").EnumerateArray() do
                        logLine ctx entry

                    return ExitCode.Ok
            })
        else
            use cancel = new CancellationTokenSource()
            // Ctrl+C or SIGTERM stops following (130); the run goes on on the service.
            use _ = Signals.onInterrupt cancel.Cancel

            calling ctx (fun () -> task {
                match! RunCommands.follow ctx id (logLine ctx) ignore cancel.Token with
                | Error e -> return RunCommands.fail ctx e
                | Ok None -> return 130
                | Ok(Some final) ->
                    use doc = JsonDocument.Parse final
                    let status = text doc.RootElement "status"

                    if not ctx.Json then
                        ctx.Err.WriteLine $"run {id}: {status}"

                    return RunCommands.exitOf status
            })

    /// `cts art list [RUN]`.
    let artifacts (ctx: CommandContext) (args: ParseResults<ArtListArgs>) : int =
        let path =
            match args |> Results.tryPick (fun (ArtListArgs.Run_Id id) -> Some id) with
            | Some run -> $"/v1/runs/{Uri.EscapeDataString run}/artifacts"
            | None -> "/v1/artifacts"

        calling ctx (fun () -> task {
            match! getJson ctx path with
            | Error e -> return RunCommands.fail ctx e
            | Ok(_, doc) ->
                use doc = doc

                if ctx.Json then
                    ctx.Out.WriteLine(doc.RootElement.GetRawText())
                else
                    let all = [ for a in doc.RootElement.GetProperty("artifacts").EnumerateArray() -> a ]

                    if all.IsEmpty then
                        ctx.Out.WriteLine "no artifacts"
                    else
                        Ui.table ctx [ "ARTIFACT"; "RUN"; "SIZE"; "FILE" ] [
                            for a in all ->
                                [
                                    Ui.Plain(text a "artifact_id")
                                    Ui.Dim(text a "run_id")
                                    Ui.Plain(size (a.GetProperty("size").GetInt64()))
                                    Ui.Plain(text a "filename")
                                ]
                        ]

                return ExitCode.Ok
        })

    /// `cts art get ID [--out PATH | --stdout] [--force]`: the bytes into `PATH.part`, resumed
    /// with `Range` (and `If-Range` on the artifact's ETag) when a partial download is there,
    /// checked against the artifact's SHA-256, then renamed to `PATH`.
    let download (ctx: CommandContext) (args: ParseResults<ArtGetArgs>) : int =
        let id =
            args
            |> Results.pick (function
                | ArtGetArgs.Artifact_Id a -> Some a
                | _ -> None)

        let out =
            args
            |> Results.tryPick (function
                | ArtGetArgs.Out o -> Some o
                | _ -> None)

        let toStdout = Results.has ArtGetArgs.Stdout args
        let force = Results.has ArtGetArgs.Force args

        calling ctx (fun () -> task {
            match! getJson ctx $"/v1/artifacts/{Uri.EscapeDataString id}" with
            | Error e -> return RunCommands.fail ctx e
            | Ok(_, doc) ->
                use doc = doc
                let a = doc.RootElement
                let sha = text a "sha256"
                let url = ctx.Url + text a "download_url"

                if toStdout then
                    use! response =
                        ctx.Http.Value.GetAsync(url, HttpCompletionOption.ResponseHeadersRead)

                    if not response.IsSuccessStatusCode then
                        let! e = RunCommands.problem response
                        return RunCommands.fail ctx e
                    else
                        ctx.Out.Flush()
                        use! body = response.Content.ReadAsStreamAsync()
                        do! body.CopyToAsync ctx.OutStream
                        do! ctx.OutStream.FlushAsync()
                        return ExitCode.Ok
                else
                    let target =
                        match out with
                        | Some o when Directory.Exists o -> Path.Combine(o, Path.GetFileName(text a "filename"))
                        | Some o -> o
                        | None -> Path.GetFileName(text a "filename")

                    if File.Exists target && not force then
                        ctx.Err.WriteLine $"error: {target} exists; --force to overwrite it"
                        return ExitCode.ClientError
                    else
                        match! RunCommands.fetchArtifact ctx a target with
                        | Error e ->
                            ctx.Err.WriteLine $"error: {e}"
                            return ExitCode.ServiceError
                        | Ok resumedFrom ->
                            if ctx.Json then
                                ctx.Out.WriteLine(
                                    JsonSerializer.Serialize(
                                        {|
                                            artifact_id = id
                                            path = Path.GetFullPath target
                                            size = FileInfo(target).Length
                                            sha256 = sha
                                            resumed_from = resumedFrom
                                        |}
                                    )
                                )
                            else
                                let how =
                                    if resumedFrom > 0L then
                                        $" (resumed after {size resumedFrom})"
                                    else
                                        ""

                                ctx.Out.WriteLine $"{target}: {size (FileInfo(target).Length)}{how}"

                            return ExitCode.Ok
        })

    /// `cts upload FILE…`: each file streamed up; its id, and whether the service had it already.
    let upload (ctx: CommandContext) (args: ParseResults<UploadArgs>) : int =
        let files = args |> Results.pick (fun (UploadArgs.Files f) -> Some f)

        match files |> List.tryFind (fun f -> not (File.Exists f)) with
        | Some missing ->
            ctx.Err.WriteLine $"error: {missing}: no such file"
            ExitCode.ClientError
        | None ->
            calling ctx (fun () -> task {
                let mutable failure = None

                for file in files do
                    if failure.IsNone then
                        use stream = File.OpenRead file
                        use content = new StreamContent(stream)
                        content.Headers.Add("X-Filename", Path.GetFileName file)
                        content.Headers.ContentType <- Headers.MediaTypeHeaderValue "application/octet-stream"
                        use! response = ctx.Http.Value.PostAsync($"{ctx.Url}/v1/uploads", content)

                        if not response.IsSuccessStatusCode then
                            let! e = RunCommands.problem response
                            failure <- Some e
                        else
                            let! body = response.Content.ReadAsStringAsync()

                            if ctx.Json then
                                ctx.Out.WriteLine body
                            else
                                use doc = JsonDocument.Parse body
                                let u = doc.RootElement
                                // 200: the same content was stored already (deduplicated by SHA-256).
                                let again =
                                    if int response.StatusCode = 200 then
                                        "  (already stored)"
                                    else
                                        ""

                                ctx.Out.WriteLine
                                    $"""{text u "upload_id"}  {file}  {size (u.GetProperty("size").GetInt64())}  {text u "content_type"}{again}"""

                match failure with
                | Some e -> return RunCommands.fail ctx e
                | None -> return ExitCode.Ok
            })

    /// `cts uploads list [--limit N]`.
    let uploads (ctx: CommandContext) (args: ParseResults<UploadsListArgs>) : int =
        let limit =
            args
            |> Results.tryPick (fun (UploadsListArgs.Limit n) -> Some n)
            |> Option.map (fun n -> $"?limit={n}")
            |> Option.defaultValue ""

        calling ctx (fun () -> task {
            match! getJson ctx $"/v1/uploads{limit}" with
            | Error e -> return RunCommands.fail ctx e
            | Ok(_, doc) ->
                use doc = doc

                if ctx.Json then
                    ctx.Out.WriteLine(doc.RootElement.GetRawText())
                else
                    let all = [ for u in doc.RootElement.GetProperty("uploads").EnumerateArray() -> u ]

                    if all.IsEmpty then
                        ctx.Out.WriteLine "no uploads"
                    else
                        Ui.table ctx [ "UPLOAD"; "SIZE"; "TYPE"; "CREATED"; "FILE" ] [
                            for u in all ->
                                [
                                    Ui.Plain(text u "upload_id")
                                    Ui.Plain(size (u.GetProperty("size").GetInt64()))
                                    Ui.Plain(text u "content_type")
                                    Ui.Dim(when' u "created_at")
                                    Ui.Plain(text u "filename")
                                ]
                        ]

                return ExitCode.Ok
        })

    /// `cts uploads rm ID…`.
    let removeUploads (ctx: CommandContext) (args: ParseResults<UploadsRmArgs>) : int =
        let ids = args |> Results.pick (fun (UploadsRmArgs.Upload_Ids ids) -> Some ids)

        calling ctx (fun () -> task {
            let mutable failure = None

            for id in ids do
                if failure.IsNone then
                    use! response =
                        ctx.Http.Value.DeleteAsync($"{ctx.Url}/v1/uploads/{Uri.EscapeDataString id}")

                    if response.IsSuccessStatusCode then
                        if not ctx.Json then
                            ctx.Out.WriteLine $"deleted {id}"
                    else
                        let! e = RunCommands.problem response
                        failure <- Some e

            match failure with
            | Some e -> return RunCommands.fail ctx e
            | None ->
                if ctx.Json then
                    ctx.Out.WriteLine(JsonSerializer.Serialize {| deleted = ids |})

                return ExitCode.Ok
        })
