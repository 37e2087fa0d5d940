namespace CtsLite.Cli

open System
open System.IO
open System.Net.Http
open System.Text.Json
open CtsLite

/// Exit codes: 0 ok, 1 client error (usage, too old, any 4xx answer), 2 service error (5xx) or
/// unreachable, 3 run failed, 4 run canceled, 130 interrupted.
[<RequireQualifiedAccess>]
module ExitCode =
    /// Success.
    [<Literal>]
    let Ok = 0

    /// The command line or the client was at fault.
    [<Literal>]
    let ClientError = 1

    /// The service was unreachable, unhealthy or answered with an error.
    [<Literal>]
    let ServiceError = 2

/// What a command needs from its surroundings.
type CommandContext = {
    Url: string
    Json: bool
    /// Made on first use: local commands never pay for the HTTP stack.
    Http: Lazy<HttpClient>
    Out: TextWriter
    /// The same standard output as bytes, for exact output (flush `Out` before writing).
    OutStream: Stream
    Err: TextWriter
}

/// `-p key=value` as the tools and monitors take it.
[<RequireQualifiedAccess>]
module Params =

    /// One `-p key=value`; the value as text, coerced by the descriptor's type.
    let parse (text: string) : Result<string * CtsLite.Tools.ParameterInput, string> =
        match text.IndexOf '=' with
        | i when i > 0 -> Ok(text.Substring(0, i).Trim(), CtsLite.Tools.ParameterInput.Text(text.Substring(i + 1)))
        | _ -> Error $"-p '{text}': expected key=value"

/// The commands that talk to the service.
[<RequireQualifiedAccess>]
module Remote =

    let private indented = JsonSerializerOptions(WriteIndented = true)

    let private printJson (ctx: CommandContext) (doc: JsonDocument) =
        ctx.Out.WriteLine(JsonSerializer.Serialize(doc.RootElement, indented))

    let private str (e: JsonElement) (name: string) =
        match e.TryGetProperty name with
        | true, v when v.ValueKind = JsonValueKind.String -> v.GetString()
        | true, v -> v.GetRawText()
        | _ -> ""

    let private fail (ctx: CommandContext) (error: ClientError) =
        ctx.Err.WriteLine($"error: {Client.describe error}")
        Client.exitCode error

    /// Compares dotted numeric versions.
    let versionAtLeast (actual: string) (required: string) : bool =
        let parse (v: string) =
            match Version.TryParse(v.Split('-', '+').[0]) with
            | true, parsed -> Some parsed
            | false, _ -> None

        match parse actual, parse required with
        | Some a, Some r -> a >= r
        | _ -> true

    /// Refuses to talk to a service that no longer accepts this client.
    let private checkCompatible (ctx: CommandContext) (next: unit -> int) : int =
        let result =
            (Client.getJson ctx.Http.Value ctx.Url "/v1/version" []).GetAwaiter().GetResult()

        match result with
        | Error e -> fail ctx e
        | Ok(_, doc) ->
            use doc = doc
            let minimum = str doc.RootElement "min_client_version"

            match versionAtLeast Product.version minimum with
            | true -> next ()
            | false ->
                ctx.Err.WriteLine(
                    $"error: cts {Product.version} is too old for the service at {ctx.Url} (it needs {minimum} or newer); upgrade cts"
                )

                ExitCode.ClientError

    /// `cts ping`.
    let ping (ctx: CommandContext) : int =
        checkCompatible ctx (fun () ->
            match (Client.getJson ctx.Http.Value ctx.Url "/v1/health" [ 503 ]).GetAwaiter().GetResult() with
            | Error e -> fail ctx e
            | Ok(status, doc) ->
                use doc = doc
                let root = doc.RootElement

                if ctx.Json then
                    printJson ctx doc
                else
                    ctx.Out.WriteLine($"""CtsLite service at {ctx.Url} is {str root "status"}""")
                    ctx.Out.WriteLine($"""  version {str root "version"}, uptime {str root "uptime"}""")

                    for check in root.GetProperty("checks").EnumerateArray() do
                        ctx.Out.WriteLine($"""  {str check "name"}: {str check "status"} ({str check "detail"})""")

                match status with
                | 200 -> ExitCode.Ok
                | _ -> ExitCode.ServiceError)

    let private printTools (ctx: CommandContext) (title: string) (tools: JsonElement) =
        ctx.Out.WriteLine($"{title}:")

        match tools.GetArrayLength() with
        | 0 -> ctx.Out.WriteLine("  (none)")
        | _ ->
            for tool in tools.EnumerateArray() do
                ctx.Out.WriteLine($"""  {str tool "id", -28} {str tool "name"}: {str tool "description"}""")

                for p in tool.GetProperty("parameters").EnumerateObject() do
                    ctx.Out.WriteLine($"""      {p.Name} ({str p.Value "type"}, default {str p.Value "default"})""")

    /// `cts capabilities`.
    let capabilities (ctx: CommandContext) : int =
        checkCompatible ctx (fun () ->
            match (Client.getJson ctx.Http.Value ctx.Url "/v1/capabilities" []).GetAwaiter().GetResult() with
            | Error e -> fail ctx e
            | Ok(_, doc) ->
                use doc = doc
                let root = doc.RootElement

                if ctx.Json then
                    printJson ctx doc
                else
                    printTools ctx "Tools" (root.GetProperty "tools")
                    printTools ctx "Monitors" (root.GetProperty "monitors")
                    ctx.Out.WriteLine($"""API version: {str root "api_version"}""")

                    let features =
                        root.GetProperty("features").EnumerateArray()
                        |> Seq.map (fun f -> f.GetString())

                    ctx.Out.WriteLine($"""Features: {String.Join(", ", features)}""")

                ExitCode.Ok)

    /// `cts version`: always prints the client's version; the service's when it answers.
    let version (ctx: CommandContext) : int =
        let server =
            (Client.getJson ctx.Http.Value ctx.Url "/v1/version" []).GetAwaiter().GetResult()

        match ctx.Json, server with
        | true, Ok(_, doc) ->
            use doc = doc
            let root = doc.RootElement

            let body = {|
                client_version = Product.version
                server_version = str root "server_version"
                api_version = str root "api_version"
                min_client_version = str root "min_client_version"
            |}

            ctx.Out.WriteLine(JsonSerializer.Serialize(body, indented))
        | true, Error e ->
            ctx.Out.WriteLine(JsonSerializer.Serialize({| client_version = Product.version |}, indented))
            ctx.Err.WriteLine($"note: {Client.describe e}")
        | false, Ok(_, doc) ->
            use doc = doc
            let root = doc.RootElement
            ctx.Out.WriteLine($"cts {Product.version}")

            ctx.Out.WriteLine(
                $"""service {str root "server_version"} at {ctx.Url} (API {str root "api_version"}, accepts cts {str root "min_client_version"} or newer)"""
            )
        | false, Error e ->
            ctx.Out.WriteLine($"cts {Product.version}")
            ctx.Err.WriteLine($"note: {Client.describe e}")

        ExitCode.Ok
