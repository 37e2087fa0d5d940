namespace CtsLite.Server

open System
open System.Collections.Concurrent
open Microsoft.AspNetCore.Http
open Microsoft.Extensions.DependencyInjection
open CtsLite.Security
open CtsLite.Server.Http

/// Fixed one-minute windows of request counts per caller (token subject, else IP).
[<Sealed>]
type RateLimiter(limitPerMinute: int, time: TimeProvider) =
    let windows = ConcurrentDictionary<string, struct (int64 * int)>()

    let retryAfter (now: int64) =
        int ((now / 60L + 1L) * 60L - now) |> max 1

    /// The limit per minute (0: off).
    member _.Limit = limitPerMinute

    /// Counts one call of `caller` in the current window; the count including it.
    member _.Add(caller: string) : int =
        let window = time.GetUtcNow().ToUnixTimeSeconds() / 60L

        let struct (_, count) =
            windows.AddOrUpdate(
                caller,
                (fun _ -> struct (window, 1)),
                (fun _ (struct (w, n)) -> if w = window then struct (w, n + 1) else struct (window, 1))
            )

        if windows.Count > 100_000 then
            // Old callers' windows are dropped now and then, so the table stays small.
            for kv in windows do
                let struct (w, _) = kv.Value

                if w < window then
                    windows.TryRemove kv.Key |> ignore

        count

    /// Counts the call; None when it may go on, else the seconds until the caller's window ends.
    member this.Check(caller: string) : int option =
        if limitPerMinute <= 0 then
            None
        elif this.Add caller > limitPerMinute then
            Some(retryAfter (time.GetUtcNow().ToUnixTimeSeconds()))
        else
            None

    /// Without counting: the seconds until the window ends when `caller` already used the
    /// minute's calls, else None.
    member _.Peek(caller: string) : int option =
        let now = time.GetUtcNow().ToUnixTimeSeconds()

        match windows.TryGetValue caller with
        | true, struct (w, n) when limitPerMinute > 0 && w = now / 60L && n >= limitPerMinute -> Some(retryAfter now)
        | _ -> None

/// Failed authentications per remote address, in windows of their own: a client sending bad
/// tokens is refused with 429 before its tokens are parsed, and never uses up the requests of
/// callers that authenticate.
[<Sealed>]
type AuthFailures(limiter: RateLimiter, logger: Microsoft.Extensions.Logging.ILogger<AuthFailures>) =

    /// The seconds to wait when `address` already failed the minute's allowance, else None.
    member _.Refused(address: string) : int option = limiter.Peek address

    /// Counts a failure of `address`; logs once per window when it goes over the allowance.
    member _.Record(address: string) =
        if limiter.Limit > 0 && limiter.Add address = limiter.Limit then
            Microsoft.Extensions.Logging.LoggerExtensions.LogWarning(
                logger,
                "{Failures} failed authentications this minute from {Address}: further attempts get 429 until the minute ends",
                limiter.Limit,
                address
            )

/// The address a request comes from.
[<RequireQualifiedAccess>]
module RemoteAddress =

    let private normal (ip: Net.IPAddress) =
        if ip.IsIPv4MappedToIPv6 then ip.MapToIPv4() else ip

    /// The connection's address; when that is one of the `trusted` proxies, the right-most address
    /// of `X-Forwarded-For` that is not itself a trusted proxy (a value that is not an address
    /// stops the walk: the last trusted hop is then the remote address).
    let ofRequest (trusted: Net.IPNetwork list) (ctx: HttpContext) : string =
        match ctx.Connection.RemoteIpAddress with
        | null -> "unknown"
        | ip ->
            let isTrusted (a: Net.IPAddress) =
                trusted |> List.exists (fun n -> n.Contains a)

            let mutable current = normal ip

            if isTrusted current then
                let hops =
                    ctx.Request.Headers["X-Forwarded-For"]
                    |> Seq.collect (fun v -> if isNull v then [||] else v.Split ',')
                    |> Seq.map (fun h -> h.Trim())
                    |> Array.ofSeq
                    |> Array.rev

                let mutable i = 0

                while i < hops.Length && isTrusted current do
                    match Net.IPAddress.TryParse hops[i] with
                    | true, hop ->
                        current <- normal hop
                        i <- i + 1
                    | false, _ -> i <- hops.Length

            string current

