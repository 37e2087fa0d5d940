namespace CtsLite.Cli

open System
open System.Net.Http
open System.Text.Json
open System.Threading.Tasks

/// Why a request to the service did not give an answer.
[<RequireQualifiedAccess>]
type ClientError =
    | Unreachable of url: string * reason: string
    /// The service answered with an error status; `detail` is its problem detail when it sent one.
    | Status of url: string * status: int * detail: string
    | BadResponse of url: string * reason: string

/// A small HTTP client for the `/v1` API.
[<RequireQualifiedAccess>]
module Client =

    /// Where the service is: `--url`, else `CTS_URL`, else loopback:8080.
    let resolveUrl (flag: string option) (environment: string -> string option) : string =
        flag
        |> Option.orElse (environment "CTS_URL")
        |> Option.defaultValue "http://127.0.0.1:8080"
        |> fun u -> u.TrimEnd '/'

    /// One line describing the error.
    let describe (error: ClientError) : string =
        match error with
        | ClientError.Unreachable(url, reason) -> $"cannot reach the service at {url}: {reason}"
        | ClientError.Status(url, status, detail) -> $"{url} answered {status}: {detail}"
        | ClientError.BadResponse(url, reason) -> $"{url} sent an unreadable answer: {reason}"

    /// The exit code of an error: 1 when the service refused the request as wrong (any 4xx: fix
    /// the command), 2 when it failed or could not be reached (5xx, network: retry later).
    let exitCode (error: ClientError) : int =
        match error with
        | ClientError.Status(_, status, _) when status >= 400 && status < 500 -> 1
        | _ -> 2

    /// The `detail` of a problem+json body, or the body itself.
    let problemDetail (body: string) =
        try
            use doc = JsonDocument.Parse body

            match doc.RootElement.TryGetProperty "detail" with
            | true, d when d.ValueKind = JsonValueKind.String -> d.GetString()
            | _ -> body
        with :? JsonException ->
            body

    /// GETs `path` and returns the status and parsed JSON body. A non-success status is an error
    /// unless it is in `accept` (health answers 503 with a full body when unhealthy).
    let getJson
        (http: HttpClient)
        (baseUrl: string)
        (path: string)
        (accept: int list)
        : Task<Result<int * JsonDocument, ClientError>> = task {
        let url = baseUrl + path

        try
            use! response = http.GetAsync url
            let! body = response.Content.ReadAsStringAsync()
            let status = int response.StatusCode

            if response.IsSuccessStatusCode || List.contains status accept then
                try
                    return Ok(status, JsonDocument.Parse body)
                with :? JsonException ->
                    return Error(ClientError.BadResponse(url, "not JSON"))
            else
                return Error(ClientError.Status(url, status, problemDetail body))
        with
        | :? HttpRequestException as e -> return Error(ClientError.Unreachable(url, e.Message))
        | :? TaskCanceledException -> return Error(ClientError.Unreachable(url, "timed out"))
    }
