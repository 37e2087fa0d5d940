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

let private runWith (argv: string array) (out: TextWriter) (stdout: Stream) (err: TextWriter) : int =
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

            // The service's token (see `cts token create`), sent in comma's `JWT <token>` form.
            match environment "CTS_TOKEN" with
            | Some token ->
                http.DefaultRequestHeaders.TryAddWithoutValidation("Authorization", $"JWT {token}")
                |> ignore
            | None -> ()

            let ctx: CommandContext = {
                Url = Client.resolveUrl (args.TryGetResult Url) environment
                Json = args.Contains Json
                Http = http
                Out = out
                OutStream = stdout
                Err = err
            }

            match args.TryGetSubCommand() with
            | Some Ping -> Remote.ping ctx
            | Some Capabilities -> Remote.capabilities ctx
            | Some Version -> Remote.version ctx
            | Some Tools -> RunCommands.tools ctx
            | Some(Run a) -> RunCommands.run ctx a
            | Some(Token tokenArgs) ->
                match tokenArgs.TryGetSubCommand() with
                | Some(Create a) -> TokenCommands.create ctx environment a
                | None ->
                    err.WriteLine(tokenArgs.Parser.PrintUsage())
                    ExitCode.ClientError
            | Some(Dbc dbcArgs) ->
                match dbcArgs.TryGetSubCommand() with
                | Some(Check a) -> DbcCommands.check ctx a
                | Some(Decode a) -> DbcCommands.decode ctx a
                | None ->
                    err.WriteLine(dbcArgs.Parser.PrintUsage())
                    ExitCode.ClientError
            | Some(Log logArgs) ->
                match logArgs.TryGetSubCommand() with
                | Some(Info a) -> LogCommands.info ctx a
                | Some(Dump a) -> LogCommands.dump ctx a
                | Some(Can a) -> LogCommands.can ctx a
                | None ->
                    err.WriteLine(logArgs.Parser.PrintUsage())
                    ExitCode.ClientError
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

/// Runs `cts` with `argv`, writing to `stdout` and `err`; returns the exit code.
let run (argv: string array) (stdout: Stream) (err: TextWriter) : int =
    use out =
        new StreamWriter(stdout, Text.UTF8Encoding(false), 65536, leaveOpen = true, NewLine = "\n")

    try
        runWith argv out stdout err
    finally
        out.Flush()

[<EntryPoint>]
let main argv =
    use stdout = Console.OpenStandardOutput()
    run argv stdout Console.Error
