module CtsLite.Server.Program

open System
open System.IO
open Argu
open Microsoft.Extensions.DependencyInjection
open Microsoft.Extensions.Hosting
open Microsoft.Extensions.Logging
open CtsLite

/// Command-line arguments of the service.
type ServerArgs =
    | [<AltCommandLine("-c")>] Config of path: string
    | Write_OpenApi of path: string

    interface IArgParserTemplate with
        member this.Usage =
            match this with
            | Config _ -> "TOML configuration file (also CTS_CONFIG); CTS_<KEY> variables override it."
            | Write_OpenApi _ ->
                "Write the OpenAPI document of this build to the file and exit (docs/openapi.json is one)."

let private fail (message: string) =
    eprintfn "cts-lite: %s" message
    2

/// Whether the configured address can be listened on, tried before the host starts so a busy or
/// forbidden port is one line naming the setting to change, not the host's stack traces.
let private listenable (config: ServiceConfig) : Result<unit, string> =
    match Net.IPAddress.TryParse config.ApiHost with
    | true, ip when config.ApiPort <> 0 ->
        let where = Startup.urlFor config

        try
            use probe = new Net.Sockets.TcpListener(ip, config.ApiPort)
            probe.Start()
            probe.Stop()
            Ok()
        with :? Net.Sockets.SocketException as e ->
            match e.SocketErrorCode with
            | Net.Sockets.SocketError.AddressAlreadyInUse ->
                Error
                    $"cannot listen on {where}: the address is already in use (is CtsLite already running?); choose another port with api_port or CTS_API_PORT"
            | Net.Sockets.SocketError.AccessDenied ->
                Error
                    $"cannot listen on {where}: permission denied (ports below 1024 need privileges); choose another port with api_port or CTS_API_PORT"
            | Net.Sockets.SocketError.AddressNotAvailable ->
                Error
                    $"cannot listen on {where}: {config.ApiHost} is not an address of this machine; change api_host or CTS_API_HOST"
            | _ -> Ok()
    | _ -> Ok()

let private serve (loaded: LoadedConfig) (store: IStore) : int =
    let config = loaded.Config

    use host =
        Startup.buildHost (Startup.createContext config store TimeProvider.System) true

    let logger =
        host.Services.GetRequiredService<ILoggerFactory>().CreateLogger("CtsLite.Server")

    for warning in loaded.Warnings do
        logger.LogWarning("Configuration: {Warning}", warning)

    if config.JwtSecret.IsNone then
        logger.LogWarning("No jwt_secret configured: authentication is off, so the service binds to loopback only")

    host.Start()

    for address in Startup.addresses host do
        logger.LogInformation(
            "CtsLite {Version} listening on {Address} (data dir {DataDir})",
            Product.version,
            address,
            config.DataDir
        )

    host.WaitForShutdown()
    logger.LogInformation("CtsLite stopped")
    0

[<EntryPoint>]
let main argv =
    let parser = ArgumentParser.Create<ServerArgs>(programName = "CtsLite.Server")

    try
        let args = parser.ParseCommandLine(argv)

        match args.TryGetResult Write_OpenApi with
        | Some path ->
            File.WriteAllText(path, (ApiDocument.ofEndpoints Routes.endpoints).Text)
            eprintfn "cts-lite: wrote %s" path
            0
        | None ->

            match Config.load (args.TryGetResult Config) (Config.processEnvironment ()) Config.readFile with
            | Error errors ->
                for e in errors do
                    eprintfn "cts-lite: configuration error: %s" (Config.describe e)

                2
            | Ok loaded ->
                let dataDir = loaded.Config.DataDir

                let created =
                    try
                        Directory.CreateDirectory dataDir |> ignore
                        Ok()
                    with
                    | :? UnauthorizedAccessException -> Error "permission denied"
                    | :? IOException as e -> Error e.Message

                match created with
                | Error reason -> fail $"data_dir {dataDir} cannot be created: {reason}"
                | Ok() ->
                    match listenable loaded.Config with
                    | Error reason ->
                        eprintfn "cts-lite: %s" reason
                        1
                    | Ok() ->
                        match SqliteStore.openIn dataDir with
                        | Error e -> fail (StoreError.describe e)
                        | Ok store ->
                            use store = store
                            serve loaded store
    with :? ArguParseException as e ->
        match e.ErrorCode with
        | ErrorCode.HelpText ->
            printfn "%s" e.Message
            0
        | _ ->
            eprintfn "%s" e.Message
            2
