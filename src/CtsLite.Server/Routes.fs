namespace CtsLite.Server

open System
open Microsoft.AspNetCore.Http
open CtsLite.Server.Http

/// Who may call an endpoint.
[<RequireQualifiedAccess>]
type AuthRequirement =
    | Anonymous
    /// A valid token is required whenever a JWT secret is configured.
    | Token

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
            Summary = "Start a tool run (the seed's Run Request); 202 with the Run Response"
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
            Summary = "The run's log as Server-Sent Events (log, status, end), resumable; ?format=json for a list"
            Auth = AuthRequirement.Token
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
            Response = typeof<UploadHandlers.UploadResponse>
            Handler = fun _ -> UploadHandlers.create
        }
        {
            Method = HttpMethods.Get
            Template = "/v1/uploads/{upload_id}"
            Summary = "One upload"
            Auth = AuthRequirement.Token
            Request = None
            Response = typeof<UploadHandlers.UploadResponse>
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
            Summary = "The artifact's bytes, with Content-Disposition, ETag and Range support"
            Auth = AuthRequirement.Token
            Request = None
            Response = typeof<byte[]>
            Handler = RunHandlers.download
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
                        Problem.methodNotAllowed (allowed group)
                    ])
            notFound
        ]
