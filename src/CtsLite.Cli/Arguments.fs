namespace CtsLite.Cli

open Argu

/// `cts log info`.
type LogInfoArgs =
    | [<MainCommand; Mandatory>] Input of log: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Input _ ->
                "log file (rlog/qlog, zstd, bzip2 or raw), segment folder, or route <folder>/<dongle>|<time>[/start:end][/q|r|a]."

/// `cts log dump`.
type LogDumpArgs =
    | [<MainCommand; Mandatory>] Input of log: string
    | Service of name: string
    | Limit of count: int

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Input _ -> "log file, segment folder or route."
            | Service _ -> "only events of this service (repeatable), e.g. carState."
            | Limit _ -> "stop after this many events."

/// `cts log can`.
type LogCanArgs =
    | [<MainCommand; Mandatory>] Input of log: string
    | Bus of src: int
    | Address of address: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Input _ -> "log file, segment folder or route."
            | Bus _ -> "only frames with this raw src byte (repeatable; 128+ are TX echoes)."
            | Address _ -> "only frames with this address, e.g. 0x146 (repeatable)."

/// `cts log --decompressor`.
[<RequireQualifiedAccess>]
type DecompressorChoice =
    | Auto
    | Native
    | Managed

/// `cts log`: local log reading, no service needed. `--strict` and `--schema` apply to every
/// `cts log` command.
[<RequireSubcommand>]
type LogArgs =
    | [<Inherit>] Strict
    | [<Inherit>] Schema of path: string
    | [<Inherit>] Decompressor of kind: DecompressorChoice
    | [<CliPrefix(CliPrefix.None)>] Info of ParseResults<LogInfoArgs>
    | [<CliPrefix(CliPrefix.None)>] Dump of ParseResults<LogDumpArgs>
    | [<CliPrefix(CliPrefix.None)>] Can of ParseResults<LogCanArgs>

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Strict -> "treat damage (truncation, corruption) as an error instead of a warning."
            | Schema _ -> "decode with this schema: a compiled CodeGeneratorRequest or a .capnp file (needs capnp)."
            | Decompressor _ ->
                "zstd decoder: auto (native libzstd where it loads, else managed; the default), native or managed."
            | Info _ ->
                "counts as tables: events per service, time span, CAN frames per src (--json: one JSON document)."
            | Dump _ -> "every event as one JSON line, as `capnp convert --short binary:json` prints it."
            | Can _ -> "CAN frames as CSV: log_mono_time_ns,kind,src,address,data_hex."

/// `cts dbc check`.
type DbcCheckArgs =
    | [<MainCommand; Mandatory>] Files of dbc: string list

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Files _ -> "DBC files to check (IMPORTs are followed), or a built-in DBC by name."

/// `cts dbc decode`.
type DbcDecodeArgs =
    | [<MainCommand; Mandatory>] Inputs of dbc: string * log: string
    | Signal of name: string
    | Bus of src: int
    | Strict

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Inputs _ ->
                "the DBC (a file, or a built-in one by name: subaru_global_2017_generated.dbc), then the input: a log (file, segment folder or route), a candump -L file or an rlog-to-csv CSV."
            | Signal _ -> "only this MESSAGE.SIGNAL (repeatable); default every signal."
            | Bus _ -> "only frames with this raw src byte (repeatable)."
            | Strict -> "treat damage in the log as an error instead of a warning."

/// `cts dbc`: DBC files.
[<RequireSubcommand>]
type DbcArgs =
    | [<CliPrefix(CliPrefix.None)>] Check of ParseResults<DbcCheckArgs>
    | [<CliPrefix(CliPrefix.None)>] Decode of ParseResults<DbcDecodeArgs>

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Check _ -> "parse DBC files; print message/signal counts or every error as file:line:column."
            | Decode _ -> "decode signals from a log as CSV: time_s,bus,address,message,signal,value,label."

