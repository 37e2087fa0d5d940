namespace CtsLite.Server

open System
open CtsLite
open Microsoft.AspNetCore.Http
open Microsoft.Extensions.DependencyInjection
open CtsLite.Server.Http

/// Who may call an endpoint.
[<RequireQualifiedAccess>]
type AuthRequirement =
    | Anonymous
    /// A valid token is required whenever a JWT secret is configured.
    | Token
    /// As `Token`, and the token may also come as `?access_token=`: for what a browser opens
    /// directly (a WebSocket, an EventSource, a download link), which cannot send headers.
    | TokenOrQuery

/// One `/v1` endpoint, declared as data so the pipeline and the OpenAPI document come from one table.
type Endpoint = {
    Method: string
    /// A path with `{name}` segments, e.g. `/v1/runs/{run_id}`.
    Template: string
    Summary: string
    Auth: AuthRequirement
    Request: Type option
    Response: Type
    Handler: RouteArgs -> HttpHandler
}

/// The OpenAPI 3.1 document of a route table, generated from the endpoints' types (never written
/// by hand), and a self-contained HTML page rendering it.
[<RequireQualifiedAccess>]
module OpenApi =

    open System.Collections.Generic
    open System.Text.Json.Nodes
    open Microsoft.FSharp.Reflection

    let private snake (name: string) =
        System.Text.Json.JsonNamingPolicy.SnakeCaseLower.ConvertName name

    let private node (pairs: (string * JsonNode) list) : JsonNode =
        let o = JsonObject()

        for k, v in pairs do
            o[k] <- v

        o :> JsonNode

    let private str (s: string) = JsonValue.Create s :> JsonNode

    /// The schema of a type; records become named components.
    let rec private schema (components: Dictionary<string, JsonNode>) (t: Type) : JsonNode =
        if t = typeof<string> then
            node [ "type", str "string" ]
        elif t = typeof<int> || t = typeof<int64> then
            node [ "type", str "integer" ]
        elif t = typeof<float> then
            node [ "type", str "number" ]
        elif t = typeof<bool> then
            node [ "type", str "boolean" ]
        elif t = typeof<DateTimeOffset> then
            node [ "type", str "string"; "format", str "date-time" ]
        elif t = typeof<byte[]> then
            node [ "type", str "string"; "format", str "binary" ]
        elif t = typeof<System.Text.Json.JsonElement> || t = typeof<obj> then
            node [ "description", str "any JSON value" ]
        elif t = typeof<unit> then
            node [ "description", str "no body" ]
        elif t.IsGenericType && t.GetGenericTypeDefinition() = typedefof<option<_>> then
            let inner = schema components (t.GetGenericArguments()[0])
            node [ "oneOf", JsonArray(inner, node [ "type", str "null" ]) :> JsonNode ]
        elif t.IsGenericType && t.GetGenericTypeDefinition() = typedefof<list<_>> then
            node [ "type", str "array"; "items", schema components (t.GetGenericArguments()[0]) ]
        elif t.IsGenericType && t.GetGenericTypeDefinition() = typedefof<IDictionary<_, _>> then
            node [
                "type", str "object"
                "additionalProperties", schema components (t.GetGenericArguments()[1])
            ]
        elif FSharpType.IsRecord t then
            let name = t.Name

            if not (components.ContainsKey name) then
                components[name] <- null
                let fields = FSharpType.GetRecordFields t

                let properties =
                    node [ for f in fields -> snake f.Name, schema components f.PropertyType ]

                components[name] <-
                    node [
                        "type", str "object"
                        "properties", properties
                        "required", JsonArray([| for f in fields -> str (snake f.Name) |]) :> JsonNode
                    ]

            node [ "$ref", str $"#/components/schemas/{name}" ]
        else
            node [ "description", str t.Name ]

    let private problem =
        node [
            "description", str "an RFC 9457 problem (status, title, detail, instance, request_id)"
            "content",
            node [
                "application/problem+json", node [ "schema", node [ "$ref", str "#/components/schemas/Problem" ] ]
            ]
        ]

    /// Shapes the API carries inside untyped JSON (a monitor stream message's `data`), listed
    /// as components so clients can rely on them.
    let dataShapes: Type list = [ typeof<Api.CanCheckData>; typeof<Api.SourceStatusData> ]

    /// The document, for `/v1/openapi.json`.
    let build (endpoints: Endpoint list) : JsonNode =
        let components = Dictionary<string, JsonNode>()

        for t in dataShapes do
            schema components t |> ignore

        let paths =
            endpoints
            |> List.groupBy _.Template
            |> List.map (fun (template, group) ->
                let parameters =
                    Text.RegularExpressions.Regex.Matches(template, "{([a-z_]+)}")
                    |> Seq.map (fun m ->
                        node [
                            "name", str m.Groups[1].Value
                            "in", str "path"
                            "required", JsonValue.Create true :> JsonNode
                            "schema", node [ "type", str "string" ]
                        ])
                    |> Array.ofSeq

                template,
                node [
                    for e in group ->
                        e.Method.ToLowerInvariant(),
                        node [
                            "summary", str e.Summary
                            if parameters.Length > 0 then
                                "parameters", JsonArray(parameters |> Array.map (fun p -> p.DeepClone())) :> JsonNode
                            match e.Request with
                            | Some r ->
                                "requestBody",
                                node [
                                    "required", JsonValue.Create true :> JsonNode
                                    "content", node [ "application/json", node [ "schema", schema components r ] ]
                                ]
                            | None -> ()
                            if e.Auth <> AuthRequirement.Anonymous then
                                "security",
                                JsonArray(
                                    node [ "jwt", JsonArray() :> JsonNode ],
                                    node [ "bearer", JsonArray() :> JsonNode ]
                                )
                                :> JsonNode
                            else
                                "security", JsonArray() :> JsonNode
                            "responses",
                            node [
                                (if e.Method = "POST" then "2XX" else "200"),
                                node [
                                    "description", str "success"
                                    "content",
                                    node [ "application/json", node [ "schema", schema components e.Response ] ]
                                ]
                                "default", problem.DeepClone()
                            ]
                        ]
                ])

        components["Problem"] <-
            node [
                "type", str "object"
                "properties",
                node [
                    for name, t in
                        [
                            "type", "string"
                            "title", "string"
                            "status", "integer"
                            "detail", "string"
                            "instance", "string"
                            "request_id", "string"
                        ] -> name, node [ "type", str t ]
                ]
            ]

        node [
            "openapi", str "3.1.0"
            "info", node [ "title", str "CtsLite API"; "version", str CtsLite.Product.ApiVersion ]
            "paths", node paths
            "components",
            node [
                "schemas", node [ for KeyValue(k, v) in components |> Seq.sortBy (fun kv -> kv.Key) -> k, v ]
                "securitySchemes",
                node [
                    "jwt",
                    node [
                        "type", str "apiKey"
                        "in", str "header"
                        "name", str "Authorization"
                        "description", str "comma's convention: Authorization: JWT <token>"
                    ]
                    "bearer", node [ "type", str "http"; "scheme", str "bearer"; "bearerFormat", str "JWT" ]
                ]
            ]
        ]

    /// A self-contained page (no scripts, no external assets) rendering the document.
    let page (document: JsonNode) : string =
        let h = Net.WebUtility.HtmlEncode
        let sb = Text.StringBuilder()
        let add (s: string) = sb.Append(s).Append('\n') |> ignore
        add "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>CtsLite API</title>"

        add
            "<style>body{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px;color:#1d2330}.ep{border:1px solid #d6dae3;border-radius:6px;margin:.6rem 0;padding:.5rem .8rem}.m{display:inline-block;min-width:4.5rem;font-weight:700}.get{color:#17753a}.post{color:#2b59c3}.delete{color:#b3261e}code{background:#f1f3f7;padding:0 .2rem}pre{background:#f6f7f9;padding:.6rem;overflow:auto;font-size:.8rem}</style></head><body>"

        let info = document["info"]
        add $"""<h1>CtsLite API {h (string info["version"])}</h1>"""

        add
            "<p>OpenAPI 3.1 document: <a href=\"/v1/openapi.json\"><code>/v1/openapi.json</code></a>. Errors are <code>application/problem+json</code>. Endpoints marked 🔒 need <code>Authorization: JWT &lt;token&gt;</code> (or Bearer) when the service has a secret.</p>"

        for path in (document["paths"] :?> JsonObject) do
            for op in (path.Value :?> JsonObject) do
                let secured = (op.Value["security"] :?> JsonArray).Count > 0
                let lock = if secured then " 🔒" else ""

                add
                    $"""<div class="ep"><span class="m {op.Key}">{op.Key.ToUpperInvariant()}</span> <code>{h path.Key}</code>{lock}<div>{h (string op.Value["summary"])}</div>"""

                match op.Value["requestBody"] with
                | null -> ()
                | body ->
                    let json = body.["content"].["application/json"]
                    let reference = string json.["schema"].["$ref"]
                    add $"""<div>Body: <code>{h (reference.Replace("#/components/schemas/", ""))}</code></div>"""

                add "</div>"

        add "<h2>Schemas</h2>"

        for schema in (document["components"]["schemas"] :?> JsonObject) do
            add
                $"<h3 id=\"{h schema.Key}\">{h schema.Key}</h3><pre>{h (schema.Value.ToJsonString(Text.Json.JsonSerializerOptions(WriteIndented = true)))}</pre>"

        add "</body></html>"
        sb.ToString()

