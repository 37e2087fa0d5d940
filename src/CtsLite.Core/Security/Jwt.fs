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

    /// The JSON object of a token part; `Error` naming the part when it is not one object with
    /// unique member names (RFC 7515 §4: a header with duplicate names must be refused).
    let private jsonObject (part: string) (bytes: byte array) : Result<JsonDocument, JwtError> =
        try
            let doc = JsonDocument.Parse bytes

            if doc.RootElement.ValueKind <> JsonValueKind.Object then
                doc.Dispose()
                Error(JwtError.Malformed $"the {part} is not a JSON object")
            else
                let names = Collections.Generic.HashSet<string>(StringComparer.Ordinal)

                if doc.RootElement.EnumerateObject() |> Seq.forall (fun m -> names.Add m.Name) then
                    Ok doc
                else
                    doc.Dispose()
                    Error(JwtError.Malformed $"the {part} repeats a member name")
        with :? JsonException ->
            Error(JwtError.Malformed $"the {part} is not JSON")

    /// A NumericDate claim (seconds since the epoch, possibly with a fraction): `None` when absent,
    /// `Error` when present but not a time DateTimeOffset can hold.
    let private numericDate (root: JsonElement) (name: string) : Result<DateTimeOffset option, JwtError> =
        match root.TryGetProperty name with
        | false, _ -> Ok None
        | true, v when v.ValueKind = JsonValueKind.Number ->
            match v.TryGetDouble() with
            | true, seconds when
                Double.IsFinite seconds
                && seconds >= float (DateTimeOffset.MinValue.ToUnixTimeSeconds())
                && seconds <= float (DateTimeOffset.MaxValue.ToUnixTimeSeconds())
                ->
                Ok(Some(DateTimeOffset.FromUnixTimeSeconds(int64 (Math.Floor seconds))))
            | _ -> Error(JwtError.Malformed $"{name} is not a time")
        | true, _ -> Error(JwtError.Malformed $"{name} is not a number")

    /// Checks the signature (constant time), the algorithm, `exp` (required), `nbf`, and audience
    /// (a string, or an array of strings of which one must match) and issuer when required. Any
    /// input gives a result: a token that is not three base64url parts of JSON objects is
    /// `Malformed`, never an exception.
    let validate
        (secret: string)
        (requirements: JwtRequirements)
        (now: DateTimeOffset)
        (token: string)
        : Result<JwtClaims, JwtError> =
        match (if isNull token then [||] else token.Split('.')) with
        | [| header; payload; signature |] ->
            match fromBase64Url header, fromBase64Url payload, fromBase64Url signature with
            | Some h, Some p, Some s ->
                match jsonObject "header" h with
                | Error e -> Error e
                | Ok hd ->
                    use hd = hd

                    let alg =
                        match hd.RootElement.TryGetProperty "alg" with
                        | true, a when a.ValueKind = JsonValueKind.String -> a.GetString()
                        | _ -> ""

                    if alg <> "HS256" then
                        Error(JwtError.UnsupportedAlgorithm(if alg = "" then "missing" else alg))
                    elif not (CryptographicOperations.FixedTimeEquals(s, sign secret $"{header}.{payload}")) then
                        Error JwtError.BadSignature
                    else
                        match jsonObject "payload" p with
                        | Error e -> Error e
                        | Ok pd ->
                            use pd = pd
                            let root = pd.RootElement

                            let str (name: string) =
                                match root.TryGetProperty name with
                                | true, v when v.ValueKind = JsonValueKind.String -> Some(v.GetString())
                                | _ -> None

                            let audiences =
                                match root.TryGetProperty "aud" with
                                | true, v when v.ValueKind = JsonValueKind.String -> [ v.GetString() ]
                                | true, v when v.ValueKind = JsonValueKind.Array -> [
                                    for a in v.EnumerateArray() do
                                        if a.ValueKind = JsonValueKind.String then
                                            a.GetString()
                                  ]
                                | _ -> []

                            match numericDate root "exp", numericDate root "nbf" with
                            | Error e, _
                            | _, Error e -> Error e
                            | Ok None, _ -> Error JwtError.MissingExpiry
                            | Ok(Some exp), _ when exp < now - requirements.ClockSkew -> Error JwtError.Expired
                            | _, Ok(Some nbf) when nbf > now + requirements.ClockSkew -> Error JwtError.NotYetValid
                            | Ok(Some exp), _ ->
                                match requirements.Audience, requirements.Issuer with
                                | Some a, _ when not (List.contains a audiences) -> Error JwtError.WrongAudience
                                | _, Some i when str "iss" <> Some i -> Error JwtError.WrongIssuer
                                | _ ->
                                    Ok {
                                        Subject = str "sub"
                                        Expires = exp
                                        Audience =
                                            match requirements.Audience with
                                            | Some a -> Some a
                                            | None -> List.tryHead audiences
                                        Issuer = str "iss"
                                    }
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
