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
                            methodMatches endpoint >=> endpoint.Handler args
                        Problem.methodNotAllowed (allowed group)
                    ])
            notFound
        ]
