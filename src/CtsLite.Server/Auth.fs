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

    /// None when the call may go on; else the seconds until the caller's window ends.
    member _.Check(caller: string) : int option =
        if limitPerMinute <= 0 then
            None
        else
            let now = time.GetUtcNow().ToUnixTimeSeconds()
            let window = now / 60L

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

            if count > limitPerMinute then
                Some(int ((window + 1L) * 60L - now) |> max 1)
            else
                None

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
        elif header.StartsWith("JWT ", StringComparison.Ordinal) then
            Some(header.Substring(4).Trim())
        elif header.StartsWith("Bearer ", StringComparison.OrdinalIgnoreCase) then
            Some(header.Substring(7).Trim())
        else
            None

    /// With a secret configured, a valid token is required; without one, everyone passes (the
    /// service then listens on loopback only).
    let requireToken: HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) ->
            let svc = service ctx

            match svc.Config.JwtSecret with
            | None -> next ctx
            | Some secret ->
                match tokenOf (ctx.Request.Headers.Authorization.ToString()) with
                | None ->
                    unauthorized "this endpoint needs a token: Authorization: JWT <token> (or Bearer <token>)" next ctx
                | Some token ->
                    let requirements = {
                        Audience = svc.Config.JwtAudience
                        Issuer = svc.Config.JwtIssuer
                        ClockSkew = TimeSpan.FromSeconds 30.0
                    }

                    match Jwt.validate secret requirements (svc.Time.GetUtcNow()) token with
                    | Error e -> unauthorized (Jwt.describe e) next ctx
                    | Ok claims ->
                        ctx.Items[SubjectKey] <- claims.Subject |> Option.defaultValue "token"
                        next ctx

    /// 429 with `Retry-After` once the caller (token subject, else remote IP) used its requests of the minute.
    let rateLimit: HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) ->
            let limiter = ctx.RequestServices.GetService<RateLimiter>()

            let caller =
                match ctx.Items.TryGetValue SubjectKey with
                | true, (:? string as s) -> $"sub:{s}"
                | _ ->
                    match ctx.Connection.RemoteIpAddress with
                    | null -> "ip:unknown"
                    | ip -> $"ip:{ip}"

            match if isNull (box limiter) then None else limiter.Check caller with
            | None -> next ctx
            | Some retryAfter ->
                (setHttpHeader "Retry-After" (string retryAfter)
                 >=> Problem.write StatusCodes.Status429TooManyRequests $"too many requests; retry in {retryAfter} s" [])
                    next
                    ctx
