namespace CtsLite.Server.Http

open System
open System.Diagnostics
open System.Runtime.CompilerServices
open System.Threading.Tasks
open Microsoft.AspNetCore.Builder
open Microsoft.AspNetCore.Http
open Microsoft.Extensions.Logging

/// Turns an exception into a response; Giraffe's `ErrorHandler`.
type ErrorHandler = exn -> ILogger -> HttpHandler

/// Request ids: one per request, echoed in `X-Request-Id`, attached to every log line of it.
[<RequireQualifiedAccess>]
module RequestId =

    /// The header carrying the request id, in and out.
    [<Literal>]
    let Header = "X-Request-Id"

    /// A client-supplied id is kept when it is short and plain (it ends up in logs).
    let isAcceptable (candidate: string) : bool =
        not (String.IsNullOrEmpty candidate)
        && candidate.Length <= 128
        && candidate
           |> Seq.forall (fun c -> Char.IsAsciiLetterOrDigit c || c = '-' || c = '_' || c = '.' || c = ':')

    /// The id to use for this request: the client's acceptable one, or a new one.
    let resolve (ctx: HttpContext) : string =
        match ctx.Request.Headers[Header].ToString() with
        | candidate when isAcceptable candidate -> candidate
        | _ -> Guid.NewGuid().ToString("N")

/// The pipeline's middleware with Giraffe's names, plus request-id logging.
[<Extension>]
type ApplicationBuilderExtensions =

    /// Runs `handler`; a request it skips goes on to the next middleware.
    [<Extension>]
    static member UseGiraffe(app: IApplicationBuilder, handler: HttpHandler) : IApplicationBuilder =
        let func = handler earlyReturn

        app.Use(fun (ctx: HttpContext) (next: RequestDelegate) ->
            task {
                match! func ctx with
                | Some _ -> ()
                | None -> return! next.Invoke ctx
            }
            :> Task)

    /// Catches exceptions from the rest of the pipeline and answers with `errorHandler`. Requests
    /// that fail after the response started can only be aborted.
    [<Extension>]
    static member UseGiraffeErrorHandler(app: IApplicationBuilder, errorHandler: ErrorHandler) : IApplicationBuilder =
        app.Use(fun (ctx: HttpContext) (next: RequestDelegate) ->
            task {
                try
                    do! next.Invoke ctx
                with ex ->
                    let logger =
                        ctx.RequestServices.GetService(typeof<ILoggerFactory>) :?> ILoggerFactory

                    let logger =
                        match logger with
                        | null -> Abstractions.NullLogger.Instance :> ILogger
                        | f -> f.CreateLogger "CtsLite.Server.Errors"

                    match ctx.Response.HasStarted with
                    | true ->
                        logger.LogError(
                            ex,
                            "Request {RequestId} failed after the response started; aborting the connection",
                            ctx.TraceIdentifier
                        )

                        ctx.Abort()
                    | false ->
                        ctx.Response.Clear()
                        let! _ = errorHandler ex logger earlyReturn ctx
                        ()
            }
            :> Task)

    /// Gives each request an id (echoed in `X-Request-Id`, in the log scope) and logs one line per
    /// request: method, path (never the query, which may carry secrets), status and duration.
    [<Extension>]
    static member UseRequestLogging(app: IApplicationBuilder, logger: ILogger) : IApplicationBuilder =
        app.Use(fun (ctx: HttpContext) (next: RequestDelegate) ->
            task {
                let requestId = RequestId.resolve ctx
                ctx.TraceIdentifier <- requestId

                ctx.Response.OnStarting(fun () ->
                    ctx.Response.Headers[RequestId.Header] <- Microsoft.Extensions.Primitives.StringValues requestId
                    Task.CompletedTask)

                use _ = logger.BeginScope("RequestId:{RequestId}", requestId)
                let started = Stopwatch.GetTimestamp()

                try
                    do! next.Invoke ctx
                finally
                    let elapsed = Stopwatch.GetElapsedTime(started).TotalMilliseconds

                    logger.LogInformation(
                        "HTTP {Method} {Path} responded {StatusCode} in {ElapsedMs:0.000} ms (request {RequestId})",
                        ctx.Request.Method,
                        ctx.Request.Path.Value,
                        ctx.Response.StatusCode,
                        elapsed,
                        requestId
                    )
            }
            :> Task)

/// The error handler used by the service.
[<RequireQualifiedAccess>]
module ErrorHandlers =

    /// Client errors raised by the server itself (e.g. Kestrel's body size limit) keep their
    /// status; everything else is logged with its stack trace and answered with a generic 500.
    let problemDetails: ErrorHandler =
        fun (ex: exn) (logger: ILogger) ->
            match ex with
            | :? BadHttpRequestException as bad when bad.StatusCode = StatusCodes.Status413PayloadTooLarge ->
                logger.LogInformation("Request body too large")
                Problem.write bad.StatusCode "request body exceeds the server's size limit" []
            | :? BadHttpRequestException as bad when bad.StatusCode >= 400 && bad.StatusCode < 500 ->
                logger.LogInformation("Bad request rejected by the server: {StatusCode}", bad.StatusCode)
                Problem.write bad.StatusCode "the request could not be read" []
            | :? OperationCanceledException ->
                logger.LogInformation("Request canceled by the client")
                Problem.write 499 "request canceled" []
            | _ ->
                warbler (fun (_, ctx) ->
                    logger.LogError(ex, "Unhandled exception in request {RequestId}", ctx.TraceIdentifier)
                    Problem.internalError)
