namespace CtsLite.Server.Http

open System
open System.IO
open System.Text.Json
open System.Text.Json.Serialization
open System.Threading.Tasks
open Microsoft.AspNetCore.Http
open Microsoft.AspNetCore.Mvc
open Microsoft.AspNetCore.WebUtilities
open Microsoft.Extensions.DependencyInjection

/// JSON settings shared by every handler: snake_case names, F# records/unions/options.
[<RequireQualifiedAccess>]
module Json =

    /// Options for the API's JSON (`CtsLite.ApiJson`, the same for every client).
    let createOptions () : JsonSerializerOptions = CtsLite.ApiJson.createOptions ()

    let private fallback = lazy (createOptions ())

    /// The options registered in the services, or the defaults.
    let optionsOf (ctx: HttpContext) : JsonSerializerOptions =
        match ctx.RequestServices with
        | null -> fallback.Value
        | services ->
            match services.GetService<JsonSerializerOptions>() with
            | null -> fallback.Value
            | options -> options

/// Limits on what a request may send; registered in the services, defaults otherwise.
type RequestLimits = {
    /// Largest JSON request body, in bytes.
    MaxJsonBodyBytes: int
} with

    /// 1 MiB JSON bodies.
    static member Default = { MaxJsonBodyBytes = 1024 * 1024 }

/// Response writers with Giraffe's names.
[<AutoOpen>]
module Responses =

    /// Writes `bytes` as the body with the given content type.
    let setBody (contentType: string) (bytes: byte array) : HttpHandler =
        fun (_: HttpFunc) (ctx: HttpContext) -> task {
            ctx.Response.ContentType <- contentType
            ctx.Response.ContentLength <- Nullable(int64 bytes.Length)

            if not (HttpMethods.IsHead ctx.Request.Method) then
                do! ctx.Response.Body.WriteAsync(bytes, 0, bytes.Length)

            return Some ctx
        }

    /// Writes a UTF-8 text body.
    let text (str: string) : HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) ->
            setBody "text/plain; charset=utf-8" (Text.Encoding.UTF8.GetBytes str) next ctx

    /// Serializes `value` with the API's JSON options.
    let json<'T> (value: 'T) : HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) ->
            let bytes = JsonSerializer.SerializeToUtf8Bytes(value, Json.optionsOf ctx)
            setBody "application/json; charset=utf-8" bytes next ctx

/// RFC 9457 problem details: the body of every error the service returns. The detail names what
/// was wrong and where; it never carries exception text.
[<RequireQualifiedAccess>]
module Problem =

    /// The media type of problem responses.
    [<Literal>]
    let ContentType = "application/problem+json"

    /// Writes a problem with the standard title for `status`, a `detail`, the request path as
    /// `instance`, the request id, and any extension members.
    let write (status: int) (detail: string) (extensions: (string * obj) list) : HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) ->
            let problem =
                ProblemDetails(
                    Type = "about:blank",
                    Title = ReasonPhrases.GetReasonPhrase status,
                    Status = Nullable status,
                    Detail = detail,
                    Instance = ctx.Request.Path.Value
                )

            problem.Extensions["request_id"] <- ctx.TraceIdentifier

            for key, value in extensions do
                problem.Extensions[key] <- value

            ctx.Response.StatusCode <- status
            let bytes = JsonSerializer.SerializeToUtf8Bytes(problem, Json.optionsOf ctx)
            setBody ContentType bytes next ctx

    /// 400 with a detail.
    let badRequest (detail: string) : HttpHandler =
        write StatusCodes.Status400BadRequest detail []

    /// 404 with a detail.
    let notFound (detail: string) : HttpHandler =
        write StatusCodes.Status404NotFound detail []

    /// 405 listing the allowed methods (also in the `Allow` header).
    let methodNotAllowed (allowed: string list) : HttpHandler =
        let allow = String.Join(", ", allowed)

        setHttpHeader "Allow" allow
        >=> warbler (fun (_, ctx) ->
            write StatusCodes.Status405MethodNotAllowed $"{ctx.Request.Method} is not allowed here; allowed: {allow}" [])

    /// 413 naming the limit.
    let payloadTooLarge (limitBytes: int64) : HttpHandler =
        write StatusCodes.Status413PayloadTooLarge $"request body exceeds the limit of {limitBytes} bytes" []

    /// 415 naming what is accepted.
    let unsupportedMediaType (accepted: string) : HttpHandler =
        write StatusCodes.Status415UnsupportedMediaType $"request body must be {accepted}" []

    /// 500 with a generic detail; the request id lets an operator find the logged exception.
    let internalError: HttpHandler =
        warbler (fun (_, ctx) ->
            write
                StatusCodes.Status500InternalServerError
                $"an unexpected error occurred; quote request id {ctx.TraceIdentifier} when reporting it"
                [])

