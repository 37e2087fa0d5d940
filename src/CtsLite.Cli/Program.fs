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

/// Where standard output and error go: the terminals of this process, or elsewhere (a pipe, a
/// file, a test's memory).
type private Terminals = { Out: bool; Err: bool }

let private runWith
    (terminals: Terminals)
    (argv: string array)
    (out: TextWriter)
    (stdout: Stream)
    (err: TextWriter)
    : int =
    // The structure of the argument types is checked by a test, not on every start (it costs
    // tens of milliseconds of reflection).
    let parser =
        ArgumentParser.Create<CtsArgs>(programName = "cts", checkStructure = false)

    let argv = CommandLine.hoist argv

    try
        match CommandLine.unknownOption parser argv with
        | Some(option, command) ->
            err.WriteLine $"error: {command} has no option {option} (see {command} --help)"
            ExitCode.ClientError
        | None ->

            let args = parser.ParseCommandLine(argv, raiseOnUsage = true)
            let settingsFile = Settings.path environment

            let isConfig =
                match args.GetSubCommand() with
                | Config _ -> true
                | _ -> false

            // The settings file, read only when it is there; a broken one stops every command but
            // `cts config`, which is how it is mended.
            let settings =
                match Settings.read settingsFile with
                | Ok values -> Ok values
                | Error _ when isConfig -> Ok Map.empty
                | Error e -> Error e

            match settings with
            | Error e ->
                err.WriteLine $"error: {e}"
                ExitCode.ClientError
            | Ok settings ->

                Settings.permissionWarning settingsFile settings |> Option.iter err.WriteLine

                // A flag, else the variable, else the settings file.
                let environment (name: string) =
                    environment name
                    |> Option.orElse (
                        match name with
                        | "CTS_URL" -> settings.TryFind "url"
                        | "CTS_TOKEN" -> settings.TryFind "token"
                        | _ -> None
                    )

                let timeout =
                    args
                    |> Results.tryPick (function
                        | Timeout x -> Some x
                        | _ -> None)
                    |> Option.orElse (
                        settings.TryFind "timeout"
                        |> Option.bind (fun t ->
                            match Int32.TryParse t with
                            | true, n -> Some n
                            | false, _ -> None)
                    )
                    |> Option.defaultValue 30

                let token =
                    args
                    |> Results.tryPick (function
                        | Token t -> Some t
                        | _ -> None)
                    |> Option.orElse (environment "CTS_TOKEN")

                if timeout <= 0 then
                    err.WriteLine $"error: --timeout must be a positive number of seconds, not {timeout}"
                    ExitCode.ClientError
                else

                    let http =
                        lazy
                            (let http = new HttpClient(Timeout = TimeSpan.FromSeconds(float timeout))
                             http.DefaultRequestHeaders.UserAgent.ParseAdd($"cts/{CtsLite.Product.version}")

                             // The service's token (see `cts token create`), sent in comma's `JWT <token>` form.
                             match token with
                             | Some token ->
                                 http.DefaultRequestHeaders.TryAddWithoutValidation("Authorization", $"JWT {token}")
                                 |> ignore
                             | None -> ()

                             http)

                    use _ = {
                        new IDisposable with
                            member _.Dispose() =
                                if http.IsValueCreated then
                                    http.Value.Dispose()
                    }

                    // https://no-color.org: any value, even empty, asks for no colour.
                    let colors =
                        not (Results.has No_Color args)
                        && isNull (Environment.GetEnvironmentVariable "NO_COLOR")

                    let ctx: CommandContext = {
                        Url =
                            Client.resolveUrl
                                (args
                                 |> Results.tryPick (function
                                     | Url x -> Some x
                                     | _ -> None))
                                environment
                        Json = Results.has Json args
                        Quiet = Results.has Quiet args
                        Color = terminals.Out && colors
                        ErrColor = terminals.Err && colors
                        Live = terminals.Err && not (Results.has Quiet args) && not (Results.has Json args)
                        Http = http
                        Out = out
                        OutStream = stdout
                        Err = err
                    }

                    match args.GetSubCommand() with
                    | Ping a -> Remote.ping ctx a
                    | Capabilities a -> Remote.capabilities ctx a
                    | Version a -> Remote.version ctx a
                    | Tools a -> RunCommands.tools ctx a
                    | Run a -> RunCommands.run ctx a
                    | Token_Command tokenArgs ->
                        match tokenArgs.GetSubCommand() with
                        | Create a -> TokenCommands.create ctx environment a
                    | Config configArgs -> ConfigCommands.run ctx settingsFile configArgs
                    | Mon monArgs ->
                        match monArgs.GetSubCommand() with
                        | MonArgs.Run a -> MonCommands.run ctx a
                        | MonArgs.Start a -> MonCommands.start ctx a
                        | MonArgs.Ls a -> MonCommands.list ctx a
                        | MonArgs.Stream a -> MonCommands.stream ctx a
                        | MonArgs.Stop a -> MonCommands.stop ctx a
                    | Runs runsArgs ->
                        match runsArgs.GetSubCommand() with
                        | RunsArgs.List a -> RunsCommands.list ctx a
                        | RunsArgs.Get a -> RunsCommands.get ctx a
                        | RunsArgs.Cancel a -> RunsCommands.cancel ctx a
                    | Logs a -> RunsCommands.logs ctx a
                    | Art artArgs ->
                        match artArgs.GetSubCommand() with
                        | ArtArgs.List a -> RunsCommands.artifacts ctx a
                        | ArtArgs.Get a -> RunsCommands.download ctx a
                    | Upload a -> RunsCommands.upload ctx a
                    | Completion a ->
                        out.Write(Completion.script (a |> Results.pick (fun (CompletionArgs.Shell s) -> Some s)))
                        ExitCode.Ok
                    | Uploads uploadsArgs ->
                        match uploadsArgs.GetSubCommand() with
                        | UploadsArgs.List a -> RunsCommands.uploads ctx a
                        | UploadsArgs.Rm a -> RunsCommands.removeUploads ctx a
                    | Dbc dbcArgs ->
                        match dbcArgs.GetSubCommand() with
                        | Check a -> DbcCommands.check ctx a
                        | Decode a -> DbcCommands.decode ctx a
                    | Log logArgs ->
                        let common: LogCommands.Common = {
                            Strict = Results.has LogArgs.Strict logArgs
                            Schema =
                                logArgs
                                |> Results.tryPick (function
                                    | LogArgs.Schema x -> Some x
                                    | _ -> None)
                            Decompressor =
                                match
                                    logArgs
                                    |> Results.tryPick (function
                                        | LogArgs.Decompressor x -> Some x
                                        | _ -> None)
                                with
                                | None
                                | Some DecompressorChoice.Auto -> CtsLite.Capnp.Decompressor.Auto
                                | Some DecompressorChoice.Native -> CtsLite.Capnp.Decompressor.Native
                                | Some DecompressorChoice.Managed -> CtsLite.Capnp.Decompressor.Managed
                        }

                        match logArgs.GetSubCommand() with
                        | Info a -> LogCommands.info ctx common a
                        | Dump a -> LogCommands.dump ctx common a
                        | Can a -> LogCommands.can ctx common a
                        | other -> invalidOp $"not a subcommand: {other}"
                    | other -> invalidOp $"not a subcommand: {other}"
    with :? ArguParseException as e ->
        match e.ErrorCode with
        | ErrorCode.HelpText ->
            out.WriteLine e.Message
            ExitCode.Ok
        | _ ->
            err.WriteLine e.Message
            ExitCode.ClientError