/// `cts run`.
type RunArgs =
    | [<MainCommand; Mandatory>] Target of tool_then_inputs: string list
    | Upload of file: string
    | Upload_Id of upload_id: string
    | Path of service_path: string
    | [<AltCommandLine("-p")>] Param of ``key=value``: string
    | Out_Dir of path: string
    | Local
    | Name of name: string
    | No_Wait
    | Follow
    | Force

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Target _ ->
                "the tool id, then its input: a log file, segment folder, route or CSV here (several log files: one route, in the order given)."
            | Upload _ -> "upload this file as the input (repeatable: several logs are one route, in order)."
            | Upload_Id _ -> "read this upload (see cts uploads list; repeatable: several are one route, in order)."
            | Path _ -> "read this path on the service (a file, segment folder or route under its input roots)."
            | Param _ -> "a parameter as key=value (repeatable), typed by the tool's schema; lists comma-separated."
            | Out_Dir _ -> "directory for the artifacts (created; default ./cts-out/<tool>-<time>)."
            | Name _ -> "a name for the run, shown by cts runs list."
            | No_Wait -> "print the run's id once it is queued and return (follow it later with cts logs --follow)."
            | Follow -> "follow the run's log until it ends, then fetch its artifacts (the default)."
            | Force -> "overwrite files of the same name in --out-dir (others there are left alone)."
            | Local ->
                "run in this process, without the service (default: on the service at --url; local files are uploaded)."

/// `cts runs list`.
[<RequireQualifiedAccess>]
type RunsListArgs =
    | Status of status: string
    | Tool of tool_id: string
    | Limit of count: int
    | All

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Status _ -> "only runs in this state: queued, running, completed, failed or canceled."
            | Tool _ -> "only runs of this tool."
            | Limit _ -> "runs per page, newest first (1-500, default 50)."
            | All -> "every page, not only the first."

/// `cts runs get` and `cts runs cancel`.
[<RequireQualifiedAccess>]
type RunIdArgs =
    | [<MainCommand; Mandatory>] Run_Id of run_id: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Run_Id _ -> "the run's id (see cts runs list)."

/// `cts runs`.
[<RequireSubcommand; RequireQualifiedAccess>]
type RunsArgs =
    | [<CliPrefix(CliPrefix.None)>] List of ParseResults<RunsListArgs>
    | [<CliPrefix(CliPrefix.None)>] Get of ParseResults<RunIdArgs>
    | [<CliPrefix(CliPrefix.None)>] Cancel of ParseResults<RunIdArgs>

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | List _ -> "the service's runs, newest first."
            | Get _ -> "one run: its state, parameters, error and artifacts."
            | Cancel _ -> "cancel a queued or running run."

/// `cts logs`.
[<RequireQualifiedAccess>]
type LogsArgs =
    | [<MainCommand; Mandatory>] Run_Id of run_id: string
    | [<AltCommandLine("-f")>] Follow

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Run_Id _ -> "the run's id."
            | Follow -> "follow the log until the run ends (reconnecting where it left off when the connection drops)."

/// `cts art list`.
[<RequireQualifiedAccess>]
type ArtListArgs =
    | [<MainCommand>] Run_Id of run_id: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Run_Id _ -> "the run whose artifacts to list (default: every run's)."

/// `cts art get`.
[<RequireQualifiedAccess>]
type ArtGetArgs =
    | [<MainCommand; Mandatory>] Artifact_Id of artifact_id: string
    | [<AltCommandLine("-o")>] Out of path: string
    | Stdout
    | Force

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Artifact_Id _ -> "the artifact's id (see cts art list)."
            | Out _ -> "write it here (default: its file name in this folder)."
            | Stdout -> "write its bytes to standard output."
            | Force -> "overwrite a file of the same name (a partial download is resumed without it)."

/// `cts art`.
[<RequireSubcommand; RequireQualifiedAccess>]
type ArtArgs =
    | [<CliPrefix(CliPrefix.None)>] List of ParseResults<ArtListArgs>
    | [<CliPrefix(CliPrefix.None)>] Get of ParseResults<ArtGetArgs>

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | List _ -> "artifacts of a run (or of every run)."
            | Get _ -> "download an artifact, resuming a partial download."

/// `cts upload`.
[<RequireQualifiedAccess>]
type UploadArgs =
    | [<MainCommand; Mandatory>] Files of file: string list

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Files _ -> "logs, CSVs or DBC files to upload; prints each one's id."

/// `cts uploads list`.
[<RequireQualifiedAccess>]
type UploadsListArgs =
    | Limit of count: int

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Limit _ -> "at most this many, newest first (1-500, default 100)."

