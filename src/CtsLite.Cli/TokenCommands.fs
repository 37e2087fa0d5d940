namespace CtsLite.Cli

open System
open Argu

/// `cts token create`.
[<RequireQualifiedAccess>]
module TokenCommands =

    /// `30d`, `12h`, `90m` or `3600s`.
    let parseDuration (text: string) : TimeSpan option =
        let t = text.Trim()

        if t.Length < 2 then
            None
        else
            match Int64.TryParse(t.Substring(0, t.Length - 1)), t[t.Length - 1] with
            | (true, n), 'd' when n > 0L -> Some(TimeSpan.FromDays(float n))
            | (true, n), 'h' when n > 0L -> Some(TimeSpan.FromHours(float n))
            | (true, n), 'm' when n > 0L -> Some(TimeSpan.FromMinutes(float n))
            | (true, n), 's' when n > 0L -> Some(TimeSpan.FromSeconds(float n))
            | _ -> None

    /// Prints a token signed with `CTS_JWT_SECRET` (never printed itself).
    let create
        (ctx: CommandContext)
        (environment: string -> string option)
        (args: ParseResults<TokenCreateArgs>)
        : int =
        let ttlText =
            args
            |> Results.tryPick (function
                | Ttl t -> Some t
                | _ -> None)
            |> Option.defaultValue "30d"

        let subject =
            args
            |> Results.pick (function
                | Sub s -> Some s
                | _ -> None)

        let audience =
            args
            |> Results.tryPick (function
                | Audience a -> Some a
                | _ -> None)

        let issuer =
            args
            |> Results.tryPick (function
                | Issuer i -> Some i
                | _ -> None)

        match environment "CTS_JWT_SECRET", parseDuration ttlText with
        | None, _ ->
            ctx.Err.WriteLine "error: CTS_JWT_SECRET is not set (the same secret the service uses)"
            ExitCode.ClientError
        | Some secret, _ when Text.Encoding.UTF8.GetByteCount secret < CtsLite.Security.Jwt.MinSecretBytes ->
            ctx.Err.WriteLine
                $"error: CTS_JWT_SECRET is shorter than {CtsLite.Security.Jwt.MinSecretBytes} bytes (value not shown)"

            ExitCode.ClientError
        | _, None ->
            ctx.Err.WriteLine $"error: --ttl '{ttlText}' is not a duration such as 30d, 12h, 90m or 3600s"
            ExitCode.ClientError
        | Some secret, Some ttl ->
            let now = DateTimeOffset.UtcNow

            let token =
                CtsLite.Security.Jwt.create secret subject now (now + ttl) audience issuer

            ctx.Out.WriteLine token
            ExitCode.Ok