/// The OpenAPI document and the `/docs` page, built once from the route table when the service
/// starts and served from DI (the table's own endpoints for them read it there: the document
/// describes the whole table, themselves included).
type ApiDocument = {
    /// `/v1/openapi.json` as served (compact UTF-8 JSON).
    Json: byte array
    /// The `/docs` page.
    Page: byte array
    /// The document as committed in `docs/openapi.json` (indented, ending in a newline).
    Text: string
}

/// Building the API document.
[<RequireQualifiedAccess>]
module ApiDocument =

    /// The document of `endpoints`.
    let ofEndpoints (endpoints: Endpoint list) : ApiDocument =
        let document = OpenApi.build endpoints

        {
            Json = Text.Encoding.UTF8.GetBytes(document.ToJsonString())
            Page = Text.Encoding.UTF8.GetBytes(OpenApi.page document)
            Text =
                document.ToJsonString(Text.Json.JsonSerializerOptions(WriteIndented = true))
                + "\n"
        }

    let private served (pick: ApiDocument -> byte array) (contentType: string) : HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) ->
            let document = ctx.RequestServices.GetRequiredService<ApiDocument>()
            setBody contentType (pick document) next ctx

    /// `GET /v1/openapi.json`.
    let json: HttpHandler = served _.Json "application/json; charset=utf-8"

    /// `GET /docs`.
    let page: HttpHandler = served _.Page "text/html; charset=utf-8"

