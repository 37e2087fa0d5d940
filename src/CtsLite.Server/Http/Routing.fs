namespace CtsLite.Server.Http

open System
open System.Collections.Generic
open System.Text
open System.Text.RegularExpressions
open Microsoft.AspNetCore.Http
open Microsoft.FSharp.Reflection

/// Path routing with Giraffe's names: `route`, `routeCi`, `routef`, `routeStartsWith`, `subRoute`,
/// plus `routeTemplate` for the `{name}` templates of the declarative route table.
[<AutoOpen>]
module Routing =

    [<Literal>]
    let private SubRouteKey = "giraffe_route"

    /// The request path with any prefix consumed by enclosing `subRoute`s removed.
    let getPath (ctx: HttpContext) : string =
        let path = ctx.Request.Path.Value |> Option.ofObj |> Option.defaultValue ""

        match ctx.Items.TryGetValue SubRouteKey with
        | true, (:? string as prefix) when path.StartsWith(prefix, StringComparison.Ordinal) ->
            path.Substring prefix.Length
        | _ -> path

    /// Continues when the path equals `path` exactly.
    let route (path: string) : HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) ->
            match String.Equals(getPath ctx, path, StringComparison.Ordinal) with
            | true -> next ctx
            | false -> skipPipeline

    /// Continues when the path equals `path`, ignoring case.
    let routeCi (path: string) : HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) ->
            match String.Equals(getPath ctx, path, StringComparison.OrdinalIgnoreCase) with
            | true -> next ctx
            | false -> skipPipeline

    /// Continues when the path starts with `prefix`.
    let routeStartsWith (prefix: string) : HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) ->
            match (getPath ctx).StartsWith(prefix, StringComparison.Ordinal) with
            | true -> next ctx
            | false -> skipPipeline

    /// Continues with `handler` when the path starts with `path`; inside it, routes match the rest.
    let subRoute (path: string) (handler: HttpHandler) : HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) -> task {
            match (getPath ctx).StartsWith(path, StringComparison.Ordinal) with
            | false -> return None
            | true ->
                let saved =
                    match ctx.Items.TryGetValue SubRouteKey with
                    | true, (:? string as p) -> p
                    | _ -> ""

                ctx.Items[SubRouteKey] <- saved + path
                let! result = handler next ctx
                // A skipped sub-route must not leave its prefix behind for the next candidate.
                if result.IsNone then
                    ctx.Items[SubRouteKey] <- saved

                return result
        }

    type private Spec = {
        Pattern: string
        Expected: Type
        Convert: string -> obj option
    }

    let private parseWith (f: string -> bool * 'a) (s: string) : obj option =
        match f s with
        | true, v -> Some(box v)
        | false, _ -> None

    let private invariant = Globalization.CultureInfo.InvariantCulture

    let private spec (c: char) : Spec =
        match c with
        | 's' -> {
            Pattern = "([^/]+)"
            Expected = typeof<string>
            Convert = fun s -> Some(box s)
          }
        | 'i' -> {
            Pattern = "([+-]?[0-9]+)"
            Expected = typeof<int>
            Convert = parseWith (fun s -> Int32.TryParse(s, Globalization.NumberStyles.AllowLeadingSign, invariant))
          }
        | 'd' -> {
            Pattern = "([+-]?[0-9]+)"
            Expected = typeof<int64>
            Convert = parseWith (fun s -> Int64.TryParse(s, Globalization.NumberStyles.AllowLeadingSign, invariant))
          }
        | 'u' -> {
            Pattern = "([0-9]+)"
            Expected = typeof<uint64>
            Convert = parseWith (fun s -> UInt64.TryParse(s, Globalization.NumberStyles.None, invariant))
          }
        | 'f' -> {
            Pattern = "([+-]?[0-9]+(?:\\.[0-9]+)?)"
            Expected = typeof<float>
            Convert = parseWith (fun s -> Double.TryParse(s, Globalization.NumberStyles.Float, invariant))
          }
        | 'b' -> {
            Pattern = "((?i:true|false))"
            Expected = typeof<bool>
            Convert = parseWith Boolean.TryParse
          }
        | 'c' -> {
            Pattern = "([^/])"
            Expected = typeof<char>
            Convert = fun s -> Some(box s[0])
          }
        | 'O' -> {
            Pattern = "([0-9A-Fa-f]{8}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{4}-?[0-9A-Fa-f]{12})"
            Expected = typeof<Guid>
            Convert = parseWith Guid.TryParse
          }
        | other -> invalidArg "path" $"routef: format specifier %%%c{other} is not supported (use s i d u f b c O)"

    /// Builds the regex and converters of a routef format. Runs once, when the route is composed.
    let private compileFormat (format: string) : Regex * Spec list =
        let pattern = StringBuilder("^")
        let specs = ResizeArray<Spec>()
        let mutable i = 0

        while i < format.Length do
            match format[i] with
            | '%' when i + 1 < format.Length && format[i + 1] = '%' ->
                pattern.Append(Regex.Escape "%") |> ignore
                i <- i + 2
            | '%' when i + 1 < format.Length ->
                let s = spec format[i + 1]
                specs.Add s
                pattern.Append s.Pattern |> ignore
                i <- i + 2
            | c ->
                pattern.Append(Regex.Escape(string c)) |> ignore
                i <- i + 1

        pattern.Append '$' |> ignore
        Regex(pattern.ToString(), RegexOptions.CultureInvariant ||| RegexOptions.Compiled), List.ofSeq specs

    /// Matches the path against a format such as `"/v1/runs/%s/logs"` and passes the parsed values
    /// to `routeHandler` (a tuple when there are several). `%s` values are URL-decoded and never
    /// span a `/`; `%O` is a Guid. A value that does not parse (e.g. an `%i` overflow) skips.
    let routef (path: PrintfFormat<_, _, _, _, 'T>) (routeHandler: 'T -> HttpHandler) : HttpHandler =
        let regex, specs = compileFormat path.Value

        let targetTypes =
            match FSharpType.IsTuple typeof<'T> with
            | true -> FSharpType.GetTupleElements typeof<'T>
            | false -> [| typeof<'T> |]

        if targetTypes.Length <> specs.Length then
            invalidArg
                "path"
                $"routef: '{path.Value}' has {specs.Length} specifiers but the handler takes {targetTypes.Length} values"

        specs
        |> List.iteri (fun i s ->
            if targetTypes[i] <> s.Expected then
                invalidArg
                    "path"
                    $"routef: value {i + 1} of '{path.Value}' is {s.Expected.Name}, the handler wants {targetTypes[i].Name}")

        let build (values: obj array) : 'T =
            match values.Length with
            | 1 -> unbox<'T> values[0]
            | _ -> FSharpValue.MakeTuple(values, typeof<'T>) :?> 'T

        fun (next: HttpFunc) (ctx: HttpContext) ->
            let m = regex.Match(getPath ctx)

            match m.Success with
            | false -> skipPipeline
            | true ->
                let values = Array.zeroCreate<obj> specs.Length
                let mutable ok = true

                specs
                |> List.iteri (fun i s ->
                    if ok then
                        match s.Convert(Uri.UnescapeDataString m.Groups[i + 1].Value) with
                        | Some v -> values[i] <- v
                        | None -> ok <- false)

                match ok with
                | true -> routeHandler (build values) next ctx
                | false -> skipPipeline

    /// The values captured by a `{name}` route template, URL-decoded.
    type RouteArgs = IReadOnlyDictionary<string, string>

    /// Compiles a template such as `/v1/runs/{run_id}/logs` (each `{name}` is one path segment).
    let compileTemplate (template: string) : Regex =
        let pattern =
            Regex.Replace(
                Regex.Escape template,
                "\\\\\\{([A-Za-z_][A-Za-z0-9_]*)}",
                (fun (m: Match) -> $"(?<{m.Groups[1].Value}>[^/]+)")
            )

        Regex($"^{pattern}$", RegexOptions.CultureInvariant ||| RegexOptions.Compiled)

    let private noArgs: RouteArgs = Dictionary<string, string>()

    /// Matches the path against a `{name}` template and passes the captured values to `handler`.
    /// Templates without `{name}` segments compare strings instead of running a regex.
    let routeTemplate (template: string) (handler: RouteArgs -> HttpHandler) : HttpHandler =
        match template.Contains '{' with
        | false ->
            let exact = handler noArgs

            fun (next: HttpFunc) (ctx: HttpContext) ->
                match String.Equals(getPath ctx, template, StringComparison.Ordinal) with
                | true -> exact next ctx
                | false -> skipPipeline
        | true ->
            let regex = compileTemplate template
            let names = regex.GetGroupNames() |> Array.filter (fun n -> not (Char.IsDigit n[0]))

            fun (next: HttpFunc) (ctx: HttpContext) ->
                let m = regex.Match(getPath ctx)

                match m.Success with
                | false -> skipPipeline
                | true ->
                    let args = Dictionary<string, string>(names.Length)

                    for n in names do
                        args[n] <- Uri.UnescapeDataString m.Groups[n].Value

                    handler args next ctx
