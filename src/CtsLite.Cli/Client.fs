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
    /// Something here is wrong (a missing input, a DBC with errors): nothing was sent.
    | Local of reason: string

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
        | ClientError.Local reason -> reason

    /// The exit code of an error: 1 when the service refused the request as wrong (any 4xx: fix
    /// the command), 2 when it failed or could not be reached (5xx, network: retry later).
    let exitCode (error: ClientError) : int =
        match error with
        | ClientError.Status(_, status, _) when status >= 400 && status < 500 -> 1
        | ClientError.Local _ -> 1
        | _ -> 2

    /// The `detail` of a problem+json body with each field error (`pointer: detail`) and the
    /// `request_id` to quote to whoever runs the service; else the body itself.
    let problemDetail (body: string) =
        try
            use doc = JsonDocument.Parse body
            let root = doc.RootElement

            let text (e: JsonElement) (name: string) =
                match e.TryGetProperty name with
                | true, d when d.ValueKind = JsonValueKind.String -> Some(d.GetString())
                | _ -> None

            match text root "detail" with
            | Some detail ->
                let fields =
                    match root.TryGetProperty "errors" with
                    | true, errors when errors.ValueKind = JsonValueKind.Array -> [
                        for e in errors.EnumerateArray() do
                            match text e "pointer", text e "detail" with
                            | Some p, Some d -> $"{p}: {d}"
                            | _ -> ()
                      ]
                    | _ -> []

                let fields =
                    match fields with
                    | [] -> ""
                    | fs when detail.Contains(List.head fs) -> ""
                    | fs -> " (" + String.Join("; ", fs) + ")"

                let request =
                    match text root "request_id" with
                    | Some id -> $" [request {id}]"
                    | None -> ""

                detail + fields + request
            | None -> body
        with :? JsonException ->
            body

    /// How often an idempotent request is tried again after 429, 502, 503, 504 or a failed
    /// connection.
    [<Literal>]
    let Retries = 3

    /// The wait before try `attempt` (1, 2, 3): the service's `Retry-After` when it gives one
    /// (at most 30 s), else 0.5 s, 1 s, 2 s.
    let backOff (attempt: int) (response: HttpResponseMessage option) : TimeSpan =
        let fallback = TimeSpan.FromMilliseconds(500.0 * Math.Pow(2.0, float (attempt - 1)))

        match response |> Option.bind (fun r -> Option.ofObj r.Headers.RetryAfter) with
        | Some ra when ra.Delta.HasValue -> min ra.Delta.Value (TimeSpan.FromSeconds 30.0)
        | _ -> fallback

    let private transient (status: int) =
        status = 429 || status = 502 || status = 503 || status = 504

    /// Sends the request `make` builds (a new one each try) and returns the answer whatever its
    /// status, trying again after 429, 502, 503, 504 and failed connections as `getJson` does.
    /// Only for requests the service treats as idempotent: GETs, and POSTs that carry an
    /// `Idempotency-Key` (the same key on every try, so a retry is the same run).
    let sendIdempotent (http: HttpClient) (make: unit -> HttpRequestMessage) : Task<HttpResponseMessage> = task {
        let mutable attempt = 0
        let mutable result = None

        while result.IsNone do
            attempt <- attempt + 1

            try
                let! response = http.SendAsync(make ())

                if transient (int response.StatusCode) && attempt <= Retries then
                    let wait = backOff attempt (Some response)
                    response.Dispose()
                    do! Task.Delay wait
                else
                    result <- Some response
            with :? HttpRequestException when attempt <= Retries ->
                do! Task.Delay(backOff attempt None)

        return result.Value
    }

    /// GETs `path` and returns the status and parsed JSON body. A non-success status is an error
    /// unless it is in `accept` (health answers 503 with a full body when unhealthy). A GET is
    /// idempotent: 429, 502, 503, 504 (not accepted) and failed connections are tried again
    /// `retries` times with back-off.
    let getJsonWith
        (retries: int)
        (http: HttpClient)
        (baseUrl: string)
        (path: string)
        (accept: int list)
        : Task<Result<int * JsonDocument, ClientError>> = task {
        let url = baseUrl + path
        let mutable attempt = 0
        let mutable result = None

        while result.IsNone do
            attempt <- attempt + 1

            try
                use! response = http.GetAsync url
                let! body = response.Content.ReadAsStringAsync()
                let status = int response.StatusCode

                if response.IsSuccessStatusCode || List.contains status accept then
                    try
                        result <- Some(Ok(status, JsonDocument.Parse body))
                    with :? JsonException ->
                        result <- Some(Error(ClientError.BadResponse(url, "not JSON")))
                elif transient status && attempt <= retries then
                    do! Task.Delay(backOff attempt (Some response))
                else
                    result <- Some(Error(ClientError.Status(url, status, problemDetail body)))
            with
            | :? HttpRequestException when attempt <= retries -> do! Task.Delay(backOff attempt None)
            | :? HttpRequestException as e -> result <- Some(Error(ClientError.Unreachable(url, e.Message)))
            | :? TaskCanceledException -> result <- Some(Error(ClientError.Unreachable(url, "timed out")))

        return result.Value
    }

    /// `getJsonWith Retries`: what every read of the service uses.
    let getJson (http: HttpClient) (baseUrl: string) (path: string) (accept: int list) =
        getJsonWith Retries http baseUrl path accept

    /// One try, no back-off: for commands that report the state now (`ping`, `version`), where
    /// a service that is down must be said at once, not after seconds of retries.
    let getJsonOnce (http: HttpClient) (baseUrl: string) (path: string) (accept: int list) =
        getJsonWith 0 http baseUrl path accept