/// Request body binding with Giraffe's names.
[<AutoOpen>]
module ModelBinding =

    let private isJson (contentType: string) =
        not (isNull contentType)
        && (let mediaType = (contentType.Split ';').[0].Trim()

            mediaType.Equals("application/json", StringComparison.OrdinalIgnoreCase)
            || mediaType.EndsWith("+json", StringComparison.OrdinalIgnoreCase))

    /// Reads the body up to `limit` bytes; `None` when it is larger.
    let private readBounded (ctx: HttpContext) (limit: int) : Task<byte array option> = task {
        let declared = ctx.Request.ContentLength

        if declared.HasValue && declared.Value > int64 limit then
            return None
        else
            use buffer = new MemoryStream()
            let chunk = Array.zeroCreate<byte> 16384
            let mutable total = 0
            let mutable reading = true

            while reading do
                let! n = ctx.Request.Body.ReadAsync(chunk, 0, chunk.Length, ctx.RequestAborted)

                if n = 0 then
                    reading <- false
                else
                    total <- total + n

                    if total > limit then
                        reading <- false
                    else
                        buffer.Write(chunk, 0, n)

            match total > limit with
            | true -> return None
            | false -> return Some(buffer.ToArray())
    }

    /// Deserializes a JSON body of at most `maxBytes` and passes it to `f`; answers 415 for another
    /// media type, 413 when too large, 400 naming the line and byte when it is not valid JSON of `'T`.
    let bindJsonWithin<'T> (maxBytes: int) (f: 'T -> HttpHandler) : HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) -> task {
            match isJson ctx.Request.ContentType with
            | false -> return! Problem.unsupportedMediaType "application/json" next ctx
            | true ->
                match! readBounded ctx maxBytes with
                | None -> return! Problem.payloadTooLarge (int64 maxBytes) next ctx
                | Some bytes ->
                    let parsed =
                        try
                            match JsonSerializer.Deserialize<'T>(ReadOnlySpan bytes, Json.optionsOf ctx) with
                            | v when isNull (box v) -> Error "request body must be a JSON value, not null"
                            | v -> Ok v
                        with :? JsonException as e ->
                            let line = (e.LineNumber |> Option.ofNullable |> Option.defaultValue 0L) + 1L

                            let col = (e.BytePositionInLine |> Option.ofNullable |> Option.defaultValue 0L) + 1L

                            let path = e.Path |> Option.ofObj |> Option.defaultValue "$"

                            Error
                                $"request body is not valid JSON for this endpoint at {path} (line {line}, byte {col})"

                    match parsed with
                    | Ok value -> return! f value next ctx
                    | Error detail -> return! Problem.badRequest detail next ctx
        }

    /// `bindJsonWithin` with the registered `RequestLimits` (1 MiB by default).
    let bindJson<'T> (f: 'T -> HttpHandler) : HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) ->
            let limits =
                match ctx.RequestServices with
                | null -> RequestLimits.Default
                | services ->
                    match services.GetService<RequestLimits>() |> box with
                    | null -> RequestLimits.Default
                    | :? RequestLimits as l -> l
                    | _ -> RequestLimits.Default

            bindJsonWithin limits.MaxJsonBodyBytes f next ctx