/// Authentication and rate limiting as handlers, applied per endpoint by the route table.
[<RequireQualifiedAccess>]
module Auth =

    /// The key under which a request's token subject is kept in `HttpContext.Items`.
    [<Literal>]
    let SubjectKey = "cts.subject"

    let private service = Handlers.service

    let private unauthorized (detail: string) : HttpHandler =
        setHttpHeader "WWW-Authenticate" "JWT realm=\"cts-lite\", Bearer realm=\"cts-lite\""
        >=> Problem.write StatusCodes.Status401Unauthorized detail []

    /// The token of `Authorization: JWT <token>` or `Bearer <token>`.
    let tokenOf (header: string) : string option =
        if isNull header then
            None
        elif header.StartsWith("JWT ", StringComparison.OrdinalIgnoreCase) then
            Some(header.Substring(4).Trim())
        elif header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) then
            Some(header.Substring(7).Trim())
        else
            None

    /// 429 with `Retry-After` (seconds) and the detail.
    let tooManyRequests (retryAfter: int) (detail: string) : HttpHandler =
        setHttpHeader "Retry-After" (string retryAfter)
        >=> Problem.write StatusCodes.Status429TooManyRequests detail []

    let private tooMany (retryAfter: int) : HttpHandler =
        tooManyRequests retryAfter $"too many requests; retry in {retryAfter} s"

    /// Who is calling, for per-caller limits: the token's subject once authenticated, else the
    /// remote address (through `trusted_proxies`).
    let callerOf (ctx: HttpContext) : string =
        match ctx.Items.TryGetValue SubjectKey with
        | true, (:? string as subject) -> $"sub:{subject}"
        | _ -> $"ip:{RemoteAddress.ofRequest (service ctx).Config.TrustedProxies ctx}"

    let private tokenRequired (fromQuery: bool) : HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) ->
            let svc = service ctx

            match svc.Config.JwtSecret with
            | None -> next ctx
            | Some secret ->
                let failures = ctx.RequestServices.GetService<AuthFailures>()
                let address = RemoteAddress.ofRequest svc.Config.TrustedProxies ctx

                let refuse (detail: string) =
                    if not (isNull (box failures)) then
                        failures.Record address

                    unauthorized detail next ctx

                match
                    if isNull (box failures) then
                        None
                    else
                        failures.Refused address
                with
                | Some retryAfter -> tooMany retryAfter next ctx
                | None ->
                    let token =
                        match tokenOf (ctx.Request.Headers.Authorization.ToString()) with
                        | Some t -> Some t
                        | None when fromQuery ->
                            match ctx.Request.Query["access_token"].ToString() with
                            | "" -> None
                            | t -> Some t
                        | None -> None

                    match token with
                    | None when fromQuery ->
                        refuse
                            "this endpoint needs a token: Authorization: JWT <token> (or Bearer <token>), or ?access_token=<token>"
                    | None -> refuse "this endpoint needs a token: Authorization: JWT <token> (or Bearer <token>)"
                    | Some token ->
                        let requirements = {
                            Audience = svc.Config.JwtAudience
                            Issuer = svc.Config.JwtIssuer
                            ClockSkew = TimeSpan.FromSeconds 30.0
                        }

                        match Jwt.validate secret requirements (svc.Time.GetUtcNow()) token with
                        | Error e -> refuse (Jwt.describe e)
                        | Ok claims ->
                            ctx.Items[SubjectKey] <- claims.Subject |> Option.defaultValue "token"
                            next ctx

    /// With a secret configured, a valid token is required; without one, everyone passes (the
    /// service then listens on loopback only). A remote address whose authentications failed
    /// `rate_limit_per_minute` times this minute gets 429 before its token is read.
    let requireToken: HttpHandler = tokenRequired false

    /// As `requireToken`, and the token may also be `?access_token=` (for the GETs a browser opens
    /// directly: WebSockets, EventSources and download links cannot send headers). Request logs
    /// hold the path only, so the token is never logged; errors never echo it.
    let requireTokenOrQuery: HttpHandler = tokenRequired true

    /// 429 with `Retry-After` once the caller (token subject, else remote address) used its
    /// requests of the minute.
    let rateLimit: HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) ->
            let limiter = ctx.RequestServices.GetService<RateLimiter>()

            match
                if isNull (box limiter) then
                    None
                else
                    limiter.Check(callerOf ctx)
            with
            | None -> next ctx
            | Some retryAfter -> tooMany retryAfter next ctx
