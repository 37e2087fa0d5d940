namespace CtsLite.Cli

open Argu

/// `cts` and its subcommands. Global options apply to every subcommand.
type CtsArgs =
    | [<AltCommandLine("-u"); Inherit>] Url of url: string
    | [<Inherit>] Json
    | [<Inherit>] Timeout of seconds: int
    | [<SubCommand; CliPrefix(CliPrefix.None)>] Ping
    | [<SubCommand; CliPrefix(CliPrefix.None); AltCommandLine("cap")>] Capabilities
    | [<SubCommand; CliPrefix(CliPrefix.None)>] Version

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Url _ -> "service URL (also CTS_URL; default http://127.0.0.1:8080)."
            | Json -> "print machine-readable JSON instead of text."
            | Timeout _ -> "seconds to wait for the service (default 30)."
            | Ping -> "check that the service is up and healthy."
            | Capabilities -> "list the tools and monitors the service can run."
            | Version -> "print the client version and, when reachable, the service's."