/// `cts uploads rm`.
[<RequireQualifiedAccess>]
type UploadsRmArgs =
    | [<MainCommand; Mandatory>] Upload_Ids of upload_id: string list

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Upload_Ids _ -> "the uploads to delete, with their files."

/// `cts uploads`.
[<RequireSubcommand; RequireQualifiedAccess>]
type UploadsArgs =
    | [<CliPrefix(CliPrefix.None)>] List of ParseResults<UploadsListArgs>
    | [<CliPrefix(CliPrefix.None)>] Rm of ParseResults<UploadsRmArgs>

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | List _ -> "the service's uploads, newest first."
            | Rm _ -> "delete uploads and their files."

/// `cts config set`.
[<RequireQualifiedAccess>]
type ConfigSetArgs =
    | [<MainCommand; Mandatory>] Entry of key: string * value: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Entry _ -> "the key (url, token or timeout) and its value."

/// `cts config get`.
[<RequireQualifiedAccess>]
type ConfigGetArgs =
    | [<MainCommand>] Key of key: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Key _ -> "one key (url, token or timeout); without it, every key (the token masked)."

/// `cts config`.
[<RequireSubcommand; RequireQualifiedAccess>]
type ConfigArgs =
    | [<CliPrefix(CliPrefix.None)>] Set of ParseResults<ConfigSetArgs>
    | [<CliPrefix(CliPrefix.None)>] Get of ParseResults<ConfigGetArgs>
    | [<SubCommand; CliPrefix(CliPrefix.None)>] Path

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Set _ -> "set a key in the settings file (written readable by you only)."
            | Get _ -> "show the settings file's keys."
            | Path -> "print the settings file's path (CTS_CONFIG, else ~/.config/cts/config.toml)."

/// `cts token create`.
type TokenCreateArgs =
    | [<Mandatory>] Sub of name: string
    | Ttl of duration: string
    | Audience of aud: string
    | Issuer of iss: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Sub _ -> "who the token is for (its sub claim)."
            | Ttl _ -> "how long it is valid: e.g. 30d, 12h, 90m, 3600s (default 30d)."
            | Audience _ -> "the aud claim (when the service requires jwt_audience)."
            | Issuer _ -> "the iss claim (when the service requires jwt_issuer)."

/// `cts token`.
[<RequireSubcommand>]
type TokenArgs =
    | [<CliPrefix(CliPrefix.None)>] Create of ParseResults<TokenCreateArgs>

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Create _ -> "mint an HS256 token with the service's secret (CTS_JWT_SECRET)."

/// `cts mon run`.
[<RequireQualifiedAccess>]
type MonRunArgs =
    | [<MainCommand; Mandatory>] Monitor of monitor: string
    | Replay of log: string
    | Zmq of host: string
    | Duration of seconds: float
    | Record of rlog: string
    | Record_Max_Mb of mb: int
    | Speed of factor: float
    | [<AltCommandLine("-p")>] Param of ``key=value``: string
    | Update_Ms of ms: int
    | Final

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Monitor _ ->
                "the monitor: can_bus_check, can_hybrid_rx_check, panda_state, hybrid_rx_trace or signal_watch."
            | Replay _ -> "log file, segment folder or route to replay into it."
            | Zmq _ -> "watch a comma device's message bridge at this host (the device's IP) live."
            | Duration _ -> "with --zmq: stop after this many seconds (default: until Ctrl+C)."
            | Record _ ->
                "with --zmq: record what is received to this zstd rlog (name.rlog.zst; a new file name--1.rlog.zst... per --record-max-mb)."
            | Record_Max_Mb _ -> "with --record: a new file every this many MB of events (default 100)."
            | Speed _ -> "log time per wall time (default 1: as recorded; 0: as fast as possible)."
            | Param _ -> "a monitor parameter as key=value (repeatable), e.g. -p window_s=2."
            | Update_Ms _ -> "an update every this many milliseconds of log time (default 100)."
            | Final -> "print only the final state (the `end` message)."

