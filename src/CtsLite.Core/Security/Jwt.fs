namespace CtsLite.Security

open System
open System.Security.Cryptography
open System.Text
open System.Text.Json

/// Why a token was refused. The token itself never appears in a reason.
[<RequireQualifiedAccess>]
type JwtError =
    | Malformed of string
    | UnsupportedAlgorithm of string
    | BadSignature
    | MissingExpiry
    | Expired
    | NotYetValid
    | WrongAudience
    | WrongIssuer

/// What a valid token says.
type JwtClaims = {
    Subject: string option
    Expires: DateTimeOffset
    Audience: string option
    Issuer: string option
}

/// What validation requires besides the signature.
type JwtRequirements = {
    Audience: string option
    Issuer: string option
    /// Tolerated clock difference.
    ClockSkew: TimeSpan
}

/// HS256 JSON Web Tokens: the service's `Authorization: JWT <token>` (comma's convention) and
/// `Bearer <token>`. Only HS256 is accepted (`alg: none` and every other algorithm are refused).
[<RequireQualifiedAccess>]
module Jwt =

    /// The fewest UTF-8 bytes a secret may have.
    [<Literal>]
    let MinSecretBytes = 32

    let private base64Url (bytes: byte array) =
        Convert.ToBase64String(bytes).TrimEnd('=').Replace('+', '-').Replace('/', '_')

    let private fromBase64Url (text: string) : byte array option =
        let s = text.Replace('-', '+').Replace('_', '/')

        let padded =
            match s.Length % 4 with
            | 2 -> s + "=="
            | 3 -> s + "="
            | 0 -> s
            | _ -> "!"

        try
            Some(Convert.FromBase64String padded)
        with :? FormatException ->
            None

    let private sign (secret: string) (data: string) =
        use hmac = new HMACSHA256(Encoding.UTF8.GetBytes secret)
        hmac.ComputeHash(Encoding.UTF8.GetBytes data)

    /// A token for `subject` valid until `expires`, with optional audience and issuer.
    let create
        (secret: string)
        (subject: string)
        (issuedAt: DateTimeOffset)
        (expires: DateTimeOffset)
        (audience: string option)
        (issuer: string option)
        : string =
        let header = base64Url (Encoding.UTF8.GetBytes """{"alg":"HS256","typ":"JWT"}""")
        let claims = Collections.Generic.Dictionary<string, obj>()
        claims["sub"] <- subject
        claims["iat"] <- issuedAt.ToUnixTimeSeconds()
        claims["exp"] <- expires.ToUnixTimeSeconds()

        match audience with
        | Some a -> claims["aud"] <- a
        | None -> ()

        match issuer with
        | Some i -> claims["iss"] <- i
        | None -> ()

        let payload = base64Url (JsonSerializer.SerializeToUtf8Bytes claims)
        let signature = base64Url (sign secret $"{header}.{payload}")
        $"{header}.{payload}.{signature}"

    /// Checks the signature (constant time), the algorithm, `exp` (required), `nbf`, and audience
    /// and issuer when required.
    let validate
        (secret: string)
        (requirements: JwtRequirements)
        (now: DateTimeOffset)
        (token: string)
        : Result<JwtClaims, JwtError> =
        match token.Split('.') with
        | [| header; payload; signature |] ->
            match fromBase64Url header, fromBase64Url payload, fromBase64Url signature with
            | Some h, Some p, Some s ->
                try
                    use hd = JsonDocument.Parse h
                    use pd = JsonDocument.Parse p

                    let alg =
                        match hd.RootElement.TryGetProperty "alg" with
                        | true, a when a.ValueKind = JsonValueKind.String -> a.GetString()
                        | _ -> ""

                    if alg <> "HS256" then
                        Error(JwtError.UnsupportedAlgorithm(if alg = "" then "missing" else alg))
                    elif not (CryptographicOperations.FixedTimeEquals(s, sign secret $"{header}.{payload}")) then
                        Error JwtError.BadSignature
                    else
                        let root = pd.RootElement

                        let str (name: string) =
                            match root.TryGetProperty name with
                            | true, v when v.ValueKind = JsonValueKind.String -> Some(v.GetString())
                            | _ -> None

                        let time (name: string) =
                            match root.TryGetProperty name with
                            | true, v when v.ValueKind = JsonValueKind.Number ->
                                match v.TryGetInt64() with
                                | true, n -> Some(DateTimeOffset.FromUnixTimeSeconds n)
                                | _ -> None
                            | _ -> None

                        match time "exp", time "nbf" with
                        | None, _ -> Error JwtError.MissingExpiry
                        | Some exp, _ when exp + requirements.ClockSkew < now -> Error JwtError.Expired
                        | _, Some nbf when nbf - requirements.ClockSkew > now -> Error JwtError.NotYetValid
                        | Some exp, _ ->
                            match requirements.Audience, requirements.Issuer with
                            | Some a, _ when str "aud" <> Some a -> Error JwtError.WrongAudience
                            | _, Some i when str "iss" <> Some i -> Error JwtError.WrongIssuer
                            | _ ->
                                Ok {
                                    Subject = str "sub"
                                    Expires = exp
                                    Audience = str "aud"
                                    Issuer = str "iss"
                                }
                with :? JsonException ->
                    Error(JwtError.Malformed "header or payload is not JSON")
            | _ -> Error(JwtError.Malformed "not base64url")
        | _ -> Error(JwtError.Malformed "expected three dot-separated parts")

    /// One line for a 401 body.
    let describe (e: JwtError) : string =
        match e with
        | JwtError.Malformed why -> $"the token is malformed ({why})"
        | JwtError.UnsupportedAlgorithm alg -> $"the token's algorithm '{alg}' is not accepted (HS256 only)"
        | JwtError.BadSignature -> "the token's signature is wrong"
        | JwtError.MissingExpiry -> "the token has no exp claim"
        | JwtError.Expired -> "the token has expired"
        | JwtError.NotYetValid -> "the token is not valid yet (nbf)"
        | JwtError.WrongAudience -> "the token's audience is wrong"
        | JwtError.WrongIssuer -> "the token's issuer is wrong"