let private runOn (terminals: Terminals) (argv: string array) (stdout: Stream) (err: TextWriter) : int =
    use out =
        new StreamWriter(stdout, Text.UTF8Encoding(false), 65536, leaveOpen = true, NewLine = "\n")

    try
        match argv with
        // Before any parsing: scripts ask for it to pick their behaviour, and it must be instant.
        | [| "--version" |] ->
            out.WriteLine CtsLite.Product.version
            ExitCode.Ok
        // What a shell asks on every Tab: candidates one per line, never an error.
        | _ when argv.Length > 0 && argv[0] = Completion.Command ->
            let parser =
                ArgumentParser.Create<CtsArgs>(programName = "cts", checkStructure = false)

            for word in Completion.candidates parser (List.ofArray argv[1..]) do
                out.WriteLine word

            ExitCode.Ok
        | _ -> runWith terminals argv out stdout err
    finally
        out.Flush()

/// Runs `cts` with `argv`, writing to `stdout` and `err` (neither a terminal); returns the exit
/// code.
let run (argv: string array) (stdout: Stream) (err: TextWriter) : int =
    runOn { Out = false; Err = false } argv stdout err

[<EntryPoint>]
let main argv =
    use stdout = Console.OpenStandardOutput()

    runOn
        {
            Out = not Console.IsOutputRedirected
            Err = not Console.IsErrorRedirected
        }
        argv
        stdout
        Console.Error