/// `cts mon start`.
[<RequireQualifiedAccess>]
type MonStartArgs =
    | [<MainCommand; Mandatory>] Monitor of monitor: string
    | Replay of log: string
    | Zmq of host: string
    | Speed of factor: float
    | [<AltCommandLine("-p")>] Param of ``key=value``: string
    | Record
    | Record_Max_Mb of mb: int
    | Update_Ms of ms: int

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Monitor _ ->
                "the monitor: can_bus_check, can_hybrid_rx_check, panda_state, hybrid_rx_trace or signal_watch."
            | Replay _ ->
                "a log to replay into it: a local file is uploaded first; anything else is a path under the service's input roots."
            | Zmq _ -> "watch a comma device's message bridge at this host live (the service connects to it)."
            | Speed _ -> "with --replay: log time per wall time (default 1; 0: as fast as possible)."
            | Param _ ->
                "a monitor parameter as key=value (repeatable); a local file for a file parameter (a dbc) is uploaded."
            | Record -> "with --zmq: record what is received to zstd rlogs on the service, each listed as an upload."
            | Record_Max_Mb _ -> "with --record: a new file every this many MB (default 100; also every minute)."
            | Update_Ms _ -> "at most one update every this many milliseconds (default 100)."

/// `cts mon ls`.
[<RequireQualifiedAccess>]
type MonLsArgs =
    | Status of status: string
    | Limit of count: int

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Status _ -> "only sessions in this state: running, ended, stopped or failed."
            | Limit _ -> "at most this many, newest first (default 100)."

/// `cts mon stream`.
[<RequireQualifiedAccess>]
type MonStreamArgs =
    | [<MainCommand; Mandatory>] Session of session_id: string
    | Ndjson

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Session _ -> "the session id (see cts mon ls)."
            | Ndjson ->
                "one JSON message per line (also when standard output is not a terminal) instead of a live table."

/// `cts mon stop`.
[<RequireQualifiedAccess>]
type MonStopArgs =
    | [<MainCommand; Mandatory>] Session of session_id: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Session _ -> "the session id (see cts mon ls)."

/// `cts mon`: live monitors.
[<RequireSubcommand; RequireQualifiedAccess>]
type MonArgs =
    | [<CliPrefix(CliPrefix.None)>] Run of ParseResults<MonRunArgs>
    | [<CliPrefix(CliPrefix.None)>] Start of ParseResults<MonStartArgs>
    | [<CliPrefix(CliPrefix.None)>] Ls of ParseResults<MonLsArgs>
    | [<CliPrefix(CliPrefix.None)>] Stream of ParseResults<MonStreamArgs>
    | [<CliPrefix(CliPrefix.None)>] Stop of ParseResults<MonStopArgs>

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Run _ ->
                "run a monitor here, no service, over a replayed log or a live bridge; one JSON message per line."
            | Start _ -> "start a monitor session on the service; prints its id."
            | Ls _ -> "list the service's monitor sessions, newest first."
            | Stream _ -> "watch a session: a live table on a terminal, else one JSON message per line."
            | Stop _ -> "stop a session (idempotent); prints how it ended."

/// `cts ping`.
[<RequireQualifiedAccess>]
type PingArgs =
    | Wait of seconds: int

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Wait _ ->
                "keep asking for up to this many seconds until the service is healthy (for scripts that start it)."

/// `cts capabilities` and `cts tools`.
[<RequireQualifiedAccess>]
type CatalogArgs =
    | [<MainCommand>] Id of tool_or_monitor: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Id _ -> "show only this tool or monitor."

/// `cts version`.
[<RequireQualifiedAccess>]
type VersionArgs =
    | Client

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Client -> "only this cts's version (as cts --version prints it), without asking the service."

/// The shells `cts completion` writes a script for.
[<RequireQualifiedAccess>]
type CompletionShell =
    | Bash
    | Zsh
    | Fish

/// `cts completion`.
[<RequireQualifiedAccess>]
type CompletionArgs =
    | [<MainCommand; Mandatory>] Shell of shell: CompletionShell

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Shell _ -> "the shell: bash, zsh or fish."

