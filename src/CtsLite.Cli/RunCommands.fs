namespace CtsLite.Cli

open System
open System.IO
open System.Threading
open Argu
open CtsLite
open CtsLite.Tools

/// `cts tools` and `cts run --local`: the tool catalog in this process.
[<RequireQualifiedAccess>]
module RunCommands =

    /// `cts tools`: every tool with its parameters (`--json`: the capability objects).
    let tools (ctx: CommandContext) : int =
        if ctx.Json then
            let all = Artifacts.arr (Catalog.descriptors |> List.map Catalog.capabilityJson)
            ctx.Out.WriteLine(Artifacts.jsonText all)
        else
            for d in Catalog.descriptors do
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

        ExitCode.Ok

    let private parseParam (text: string) : Result<string * ParameterInput, string> =
        match text.IndexOf '=' with
        | i when i > 0 -> Ok(text.Substring(0, i).Trim(), ParameterInput.Text(text.Substring(i + 1)))
        | _ -> Error $"-p '{text}': expected key=value"

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

    /// `cts run --local <tool> <input> -p k=v... --out-dir DIR [--json]`.
    let run (ctx: CommandContext) (args: ParseResults<RunArgs>) : int =
        match args.GetResult Target with
        | [ toolId; input ] when args.Contains Local ->
            match Catalog.tryFind toolId with
            | None ->
                let known = String.Join(", ", Catalog.descriptors |> List.map _.Id)
                ctx.Err.WriteLine $"error: no tool '{toolId}' (tools: {known})"
                ExitCode.ClientError
            | Some tool ->
                let given = args.GetResults Param |> List.map parseParam

                match
                    given
                    |> List.choose (fun r ->
                        Option.ofObj (
                            match r with
                            | Error e -> e
                            | Ok _ -> null
                        ))
                with
                | bad :: _ ->
                    ctx.Err.WriteLine $"error: {bad}"
                    ExitCode.ClientError
                | [] ->
                    let given =
                        given
                        |> List.map (fun r ->
                            match r with
                            | Ok x -> x
                            | Error _ -> failwith "checked")

                    match Parameters.validateFor tool given with
                    | Error errors ->
                        for e in errors do
                            ctx.Err.WriteLine $"error: parameter {e.Parameter}: {e.Detail}"

                        ExitCode.ClientError
                    | Ok parameters ->
                        let outDir =
                            args.TryGetResult Out_Dir
                            |> Option.defaultWith (fun () ->
                                Path.Combine("cts-out", $"""{toolId}-{DateTime.Now.ToString "yyyyMMdd-HHmmss"}"""))
                            |> Path.GetFullPath

                        Directory.CreateDirectory outDir |> ignore
                        use cancel = new CancellationTokenSource()

                        let onCancel =
                            ConsoleCancelEventHandler(fun _ e ->
                                e.Cancel <- true
                                cancel.Cancel())

                        Console.CancelKeyPress.AddHandler onCancel
                        let bar = ProgressBar(ctx.Err, not Console.IsErrorRedirected && not ctx.Json)

                        let context: ToolContext = {
                            Input = input
                            Parameters = parameters
                            OutputDir = outDir
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
                            ResolveFile =
                                fun path ->
                                    if File.Exists path then
                                        Ok(Path.GetFullPath path)
                                    else
                                        Error $"{path}: no such file"
                        }

                        let result =
                            try
                                tool.Run context
                            finally
                                Console.CancelKeyPress.RemoveHandler onCancel
                                bar.Finish()

                        let paramsJson = Artifacts.parameters parameters

                        match result with
                        | Ok output ->
                            if ctx.Json then
                                Artifacts.obj [
                                    "tool_id", Artifacts.str toolId
                                    "status", Artifacts.str "completed"
                                    "input", Artifacts.str input
                                    "params", paramsJson
                                    "output_dir", Artifacts.str outDir
                                    "artifacts", Artifacts.strings output.Artifacts
                                    "summary", Artifacts.str output.Summary
                                    "warnings", Artifacts.strings output.Warnings
                                ]
                                |> Artifacts.jsonText
                                |> ctx.Out.WriteLine
                            else
                                ctx.Out.WriteLine output.Summary
                                ctx.Out.WriteLine $"artifacts in {outDir}:"

                                for a in output.Artifacts do
                                    ctx.Out.WriteLine $"  {a}"

                            ExitCode.Ok
                        | Error(ToolFailure.InvalidInput reason) ->
                            ctx.Err.WriteLine $"error: {reason}"
                            ExitCode.ClientError
                        | Error ToolFailure.Canceled ->
                            ctx.Err.WriteLine "canceled"
                            130
        | [ _; _ ] ->
            ctx.Err.WriteLine
                "error: runs on the service need its /v1/runs API, which this build does not have yet; add --local to run in this process"

            ExitCode.ClientError
        | _ ->
            ctx.Err.WriteLine "error: expected the tool id and one input: cts run --local <tool> <input>"
            ExitCode.ClientError

/// `cts token create`.
[<RequireQualifiedAccess>]
module TokenCommands =

    /// `30d`, `12h`, `90m` or `3600s`.
    let parseDuration (text: string) : TimeSpan option =
        let t = text.Trim()

        if t.Length < 2 then
            None
        else
            match Int64.TryParse(t.Substring(0, t.Length - 1)), t[t.Length - 1] with
            | (true, n), 'd' when n > 0L -> Some(TimeSpan.FromDays(float n))
            | (true, n), 'h' when n > 0L -> Some(TimeSpan.FromHours(float n))
            | (true, n), 'm' when n > 0L -> Some(TimeSpan.FromMinutes(float n))
            | (true, n), 's' when n > 0L -> Some(TimeSpan.FromSeconds(float n))
            | _ -> None

    /// Prints a token signed with `CTS_JWT_SECRET` (never printed itself).
    let create
        (ctx: CommandContext)
        (environment: string -> string option)
        (args: ParseResults<TokenCreateArgs>)
        : int =
        let ttlText = args.GetResult(Ttl, defaultValue = "30d")

        match environment "CTS_JWT_SECRET", parseDuration ttlText with
        | None, _ ->
            ctx.Err.WriteLine "error: CTS_JWT_SECRET is not set (the same secret the service uses)"
            ExitCode.ClientError
        | Some secret, _ when Text.Encoding.UTF8.GetByteCount secret < CtsLite.Security.Jwt.MinSecretBytes ->
            ctx.Err.WriteLine
                $"error: CTS_JWT_SECRET is shorter than {CtsLite.Security.Jwt.MinSecretBytes} bytes (value not shown)"

            ExitCode.ClientError
        | _, None ->
            ctx.Err.WriteLine $"error: --ttl '{ttlText}' is not a duration such as 30d, 12h, 90m or 3600s"
            ExitCode.ClientError
        | Some secret, Some ttl ->
            let now = DateTimeOffset.UtcNow

            let token =
                CtsLite.Security.Jwt.create
                    secret
                    (args.GetResult Sub)
                    now
                    (now + ttl)
                    (args.TryGetResult Audience)
                    (args.TryGetResult Issuer)

            ctx.Out.WriteLine token
            ExitCode.Ok
