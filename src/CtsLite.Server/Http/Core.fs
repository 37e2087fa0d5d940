namespace CtsLite.Server.Http

open System
open System.Threading.Tasks
open Microsoft.AspNetCore.Http

/// The Giraffe-style handler model, with Giraffe's names and semantics so that swapping the real
/// Giraffe in later is a change of `open`s: a handler receives the next function and returns a
/// function of the context; returning `None` means "not mine, let the next candidate try".
[<AutoOpen>]
module Core =

    /// The result of a handler: `Some ctx` when it handled (or passed on) the request, `None` to skip.
    type HttpFuncResult = Task<HttpContext option>

    /// A function that processes a request.
    type HttpFunc = HttpContext -> HttpFuncResult

    /// A composable request handler: given what to call next, how to process a request.
    type HttpHandler = HttpFunc -> HttpFunc

    /// The result that tells the pipeline this handler does not apply.
    let skipPipeline: HttpFuncResult = Task.FromResult None

    /// The final function: ends the pipeline, marking the request handled.
    let earlyReturn: HttpFunc = fun ctx -> Task.FromResult(Some ctx)

    /// Runs `handler1`, then `handler2` if `handler1` called its continuation. Once the response
    /// has started nothing more can be written, so the rest of the chain is bypassed.
    let compose (handler1: HttpHandler) (handler2: HttpHandler) : HttpHandler =
        fun (final: HttpFunc) ->
            let func = final |> handler2 |> handler1

            fun (ctx: HttpContext) ->
                match ctx.Response.HasStarted with
                | true -> final ctx
                | false -> func ctx

    /// Giraffe's composition operator: `handler1 >=> handler2`.
    let (>=>) = compose

    let rec private chooseHttpFunc (funcs: HttpFunc list) : HttpFunc =
        fun (ctx: HttpContext) -> task {
            match funcs with
            | [] -> return None
            | func :: tail ->
                let! result = func ctx

                match result with
                | Some c -> return Some c
                | None -> return! chooseHttpFunc tail ctx
        }

    /// Tries each handler in order and returns the first result that is not a skip.
    let choose (handlers: HttpHandler list) : HttpHandler =
        fun (next: HttpFunc) ->
            let funcs = handlers |> List.map (fun h -> h next)
            fun (ctx: HttpContext) -> chooseHttpFunc funcs ctx

    /// A handler that never applies.
    let skip: HttpHandler = fun _ _ -> skipPipeline

    /// A handler that applies and passes the request on unchanged.
    let handleContext (contextMap: HttpContext -> HttpFuncResult) : HttpHandler =
        fun (_: HttpFunc) (ctx: HttpContext) -> contextMap ctx

    /// Delays the construction of a handler until a request arrives (Giraffe's "warbler").
    let warbler (f: HttpFunc * HttpContext -> HttpHandler) : HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) -> f (next, ctx) next ctx

    let private httpVerb (validate: string -> bool) : HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) ->
            match validate ctx.Request.Method with
            | true -> next ctx
            | false -> skipPipeline

    /// Continues only for GET requests.
    let GET: HttpHandler = httpVerb HttpMethods.IsGet
    /// Continues only for POST requests.
    let POST: HttpHandler = httpVerb HttpMethods.IsPost
    /// Continues only for PUT requests.
    let PUT: HttpHandler = httpVerb HttpMethods.IsPut
    /// Continues only for PATCH requests.
    let PATCH: HttpHandler = httpVerb HttpMethods.IsPatch
    /// Continues only for DELETE requests.
    let DELETE: HttpHandler = httpVerb HttpMethods.IsDelete
    /// Continues only for HEAD requests.
    let HEAD: HttpHandler = httpVerb HttpMethods.IsHead
    /// Continues only for OPTIONS requests.
    let OPTIONS: HttpHandler = httpVerb HttpMethods.IsOptions

    /// Continues only for the given method (case-insensitive).
    let verb (method: string) : HttpHandler =
        httpVerb (fun m -> String.Equals(m, method, StringComparison.OrdinalIgnoreCase))

    /// Sets the response status code.
    let setStatusCode (statusCode: int) : HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) ->
            ctx.Response.StatusCode <- statusCode
            next ctx

    /// Sets a response header.
    let setHttpHeader (key: string) (value: string) : HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) ->
            ctx.Response.Headers[key] <- Microsoft.Extensions.Primitives.StringValues value
            next ctx