/// `cts` and its subcommands. `--url`, `--token` and `--timeout` may be written anywhere on the
/// line (they are moved before the subcommand); the inherited options apply to every subcommand.
[<RequireSubcommand>]
type CtsArgs =
    | [<AltCommandLine("-u")>] Url of url: string
    | Token of token: string
    | Timeout of seconds: int
    | [<Inherit>] Json
    | [<Inherit; AltCommandLine("-q")>] Quiet
    | [<Inherit>] No_Color
    | [<CliPrefix(CliPrefix.None)>] Ping of ParseResults<PingArgs>
    | [<CliPrefix(CliPrefix.None); AltCommandLine("cap")>] Capabilities of ParseResults<CatalogArgs>
    | [<CliPrefix(CliPrefix.None)>] Version of ParseResults<VersionArgs>
    | [<CliPrefix(CliPrefix.None)>] Log of ParseResults<LogArgs>
    | [<CliPrefix(CliPrefix.None)>] Dbc of ParseResults<DbcArgs>
    | [<CliPrefix(CliPrefix.None)>] Tools of ParseResults<CatalogArgs>
    | [<CliPrefix(CliPrefix.None)>] Run of ParseResults<RunArgs>
    | [<CliPrefix(CliPrefix.None); CustomCommandLine("token")>] Token_Command of ParseResults<TokenArgs>
    | [<CliPrefix(CliPrefix.None)>] Config of ParseResults<ConfigArgs>
    | [<CliPrefix(CliPrefix.None)>] Mon of ParseResults<MonArgs>
    | [<CliPrefix(CliPrefix.None)>] Runs of ParseResults<RunsArgs>
    | [<CliPrefix(CliPrefix.None)>] Logs of ParseResults<LogsArgs>
    | [<CliPrefix(CliPrefix.None)>] Art of ParseResults<ArtArgs>
    | [<CliPrefix(CliPrefix.None)>] Upload of ParseResults<UploadArgs>
    | [<CliPrefix(CliPrefix.None)>] Uploads of ParseResults<UploadsArgs>
    | [<CliPrefix(CliPrefix.None)>] Completion of ParseResults<CompletionArgs>

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Url _ ->
                "service URL, anywhere on the line (else CTS_URL, else the settings file's url; default http://127.0.0.1:8080)."
            | Token _ -> "the service's token (else CTS_TOKEN, else the settings file's token)."
            | Timeout _ -> "seconds to wait for each answer of the service (default 30)."
            | Json -> "machine output: one JSON document (or one JSON object per line for streams)."
            | Quiet -> "print only results and errors: no progress, no log lines, no notes."
            | No_Color -> "no colours (also when NO_COLOR is set; colours are used on terminals only)."
            | Ping _ -> "check that the service is up and healthy."
            | Capabilities _ -> "the tools and monitors the service can run, with their parameters."
            | Version _ -> "this cts's version (also cts --version) and, when reachable, the service's."
            | Log _ -> "read openpilot logs locally: info, dump, can."
            | Dbc _ -> "DBC files: check, decode."
            | Tools _ -> "the tools and monitors this cts runs itself (--local, cts mon run), with their parameters."
            | Run _ -> "run a tool on the service (or --local): cts run <tool> <input> -p key=value... --out-dir DIR."
            | Token_Command _ -> "tokens for the service: create."
            | Config _ -> "the settings file (url, token, timeout): set, get, path."
            | Runs _ -> "runs on the service: list, get, cancel."
            | Logs _ -> "a run's log on the service; --follow until it ends."
            | Art _ -> "a run's artifacts on the service: list, get."
            | Upload _ -> "upload files to the service (content-deduplicated); prints their ids."
            | Uploads _ -> "the service's uploads: list, rm."
            | Completion _ ->
                "print the shell completion script: source <(cts completion bash), or zsh, or fish (commands, options, tool ids)."
            | Mon _ ->
                "live monitors of a car's CAN and panda state: run (here), start, ls, stream, stop (on the service)."

