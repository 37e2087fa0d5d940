namespace CtsLite.Server

open System
open Microsoft.AspNetCore.Builder
open Microsoft.AspNetCore.Cors.Infrastructure
open Microsoft.AspNetCore.Hosting
open Microsoft.AspNetCore.Hosting.Server
open Microsoft.AspNetCore.Hosting.Server.Features
open Microsoft.Extensions.Hosting
open Microsoft.Extensions.DependencyInjection
open Microsoft.Extensions.Logging
open CtsLite.Server.Http

/// Wiring shared by the real host and the in-process test host.
[<RequireQualifiedAccess>]
module Startup =

    /// Features this build of the service offers (each one works).
    let features: string list = [
        "health_check"
        "tool_discovery"
        "problem_details"
        "request_id"
        "runs"
        "run_logs"
        "artifacts"
        "idempotency"
        "uploads"
        "jwt_auth"
        "rate_limiting"
        "retention"
        "monitors"
    ]

    /// The service context for a configuration and an open store.
    let createContext (config: ServiceConfig) (store: IStore) (time: TimeProvider) : ServiceContext = {
        Config = config
        Store = store
        Runs = SqliteRunStore.create config.DataDir
        Time = time
        StartedAt = time.GetUtcNow()
        Features = features
        Uploads = SlotGate(config.MaxConcurrentUploads, config.MaxUploadsPerCaller)
        Streams = SlotGate(config.MaxSseStreams, config.MaxSseStreamsPerCaller)
        Sessions = SqliteMonitorStore.create config.DataDir SessionOwners.lease
        CreateFile =
            fun path ->
                new IO.FileStream(path, IO.FileMode.CreateNew, IO.FileAccess.Write, IO.FileShare.None, 81920, true)
    }

    /// What browsers on `origins` may do: the API's methods and headers, and read the headers
    /// clients need (ETag, Content-Disposition, Retry-After…). No origins: no CORS headers at all.
    let corsPolicy (origins: string list) (policy: CorsPolicyBuilder) : unit =
        let policy =
            if List.contains "*" origins then
                policy.AllowAnyOrigin()
            else
                policy.WithOrigins(Array.ofList origins)

        policy
            .WithMethods("GET", "HEAD", "POST", "DELETE")
            .WithHeaders(
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "Last-Event-ID",
                "X-Filename",
                "X-Request-Id",
                "Range",
                "If-None-Match"
            )
            .WithExposedHeaders(
                "ETag",
                "Content-Disposition",
                "Content-Range",
                "Accept-Ranges",
                "Location",
                "Retry-After",
                "X-Request-Id"
            )
            .SetPreflightMaxAge(TimeSpan.FromMinutes 10.0)
        |> ignore

    /// Registers the service's singletons.
    let configureServices (context: ServiceContext) (services: IServiceCollection) : unit =
        services
            .AddSingleton<ServiceContext>(context)
            .AddSingleton<ApiDocument>(ApiDocument.ofEndpoints Routes.endpoints)
            .AddSingleton<Handlers.HealthMonitor>(Handlers.HealthMonitor context)
            .AddSingleton<Handlers.CapabilitiesDocument>(fun sp ->
                Handlers.CapabilitiesDocument.Of context (sp.GetRequiredService<Text.Json.JsonSerializerOptions>()))
            .AddSingleton<Text.Json.JsonSerializerOptions>(Json.createOptions ())
            .AddSingleton<RequestLimits>(
                {
                    MaxJsonBodyBytes = context.Config.MaxJsonBodyBytes
                }
            )
            .AddSingleton<RateLimiter>(RateLimiter(context.Config.RateLimitPerMinute, context.Time))
            .AddSingleton<RunFeed>(RunFeed(context.Runs, context.Time, TimeSpan.FromMilliseconds 200.0))
            .AddSingleton<AuthFailures>(fun sp ->
                AuthFailures(
                    RateLimiter(context.Config.RateLimitPerMinute, context.Time),
                    sp.GetRequiredService<ILogger<AuthFailures>>()
                ))
            .AddSingleton<RunEngine>(fun sp ->
                new RunEngine(
                    context.Config,
                    context.Runs,
                    context.Time,
                    sp.GetRequiredService<ILogger<RunEngine>>(),
                    RunInputs.fileResolver context.Runs context.Config.InputRoots
                ))
            .AddSingleton<IRunEngine>(fun sp -> sp.GetRequiredService<RunEngine>() :> IRunEngine)
            .AddHostedService<RunEngine>(fun sp -> sp.GetRequiredService<RunEngine>())
            .AddSingleton<MonitorSessions>(fun sp ->
                new MonitorSessions(
                    context.Config,
                    context.Sessions,
                    context.Runs,
                    context.Time,
                    sp.GetRequiredService<ILogger<MonitorSessions>>()
                ))
            .AddHostedService<MonitorSessions>(fun sp -> sp.GetRequiredService<MonitorSessions>())
            .AddHostedService<RetentionSweeper>(fun sp ->
                new RetentionSweeper(
                    context.Config,
                    context.Runs,
                    context.Time,
                    sp.GetRequiredService<ILogger<RetentionSweeper>>()
                ))
            .AddCors(fun o -> o.AddDefaultPolicy(corsPolicy context.Config.CorsOrigins))
        |> ignore

    /// Logging: single-line text in development, JSON lines in production; scopes carry the
    /// request id. ASP.NET's own chatter stays at warning unless a lower level is asked for.
    let configureLogging (config: ServiceConfig) (logging: ILoggingBuilder) : unit =
        logging.ClearProviders().SetMinimumLevel(config.LogLevel) |> ignore

        match config.Environment with
        | DeploymentEnvironment.Production ->
            logging.AddJsonConsole(fun o ->
                o.IncludeScopes <- true
                o.UseUtcTimestamp <- true
                o.TimestampFormat <- "yyyy-MM-ddTHH:mm:ss.fffZ")
            |> ignore
        | DeploymentEnvironment.Development ->
            logging.AddSimpleConsole(fun o ->
                // The request id is in each request's own lines; ASP.NET's scopes would repeat it.
                o.IncludeScopes <- false
                o.SingleLine <- true
                o.UseUtcTimestamp <- true
                o.TimestampFormat <- "HH:mm:ss.fff ")
            |> ignore

        let frameworkLevel = max LogLevel.Warning config.LogLevel

        logging.AddFilter("Microsoft", frameworkLevel).AddFilter("System", frameworkLevel)
        |> ignore

    /// The middleware order: request id and logging outermost, then errors, then the routes.
    let configureApp (app: IApplicationBuilder) : unit =
        let logger =
            app.ApplicationServices.GetRequiredService<ILoggerFactory>().CreateLogger("CtsLite.Server.Requests")

        app.UseRequestLogging(logger) |> ignore

        // Preflights are answered before authentication (browsers send them without a token).
        if not (List.isEmpty (app.ApplicationServices.GetRequiredService<ServiceContext>()).Config.CorsOrigins) then
            app.UseCors() |> ignore

        // Pings keep a quiet watcher's connection through proxies and NAT; heartbeats say the
        // session is alive.
        app.UseWebSockets(WebSocketOptions(KeepAliveInterval = TimeSpan.FromSeconds 20.0))
        |> ignore

        app.UseGiraffeErrorHandler(ErrorHandlers.problemDetails).UseGiraffe(Routes.pipeline Routes.endpoints)
        |> ignore

    /// The `http://` URL Kestrel binds for a configuration (IPv6 literals bracketed).
    let urlFor (config: ServiceConfig) : string =
        match Net.IPAddress.TryParse config.ApiHost with
        | true, ip when ip.AddressFamily = Net.Sockets.AddressFamily.InterNetworkV6 -> $"http://[{ip}]:{config.ApiPort}"
        | _ -> $"http://{config.ApiHost}:{config.ApiPort}"

    /// The real host: Kestrel on the configured address. With the console lifetime, SIGTERM and
    /// Ctrl-C stop it gracefully, letting requests in flight finish for up to 30 s.
    let buildHost (context: ServiceContext) (consoleLifetime: bool) : IHost =
        let builder = HostBuilder()

        if consoleLifetime then
            builder.UseConsoleLifetime(fun o -> o.SuppressStatusMessages <- true) |> ignore

        builder
            .UseContentRoot(AppContext.BaseDirectory)
            .ConfigureLogging(configureLogging context.Config)
            .ConfigureServices(fun services ->
                configureServices context services

                services.Configure<HostOptions>(fun (o: HostOptions) -> o.ShutdownTimeout <- TimeSpan.FromSeconds 30.0)
                |> ignore)
            .ConfigureWebHost(fun web ->
                web
                    .UseKestrel(fun k ->
                        k.AddServerHeader <- false
                        k.Limits.MaxRequestBodySize <- Nullable(int64 context.Config.MaxJsonBodyBytes))
                    .UseUrls(urlFor context.Config)
                    .Configure(configureApp)
                |> ignore)
            .Build()

    /// The addresses a started host listens on.
    let addresses (host: IHost) : string list =
        host.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>().Addresses
        |> List.ofSeq
