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
    ]
