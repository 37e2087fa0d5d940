namespace CtsLite.Cli

open System
open System.IO
open System.Net.Http
open System.Text.Json
open Argu
open CtsLite

/// The commands that talk to the service.
[<RequireQualifiedAccess>]
module Remote =

    let private indented = JsonSerializerOptions(WriteIndented = true)

    let private printJson (ctx: CommandContext) (doc: JsonDocument) =
        ctx.Out.WriteLine(JsonSerializer.Serialize(doc.RootElement, indented))

    let private str (e: JsonElement) (name: string) =
        match e.TryGetProperty name with
        | true, v when v.ValueKind = JsonValueKind.String -> v.GetString()
        | true, v -> v.GetRawText()
        | _ -> ""

    let private fail (ctx: CommandContext) (error: ClientError) =
        ctx.Err.WriteLine($"error: {Client.describe error}")
        Client.exitCode error

    /// Compares dotted numeric versions.
    let versionAtLeast (actual: string) (required: string) : bool =
        let parse (v: string) =
            match Version.TryParse(v.Split('-', '+').[0]) with
            | true, parsed -> Some parsed
            | false, _ -> None

        match parse actual, parse required with
        | Some a, Some r -> a >= r
        | _ -> true

    /// Refuses to talk to a service that no longer accepts this client; `retries` as
    /// `Client.getJsonWith` takes them.
    let private checkCompatible (ctx: CommandContext) (retries: int) (next: unit -> int) : int =
        let result =
            (Client.getJsonWith retries ctx.Http.Value ctx.Url "/v1/version" []).GetAwaiter().GetResult()

        match result with
        | Error e -> fail ctx e
        | Ok(_, doc) ->
            use doc = doc
            let minimum = str doc.RootElement "min_client_version"

            match versionAtLeast Product.version minimum with
            | true -> next ()
            | false ->
                ctx.Err.WriteLine(
                    $"error: cts {Product.version} is too old for the service at {ctx.Url} (it needs {minimum} or newer); upgrade cts"
                )

                ExitCode.ClientError

    /// `cts ping [--wait S]`: with `--wait`, asks again every half second until the service is
    /// healthy or the time is up (a script that has just started it).
    let ping (ctx: CommandContext) (args: ParseResults<PingArgs>) : int =
        let wait =
            args
            |> Results.tryPick (function
                | PingArgs.Wait s -> Some s)

        let deadline =
            DateTimeOffset.UtcNow + TimeSpan.FromSeconds(float (defaultArg wait 0))

        let rec health () =
            let answer =
                (Client.getJsonOnce ctx.Http.Value ctx.Url "/v1/health" [ 503 ]).GetAwaiter().GetResult()

            match answer with
            | Ok(200, _) -> answer
            | Ok(_, doc) when DateTimeOffset.UtcNow < deadline ->
                doc.Dispose()
                Threading.Thread.Sleep 500
                health ()
            | Error(ClientError.Unreachable _) when DateTimeOffset.UtcNow < deadline ->
                Threading.Thread.Sleep 500
                health ()
            | other -> other

        match wait with
        | Some s when s < 0 ->
            ctx.Err.WriteLine $"error: --wait must be 0 or more seconds, not {s}"
            ExitCode.ClientError
        | _ ->

            // Waiting: the version is asked for once the service answers at all.
            let first = if wait.IsSome then Some(health ()) else None

            checkCompatible ctx 0 (fun () ->
                match first |> Option.defaultWith health with
                | Error e -> fail ctx e
                | Ok(status, doc) ->
                    use doc = doc
                    let root = doc.RootElement

                    if ctx.Json then
                        printJson ctx doc
                    else
                        ctx.Out.WriteLine($"""CtsLite service at {ctx.Url} is {str root "status"}""")
                        ctx.Out.WriteLine($"""version {str root "version"}, uptime {str root "uptime"}""")

                        Ui.table ctx [ "CHECK"; "STATUS"; "DETAIL" ] [
                            for check in root.GetProperty("checks").EnumerateArray() ->
                                [
                                    Ui.Plain(str check "name")
                                    Ui.State(str check "status")
                                    Ui.Plain(str check "detail")
                                ]
                        ]

                    match status with
                    | 200 -> ExitCode.Ok
                    | _ -> ExitCode.ServiceError)

    /// A parameter's default as people read it: nothing, the text, or the JSON value.
    let private defaultText (p: JsonElement) =
        match p.TryGetProperty "default" with
        | true, v when v.ValueKind = JsonValueKind.Null -> ""
        | true, v when v.ValueKind = JsonValueKind.String -> v.GetString()
        // A list as `-p name=a,b` writes it.
        | true, v when v.ValueKind = JsonValueKind.Array ->
            String.Join(",", v.EnumerateArray() |> Seq.map (fun x -> x.ToString()))
        | true, v -> v.GetRawText()
        | _ -> ""

    /// Tools or monitors (capability objects): a line each, then its parameters as a table.
    let private printTools (ctx: CommandContext) (title: string) (tools: JsonElement seq) =
        ctx.Out.WriteLine($"{title}:")

        match List.ofSeq tools with
        | [] -> ctx.Out.WriteLine("  (none)")
        | tools ->
            for tool in tools do
                ctx.Out.WriteLine()
                ctx.Out.WriteLine($"""{str tool "id"}: {str tool "name"}""")
                ctx.Out.WriteLine($"""{str tool "description"}""")

                let parameters = tool.GetProperty("parameters").EnumerateObject() |> List.ofSeq

                if not parameters.IsEmpty then
                    ctx.Out.Flush()

                    Ui.table ctx [ "PARAMETER"; "TYPE"; "DEFAULT"; "DESCRIPTION" ] [
                        for p in parameters ->
                            let choices =
                                match p.Value.TryGetProperty "choices" with
                                | true, c when c.ValueKind = JsonValueKind.Array ->
                                    " ("
                                    + String.Join("|", c.EnumerateArray() |> Seq.map (fun v -> v.ToString()))
                                    + ")"
                                | _ -> ""

                            let required =
                                match p.Value.TryGetProperty "required" with
                                | true, r when r.ValueKind = JsonValueKind.True -> " (required)"
                                | _ -> ""

                            [
                                Ui.Plain p.Name
                                Ui.Plain(str p.Value "type" + choices)
                                Ui.Plain(defaultText p.Value + required)
                                Ui.Dim(str p.Value "description")
                            ]
                    ]

    /// The capability objects among `all` that `id` selects (all of them without it).
    let private selected (id: string option) (all: JsonElement) =
        all.EnumerateArray()
        |> Seq.filter (fun t -> id.IsNone || str t "id" = id.Value)
        |> List.ofSeq

    /// Prints the tools and monitors (arrays of capability objects) that `id` selects, for
    /// people, or as JSON (`whole`, or the one selected object); `runner` names the runner
    /// (e.g. "the service") in the error for an unknown id. Returns the exit code.
    let internal printCatalog
        (ctx: CommandContext)
        (id: string option)
        (whole: unit -> string)
        (toolsAll: JsonElement)
        (monitorsAll: JsonElement)
        (runner: string)
        (how: string * string)
        : int =
        let tools = selected id toolsAll
        let monitors = selected id monitorsAll

        match id with
        | Some i when tools.IsEmpty && monitors.IsEmpty ->
            let known =
                Seq.append (toolsAll.EnumerateArray()) (monitorsAll.EnumerateArray())
                |> Seq.map (fun t -> str t "id")

            ctx.Err.WriteLine $"""error: {runner} has no tool or monitor '{i}' (it has: {String.Join(", ", known)})"""
            ExitCode.ClientError
        | Some _ when ctx.Json ->
            ctx.Out.WriteLine(JsonSerializer.Serialize(List.head (tools @ monitors), indented))
            ExitCode.Ok
        | _ when ctx.Json ->
            ctx.Out.WriteLine(whole ())
            ExitCode.Ok
        | _ ->
            let runTool, runMonitor = how

            if not tools.IsEmpty then
                printTools ctx $"Tools ({runTool})" tools

            if not monitors.IsEmpty then
                if not tools.IsEmpty then
                    ctx.Out.WriteLine()

                printTools ctx $"Monitors ({runMonitor})" monitors

            ExitCode.Ok

    /// `cts capabilities [ID]`.
    let capabilities (ctx: CommandContext) (args: ParseResults<CatalogArgs>) : int =
        let id =
            args
            |> Results.tryPick (function
                | CatalogArgs.Id i -> Some i)

        checkCompatible ctx Client.Retries (fun () ->
            match (Client.getJson ctx.Http.Value ctx.Url "/v1/capabilities" []).GetAwaiter().GetResult() with
            | Error e -> fail ctx e
            | Ok(_, doc) ->
                use doc = doc
                let root = doc.RootElement

                let code =
                    printCatalog
                        ctx
                        id
                        (fun () -> JsonSerializer.Serialize(root, indented))
                        (root.GetProperty "tools")
                        (root.GetProperty "monitors")
                        $"the service at {ctx.Url}"
                        ("cts run <tool> <input>", "cts mon start <monitor>")

                if code = ExitCode.Ok && id.IsNone && not ctx.Json then
                    ctx.Out.WriteLine()
                    ctx.Out.WriteLine($"""API version: {str root "api_version"}""")

                    let features =
                        root.GetProperty("features").EnumerateArray()
                        |> Seq.map (fun f -> f.GetString())

                    ctx.Out.WriteLine($"""Features: {String.Join(", ", features)}""")

                code)

    /// `cts version [--client]`: always prints the client's version; the service's when it
    /// answers, with a warning when the service needs a newer cts.
    let version (ctx: CommandContext) (args: ParseResults<VersionArgs>) : int =
        let server =
            if Results.has VersionArgs.Client args then
                Error(ClientError.Unreachable(ctx.Url, "not asked (--client)"))
            else
                (Client.getJsonOnce ctx.Http.Value ctx.Url "/v1/version" []).GetAwaiter().GetResult()

        let tooOld (root: JsonElement) =
            let minimum = str root "min_client_version"

            if not (versionAtLeast Product.version minimum) then
                ctx.Err.WriteLine(
                    $"warning: the service at {ctx.Url} needs cts {minimum} or newer; upgrade cts (this is {Product.version})"
                )

        if Results.has VersionArgs.Client args then
            if ctx.Json then
                ctx.Out.WriteLine(JsonSerializer.Serialize({| client_version = Product.version |}, indented))
            else
                ctx.Out.WriteLine Product.version

            ExitCode.Ok
        else

            match ctx.Json, server with
            | true, Ok(_, doc) ->
                use doc = doc
                let root = doc.RootElement

                let body = {|
                    client_version = Product.version
                    server_version = str root "server_version"
                    api_version = str root "api_version"
                    min_client_version = str root "min_client_version"
                |}

                ctx.Out.WriteLine(JsonSerializer.Serialize(body, indented))
                tooOld root
            | true, Error e ->
                ctx.Out.WriteLine(JsonSerializer.Serialize({| client_version = Product.version |}, indented))
                ctx.Err.WriteLine($"note: {Client.describe e}")
            | false, Ok(_, doc) ->
                use doc = doc
                let root = doc.RootElement
                ctx.Out.WriteLine($"cts {Product.version}")

                ctx.Out.WriteLine(
                    $"""service {str root "server_version"} at {ctx.Url} (API {str root "api_version"}, accepts cts {str root "min_client_version"} or newer)"""
                )

                tooOld root
            | false, Error e ->
                ctx.Out.WriteLine($"cts {Product.version}")
                ctx.Err.WriteLine($"note: {Client.describe e}")

            ExitCode.Ok
