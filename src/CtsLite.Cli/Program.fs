module CtsLite.Cli.Program

open System
open System.IO
open System.Net.Http
open Argu

let private environment (name: string) =
    match Environment.GetEnvironmentVariable name with
    | null
    | "" -> None
    | value -> Some value

/// Runs `cts` with `argv`, writing to `out` and `err`; returns the exit code.
let run (argv: string array) (out: TextWriter) (err: TextWriter) : int =
    let parser = ArgumentParser.Create<CtsArgs>(programName = "cts")

    try
        let args = parser.ParseCommandLine(argv, raiseOnUsage = true)
        let timeout = args.GetResult(Timeout, defaultValue = 30)

        if timeout <= 0 then
            err.WriteLine $"error: --timeout must be a positive number of seconds, not {timeout}"
            ExitCode.ClientError
        else

            use http = new HttpClient(Timeout = TimeSpan.FromSeconds(float timeout))
            http.DefaultRequestHeaders.UserAgent.ParseAdd($"cts/{CtsLite.Product.version}")

            let ctx: CommandContext = {
                Url = Client.resolveUrl (args.TryGetResult Url) environment
                Json = args.Contains Json
                Http = http
                Out = out
                Err = err
            }

            match args.TryGetSubCommand() with
            | Some Ping -> Remote.ping ctx
            | Some Capabilities -> Remote.capabilities ctx
            | Some Version -> Remote.version ctx
            | Some _
            | None ->
                err.WriteLine(parser.PrintUsage())
                ExitCode.ClientError
    with :? ArguParseException as e ->
        match e.ErrorCode with
        | ErrorCode.HelpText ->
            out.WriteLine e.Message
            ExitCode.Ok
        | _ ->
            err.WriteLine e.Message
            ExitCode.ClientError

[<EntryPoint>]
let main argv = run argv Console.Out Console.Error