/// The route table and the pipeline built from it.
[<RequireQualifiedAccess>]
module Routes =

    /// Every `/v1` endpoint.
    let endpoints: Endpoint list = [
        {
            Method = HttpMethods.Get
            Template = "/v1/health"
            Summary = "Service status, version, uptime and real checks (data dir writable, store reachable)"
            Auth = AuthRequirement.Anonymous
            Request = None
            Response = typeof<Api.HealthResponse>
            Handler = fun _ -> Handlers.health
        }
        {
            Method = HttpMethods.Get
            Template = "/v1/version"
            Summary = "API version and the oldest client it accepts"
            Auth = AuthRequirement.Anonymous
            Request = None
            Response = typeof<Api.VersionResponse>
            Handler = fun _ -> Handlers.version
        }
        {
            Method = HttpMethods.Get
            Template = "/v1/capabilities"
            Summary = "The tools and monitors this service can run, with their parameters"
            Auth = AuthRequirement.Anonymous
            Request = None
            Response = typeof<Api.CapabilitiesResponse>
            Handler = fun _ -> Handlers.capabilities
        }
        {
            Method = HttpMethods.Post
            Template = "/v1/runs"
            Summary = "Start a tool run (a Run Request); 202 with the Run Response"
            Auth = AuthRequirement.Token
            Request = Some typeof<Api.RunRequest>
            Response = typeof<Api.RunResponse>
            Handler = fun _ -> RunHandlers.create
        }
        {
            Method = HttpMethods.Get
            Template = "/v1/runs"
            Summary = "Runs, newest first; filter by status and tool_id, page with cursor and limit"
            Auth = AuthRequirement.Token
            Request = None
            Response = typeof<Api.RunList>
            Handler = fun _ -> RunHandlers.list
        }
        {
            Method = HttpMethods.Get
            Template = "/v1/runs/{run_id}"
            Summary = "One run"
            Auth = AuthRequirement.Token
            Request = None
            Response = typeof<Api.RunResponse>
            Handler = RunHandlers.get
        }
        {
            Method = HttpMethods.Delete
            Template = "/v1/runs/{run_id}"
            Summary = "Cancel a run (same as POST /v1/runs/{run_id}/cancel)"
            Auth = AuthRequirement.Token
            Request = None
            Response = typeof<Api.RunResponse>
            Handler = RunHandlers.cancel
        }
        {
            Method = HttpMethods.Post
            Template = "/v1/runs/{run_id}/cancel"
            Summary = "Cancel a run: a queued run at once, a running one as soon as its tool notices"
            Auth = AuthRequirement.Token
            Request = None
            Response = typeof<Api.RunResponse>
            Handler = RunHandlers.cancel
        }
        {
            Method = HttpMethods.Get
            Template = "/v1/runs/{run_id}/logs"
            Summary =
                "The run's log as Server-Sent Events (log, status, end), resumable; ?format=json for a list; the token may be ?access_token="
            Auth = AuthRequirement.TokenOrQuery
            Request = None
            Response = typeof<Api.LogList>
            Handler = RunHandlers.logs
        }
        {
            Method = HttpMethods.Get
            Template = "/v1/runs/{run_id}/artifacts"
            Summary = "The files a run produced"
            Auth = AuthRequirement.Token
            Request = None
            Response = typeof<Api.ArtifactList>
            Handler = RunHandlers.runArtifacts
        }
        {
            Method = HttpMethods.Post
            Template = "/v1/uploads"
            Summary = "Upload a log, CSV or DBC (raw body with X-Filename, or multipart), streamed, sha256-deduplicated"
            Auth = AuthRequirement.Token
            Request = None
            Response = typeof<Api.UploadResponse>
            Handler = fun _ -> UploadHandlers.create
        }
        {
            Method = HttpMethods.Get
            Template = "/v1/uploads"
            Summary = "Uploads, newest first (?limit= up to 500, default 100)"
            Auth = AuthRequirement.Token
            Request = None
            Response = typeof<Api.UploadList>
            Handler = fun _ -> UploadHandlers.list
        }
        {
            Method = HttpMethods.Get
            Template = "/v1/uploads/{upload_id}"
            Summary = "One upload"
            Auth = AuthRequirement.Token
            Request = None
            Response = typeof<Api.UploadResponse>
            Handler = UploadHandlers.get
        }
        {
            Method = HttpMethods.Delete
            Template = "/v1/uploads/{upload_id}"
            Summary = "Delete an upload and its file"
            Auth = AuthRequirement.Token
            Request = None
            Response = typeof<unit>
            Handler = UploadHandlers.delete
        }
        {
            Method = HttpMethods.Get
            Template = "/v1/artifacts"
            Summary = "Artifacts, optionally of one run (?run_id=)"
            Auth = AuthRequirement.Token
            Request = None
            Response = typeof<Api.ArtifactList>
            Handler = fun _ -> RunHandlers.artifacts
        }
        {
            Method = HttpMethods.Get
            Template = "/v1/artifacts/{artifact_id}"
            Summary = "One artifact's metadata"
            Auth = AuthRequirement.Token
            Request = None
            Response = typeof<Api.Artifact>
            Handler = RunHandlers.artifact
        }
        {
            Method = HttpMethods.Get
            Template = "/v1/artifacts/{artifact_id}/download"
            Summary =
                "The artifact's bytes, with Content-Disposition, ETag and Range support; the token may be ?access_token="
            Auth = AuthRequirement.TokenOrQuery
            Request = None
            Response = typeof<byte[]>
            Handler = RunHandlers.download
        }
        {
            Method = HttpMethods.Post
            Template = "/v1/monitors/start"
            Summary =
                "Start a monitor session on a live bridge (zmq) or a replayed log; 201 with the session (404 unknown monitor, 422 per bad field, 429 at max_monitors)"
            Auth = AuthRequirement.Token
            Request = Some typeof<Api.MonitorStartRequest>
            Response = typeof<Api.MonitorSession>
            Handler = fun _ -> MonitorHandlers.start
        }
        {
            Method = HttpMethods.Get
            Template = "/v1/monitors"
            Summary = "Monitor sessions, newest first; filter by status, at most limit"
            Auth = AuthRequirement.Token
            Request = None
            Response = typeof<Api.MonitorSessionList>
            Handler = fun _ -> MonitorHandlers.list
        }
        {
            Method = HttpMethods.Get
            Template = "/v1/monitors/{session_id}"
            Summary = "One monitor session with its latest state (snapshot)"
            Auth = AuthRequirement.Token
            Request = None
            Response = typeof<Api.MonitorSession>
            Handler = MonitorHandlers.get
        }
        {
            Method = HttpMethods.Post
            Template = "/v1/monitors/{session_id}/stop"
            Summary = "Stop a monitor session (idempotent); answers once its sockets, thread and recording are closed"
            Auth = AuthRequirement.Token
            Request = None
            Response = typeof<Api.MonitorSession>
            Handler = MonitorHandlers.stop
        }
        {
            Method = HttpMethods.Get
            Template = "/v1/monitors/{session_id}/stream"
            Summary =
                "The session live: a WebSocket of JSON text messages (MonitorStreamMessage: snapshot first, then update, source_status, heartbeat, end), or the same as Server-Sent Events with Accept: text/event-stream; a slow watcher loses its oldest messages (dropped counts them); the token may be ?access_token="
            Auth = AuthRequirement.TokenOrQuery
            Request = None
            Response = typeof<Api.MonitorStreamMessage>
            Handler = MonitorHandlers.stream
        }
        {
            Method = HttpMethods.Get
            Template = "/v1/openapi.json"
            Summary = "This API as an OpenAPI 3.1 document, generated from the route table"
            Auth = AuthRequirement.Anonymous
            Request = None
            Response = typeof<obj>
            Handler = fun _ -> ApiDocument.json
        }
        {
            Method = HttpMethods.Get
            Template = "/docs"
            Summary = "A self-contained page rendering the OpenAPI document (works offline)"
            Auth = AuthRequirement.Anonymous
            Request = None
            Response = typeof<string>
            Handler = fun _ -> ApiDocument.page
        }
    ]

    /// The methods a path answers; GET implies HEAD.
    let private allowed (group: Endpoint list) =
        let methods = group |> List.map (fun e -> e.Method)

        match List.contains HttpMethods.Get methods with
        | true -> methods @ [ HttpMethods.Head ]
        | false -> methods
        |> List.distinct

    let private methodMatches (endpoint: Endpoint) : HttpHandler =
        match endpoint.Method with
        | m when m = HttpMethods.Get -> choose [ GET; HEAD ]
        | m -> verb m

    /// Unknown paths: 404 naming what was asked for.
    let notFound: HttpHandler =
        warbler (fun (_, ctx) -> Problem.notFound $"no endpoint at {ctx.Request.Method} {ctx.Request.Path.Value}")

    /// One handler for the table: for each template, the matching method's handler, else 405
    /// with `Allow`; any other path, 404.
    let pipeline (table: Endpoint list) : HttpHandler =
        let byTemplate = table |> List.groupBy (fun e -> e.Template)

        choose [
            for template, group in byTemplate do
                routeTemplate template (fun args ->
                    choose [
                        for endpoint in group do
                            match endpoint.Auth with
                            | AuthRequirement.Anonymous ->
                                methodMatches endpoint >=> Auth.rateLimit >=> endpoint.Handler args
                            | AuthRequirement.Token ->
                                methodMatches endpoint
                                >=> Auth.requireToken
                                >=> Auth.rateLimit
                                >=> endpoint.Handler args
                            | AuthRequirement.TokenOrQuery ->
                                methodMatches endpoint
                                >=> Auth.requireTokenOrQuery
                                >=> Auth.rateLimit
                                >=> endpoint.Handler args
                        Problem.methodNotAllowed (allowed group)
                    ])
            notFound
        ]
