module CtsLite.Core.Tests.JwtTests

open System
open System.Text
open Expecto
open CtsLite.Security

let private secret = "0123456789abcdef0123456789abcdef-test"
let private now = DateTimeOffset(2026, 11, 27, 12, 0, 0, TimeSpan.Zero)

let private loose = {
    Audience = None
    Issuer = None
    ClockSkew = TimeSpan.FromSeconds 30.0
}

let private b64 (s: string) =
    Convert.ToBase64String(Encoding.UTF8.GetBytes s).TrimEnd('=').Replace('+', '-').Replace('/', '_')

/// A token of exactly this header and payload text, signed with the test secret.
let private signed (header: string) (payload: string) =
    let h, p = b64 header, b64 payload
    use hmac = new Security.Cryptography.HMACSHA256(Encoding.UTF8.GetBytes secret)
    let s = hmac.ComputeHash(Encoding.UTF8.GetBytes $"{h}.{p}")
    $"{h}.{p}.{Convert.ToBase64String(s).TrimEnd('=').Replace('+', '-').Replace('/', '_')}"

let private hs256 = """{"alg":"HS256","typ":"JWT"}"""

let all =
    testList "JWT" [
        test "a created token validates and carries its claims" {
            let token =
                Jwt.create secret "alice" now (now.AddDays 30.0) (Some "cts") (Some "me")

            match
                Jwt.validate
                    secret
                    {
                        loose with
                            Audience = Some "cts"
                            Issuer = Some "me"
                    }
                    now
                    token
            with
            | Ok c ->
                Expect.equal c.Subject (Some "alice") "sub"
                Expect.equal c.Expires (now.AddDays 30.0) "exp"
            | Error e -> failtestf "%A" e
        }
        test "every rejection case" {
            let token = Jwt.create secret "alice" now (now.AddHours 1.0) None None
            let parts = token.Split '.'

            let check name expected (t: string) requirements =
                match Jwt.validate secret requirements now t with
                | Error e -> Expect.equal e expected name
                | Ok _ -> failtestf "%s accepted" name

            check
                "wrong secret"
                JwtError.BadSignature
                (Jwt.create (secret + "x") "alice" now (now.AddHours 1.0) None None)
                loose

            let none = b64 """{"alg":"none","typ":"JWT"}"""
            let hs512 = b64 """{"alg":"HS512"}"""
            check "alg none" (JwtError.UnsupportedAlgorithm "none") $"{none}.{parts[1]}." loose
            check "alg HS512" (JwtError.UnsupportedAlgorithm "HS512") $"{hs512}.{parts[1]}.{parts[2]}" loose

            check
                "expired"
                JwtError.Expired
                (Jwt.create secret "alice" (now.AddDays -2.0) (now.AddDays -1.0) None None)
                loose

            let noExp =
                let header = b64 """{"alg":"HS256","typ":"JWT"}"""
                let payload = b64 """{"sub":"alice"}"""
                use h = new Security.Cryptography.HMACSHA256(Encoding.UTF8.GetBytes secret)
                let s = h.ComputeHash(Encoding.UTF8.GetBytes $"{header}.{payload}")
                $"{header}.{payload}.{Convert.ToBase64String(s).TrimEnd('=').Replace('+', '-').Replace('/', '_')}"

            check "missing exp" JwtError.MissingExpiry noExp loose
            check "wrong audience" JwtError.WrongAudience token { loose with Audience = Some "cts" }
            check "wrong issuer" JwtError.WrongIssuer token { loose with Issuer = Some "me" }

            match Jwt.validate secret loose now "not-a-token" with
            | Error(JwtError.Malformed _) -> ()
            | other -> failtestf "%A" other
        }
        testProperty "changing any character of the payload breaks the token" (fun (position: FsCheck.PositiveInt) ->
            let token = Jwt.create secret "alice" now (now.AddHours 1.0) None None
            let parts = token.Split '.'
            let p = parts[1]
            let i = position.Get % p.Length

            let changed =
                p.Substring(0, i) + (if p[i] = 'A' then "B" else "A") + p.Substring(i + 1)

            match Jwt.validate secret loose now $"{parts[0]}.{changed}.{parts[2]}" with
            | Ok _ -> false
            | Error _ -> true)
        test "a header or payload that is JSON but not one object with unique names is malformed" {
            let exp = now.AddHours(1.0).ToUnixTimeSeconds()

            let malformed name (token: string) =
                match Jwt.validate secret loose now token with
                | Error(JwtError.Malformed why) -> why
                | other -> failtestf "%s: %A" name other

            for header in [ "[1]"; "\"x\""; "1"; "null"; "true" ] do
                Expect.stringContains
                    (malformed header (signed header $"{{\"exp\":{exp}}}"))
                    "header is not a JSON object"
                    header

            for payload in [ "[1]"; "\"x\""; "1"; "null" ] do
                Expect.stringContains (malformed payload (signed hs256 payload)) "payload is not a JSON object" payload

            Expect.stringContains
                (malformed "duplicate alg" (signed """{"alg":"HS256","alg":"none"}""" $"{{\"exp\":{exp}}}"))
                "repeats a member name"
                "duplicate alg"

            Expect.stringContains
                (malformed "duplicate exp" (signed hs256 $"{{\"exp\":{exp},\"exp\":1}}"))
                "repeats a member name"
                "duplicate claim"

            for exp in [ "1e30"; "99999999999999999999"; "9223372036854775807"; "-1e300" ] do
                Expect.stringContains (malformed exp (signed hs256 $"{{\"exp\":{exp}}}")) "exp is not a time" exp

            Expect.stringContains
                (malformed "string exp" (signed hs256 """{"exp":"soon"}"""))
                "exp is not a number"
                "type"
        }
        test "aud may be an array (RFC 7519); exp may have a fraction" {
            let exp = float (now.AddHours(1.0).ToUnixTimeSeconds()) + 0.5
            let token = signed hs256 $"""{{"sub":"bob","exp":{exp},"aud":["other","cts"]}}"""

            match Jwt.validate secret { loose with Audience = Some "cts" } now token with
            | Ok claims -> Expect.equal claims.Audience (Some "cts") "the matching audience"
            | Error e -> failtestf "%A" e

            match Jwt.validate secret { loose with Audience = Some "nope" } now token with
            | Error JwtError.WrongAudience -> ()
            | other -> failtestf "%A" other
        }
        testProperty "any text gives a result, never an exception" (fun (text: string) (dots: FsCheck.NonNegativeInt) ->
            let token =
                if isNull text then
                    null
                else
                    String.Join(".", Array.init (dots.Get % 4 + 1) (fun i -> text.Substring(0, min text.Length i)))

            match Jwt.validate secret loose now token with
            | Ok _
            | Error _ -> true)
        testProperty "any signed JSON header and payload give a result, never an exception" (fun (a: int) (b: string) ->
            let values = [
                "[1]"
                "{}"
                "null"
                $"{a}"
                "{\"alg\":\"HS256\"}"
                "{\"exp\":1e400}"
                "{\"nbf\":[]}"
            ]

            let pick (n: int) = values[abs (n % values.Length)]

            let payload =
                if isNull b then
                    pick (a / 7)
                else
                    $"{{\"exp\":{a},\"aud\":{Text.Json.JsonSerializer.Serialize b}}}"

            match Jwt.validate secret loose now (signed (pick a) payload) with
            | Ok _
            | Error _ -> true)
    ]