/// Reading parse results by pattern. Argu's `GetResult`, `TryGetResult`, `Contains` and
/// `GetResults` take the union case as a quotation, which each call site builds by deserialising
/// it at run time: measured 30 ms of a 190 ms `cts log info` on a cold start. A match over
/// `GetAllResults` reads the same results without that.
[<RequireQualifiedAccess>]
module Results =

    /// Every result `pick` accepts, in command-line order.
    let choose (pick: 'T -> 'a option) (args: ParseResults<'T>) : 'a list =
        args.GetAllResults() |> List.choose pick

    /// The last result `pick` accepts (the one that wins when an option is repeated, as in Argu).
    let tryPick (pick: 'T -> 'a option) (args: ParseResults<'T>) : 'a option = choose pick args |> List.tryLast

    /// The result of a mandatory argument (Argu has refused any command line without it).
    let pick (pick: 'T -> 'a option) (args: ParseResults<'T>) : 'a =
        match tryPick pick args with
        | Some value -> value
        | None -> invalidOp "a mandatory argument is missing after parsing"

    /// Whether a flag was given.
    let has (flag: 'T) (args: ParseResults<'T>) : bool =
        args.GetAllResults() |> List.contains flag

/// The command line before Argu reads it.
[<RequireQualifiedAccess>]
module CommandLine =

    /// The global options that take a value. They are not `Inherit`ed (which would list them in
    /// the help of every local command too); a user may still write them after the subcommand,
    /// so they are moved to the front, each with its value.
    let globals: string list = [ "--url"; "-u"; "--token"; "--timeout" ]

    /// The options of a parser (neither its main argument nor its subcommands).
    let optionCases (parser: ArgumentParser) : ArgumentCaseInfo list =
        parser.GetArgumentCases()
        |> List.filter (fun c -> not c.IsMainCommand && c.ArgumentType <> ArgumentType.SubCommand)

    /// Each command-line name of `cases` with the number of values it takes.
    let names (cases: ArgumentCaseInfo list) : (string * int) list =
        cases
        |> List.collect (fun c ->
            c.CommandLineNames.Value
            |> List.map (fun n -> n, c.UnionCaseInfo.GetFields().Length))

    /// A parser's subcommands by each of their names.
    let subcommandsOf (parser: ArgumentParser) : (string * ArgumentParser) list =
        parser.GetSubCommandParsers()
        |> List.collect (fun s ->
            match s.ParentInfo with
            | Some parent -> parent.CommandLineNames.Value |> List.map (fun n -> n, s)
            | None -> [])

    /// `argv` with the global options first (up to a `--`).
    let hoist (argv: string array) : string array =
        let front = ResizeArray<string>()
        let rest = ResizeArray<string>()
        let mutable i = 0

        while i < argv.Length do
            let arg = argv[i]

            if arg = "--" then
                rest.AddRange(Array.sub argv i (argv.Length - i))
                i <- argv.Length
            elif List.contains arg globals && i + 1 < argv.Length then
                front.Add arg
                front.Add argv[i + 1]
                i <- i + 2
            else
                rest.Add arg
                i <- i + 1

        Array.append (front.ToArray()) (rest.ToArray())

    let private looksLikeOption (arg: string) =
        arg.Length > 1
        && arg[0] = '-'
        && not (System.Char.IsDigit arg[1] || arg[1] = '.')

    /// The first option that the command it is given to does not have, with that command's name.
    /// Argu takes an unknown option as the value of a command's main argument (so that
    /// `cts log info x.rlog --bogus` read `--bogus` as the log); this finds it first. Options are
    /// known along the path of subcommands; an option's values are skipped.
    let unknownOption (parser: ArgumentParser) (argv: string array) : (string * string) option =
        let rec walk (parser: ArgumentParser) (command: string) (known: Map<string, int>) (i: int) =
            let known =
                names (optionCases parser) @ (parser.HelpFlags |> List.map (fun f -> f, 0))
                |> List.fold (fun (m: Map<string, int>) (n, arity) -> m.Add(n, arity)) known

            let subcommands = subcommandsOf parser |> Map.ofList
            let mutable found = None
            let mutable next = None
            let mutable j = i

            while found.IsNone && next.IsNone && j < argv.Length do
                let arg = argv[j]

                if arg = "--" then
                    j <- argv.Length
                else
                    match subcommands.TryFind arg, known.TryFind arg with
                    | Some sub, _ -> next <- Some(sub, $"{command} {arg}", j + 1)
                    | None, Some arity -> j <- j + 1 + arity
                    | None, None when looksLikeOption arg -> found <- Some(arg, command)
                    | None, None -> j <- j + 1

            match found, next with
            | Some unknown, _ -> Some unknown
            | None, Some(sub, name, at) -> walk sub name known at
            | None, None -> None

        walk parser "cts" Map.empty 0
