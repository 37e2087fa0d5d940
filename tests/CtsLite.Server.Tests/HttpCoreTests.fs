/// Properties of the Giraffe-style core: `>=>` and `choose` agree with a reference model, and the
/// routing combinators extract what they should.
module CtsLite.Server.Tests.HttpCoreTests

open System
open System.Threading.Tasks
open Microsoft.AspNetCore.Http
open Expecto
open FsCheck
open FsCheck.FSharp
open CtsLite.Server.Http

/// A small handler language: each leaf records a tag in the context, then skips, continues or ends.
type Leaf =
    | Skip
    | Emit of int
    | Stop of int

type Tree =
    | Op of Leaf
    | Compose of Tree * Tree
    | Choose of Tree list

let private traceKey = "trace"

let private record (ctx: HttpContext) (tag: int) =
    let trace = ctx.Items[traceKey] :?> ResizeArray<int>
    trace.Add tag

let rec toHandler (tree: Tree) : HttpHandler =
    match tree with
    | Op Skip -> skip
    | Op(Emit n) ->
        fun next ctx ->
            record ctx n
            next ctx
    | Op(Stop n) ->
        fun _ ctx ->
            record ctx n
            Task.FromResult(Some ctx)
    | Compose(a, b) -> toHandler a >=> toHandler b
    | Choose trees -> choose (trees |> List.map toHandler)

/// Reference semantics in continuation-passing style. Side effects of a branch that later skips
/// stay, as they do in Giraffe (the context is mutable).
let rec eval (tree: Tree) (k: int list -> int list * bool) (trace: int list) : int list * bool =
    match tree with
    | Op Skip -> trace, false
    | Op(Emit n) -> k (trace @ [ n ])
    | Op(Stop n) -> trace @ [ n ], true
    | Compose(a, b) -> eval a (eval b k) trace
    | Choose trees ->
        let rec go ts t =
            match ts with
            | [] -> t, false
            | x :: rest ->
                match eval x k t with
                | t', true -> t', true
                | t', false -> go rest t'

        go trees trace

let run (handler: HttpHandler) : int list * bool =
    let ctx = DefaultHttpContext()
    ctx.Items[traceKey] <- ResizeArray<int>()
    let result = (handler earlyReturn ctx).GetAwaiter().GetResult()
    List.ofSeq (ctx.Items[traceKey] :?> ResizeArray<int>), result.IsSome

let private treeGen: Gen<Tree> =
    let leaf =
        Gen.oneof [
            Gen.constant (Op Skip)
            Gen.choose (0, 99) |> Gen.map (Emit >> Op)
            Gen.choose (0, 99) |> Gen.map (Stop >> Op)
        ]

    let rec sized n =
        match n with
        | 0 -> leaf
        | _ ->
            Gen.frequency [
                3, leaf
                2, Gen.map2 (fun a b -> Compose(a, b)) (sized (n / 2)) (sized (n / 2))
                2, Gen.listOfLength 3 (sized (n / 3)) |> Gen.map Choose
                1, Gen.constant (Choose [])
            ]

    Gen.sized (fun s -> sized (min s 12))

let private config = {
    FsCheckConfig.defaultConfig with
        maxTest = 300
        arbitrary = []
}

let private treeArb = Arb.fromGen treeGen

let private forAllTrees name (property: Tree -> bool) =
    testProperty name (Prop.forAll treeArb property)

let private forAllTriples name (property: Tree * Tree * Tree -> bool) =
    testProperty name (Prop.forAll (Arb.fromGen (Gen.zip3 treeGen treeGen treeGen)) property)

let composition =
    testList "handler composition" [
        forAllTrees "handlers behave as the reference model" (fun tree ->
            run (toHandler tree) = eval tree (fun t -> t, true) [])

        forAllTriples "compose is associative" (fun (a, b, c) ->
            run ((toHandler a >=> toHandler b) >=> toHandler c) = run (toHandler a >=> (toHandler b >=> toHandler c)))

        forAllTrees "a pass-through handler is an identity on both sides" (fun a ->
            let id: HttpHandler = fun next ctx -> next ctx
            let h = toHandler a
            run (id >=> h) = run h && run (h >=> id) = run h)

        forAllTrees "choose of one handler is that handler" (fun a -> run (choose [ toHandler a ]) = run (toHandler a))

        forAllTrees "a leading skip in choose changes nothing" (fun a ->
            run (choose [ skip; toHandler a ]) = run (toHandler a))

        forAllTrees "skip absorbs composition on the left" (fun a -> run (skip >=> toHandler a) = ([], false))

        test "choose of nothing skips" { Expect.equal (run (choose [])) ([], false) "empty choose" }

        test "the first handler that applies wins" {
            Expect.equal
                (run (choose [ toHandler (Op Skip); toHandler (Op(Stop 1)); toHandler (Op(Stop 2)) ]))
                ([ 1 ], true)
                "first"
        }

        test "nothing runs after the response has started" {
            let ctx = DefaultHttpContext()
            ctx.Items[traceKey] <- ResizeArray<int>()

            let started = {
                new Microsoft.AspNetCore.Http.Features.HttpResponseFeature() with
                    override _.HasStarted = true
            }

            ctx.Features.Set<Microsoft.AspNetCore.Http.Features.IHttpResponseFeature>(started)
            let handler = toHandler (Op(Emit 1)) >=> toHandler (Op(Emit 2))
            let result = (handler earlyReturn ctx).GetAwaiter().GetResult()
            Expect.isSome result "final called"
            Expect.isEmpty (ctx.Items[traceKey] :?> ResizeArray<int>) "bypassed"
        }
    ]

let private contextFor (path: string) (method: string) =
    let ctx = DefaultHttpContext()
    ctx.Request.Path <- PathString path
    ctx.Request.Method <- method
    ctx

let private capture<'T> (handler: ('T -> HttpHandler) -> HttpHandler) (ctx: HttpContext) : 'T option =
    let mutable seen = None

    let h =
        handler (fun v ->
            seen <- Some v
            fun next c -> next c)

    (h earlyReturn ctx).GetAwaiter().GetResult() |> ignore
    seen

let private safeSegment =
    Gen.elements ([ 'a' .. 'z' ] @ [ '0' .. '9' ] @ [ ' '; '%'; '?'; '#'; 'é'; '-'; '_' ])
    |> Gen.nonEmptyListOf
    |> Gen.map (fun cs -> String(Array.ofList cs))

let routing =
    testList "routing" [
        testProperty
            "routef round-trips ints, URL-encoded strings and guids"
            (Prop.forAll
                (Arb.fromGen (
                    Gen.zip3
                        (ArbMap.defaults |> ArbMap.generate<int>)
                        safeSegment
                        (Gen.constant () |> Gen.map (fun () -> Guid.NewGuid()))
                ))
                (fun (i, s, g) ->
                    let path = $"/v1/things/{i}/named/{Uri.EscapeDataString s}/{g}"
                    let ctx = contextFor path "GET"
                    capture (routef "/v1/things/%i/named/%s/%O") ctx = Some(i, s, g)))

        testProperty "routef never lets %s span a slash" (fun (a: NonEmptyString) ->
            let ctx = contextFor $"/x/{Uri.EscapeDataString a.Get}/extra" "GET"
            capture (routef "/x/%s") ctx = None)

        test "routef skips when a number overflows" {
            let ctx = contextFor "/n/99999999999" "GET"
            Expect.equal (capture (routef "/n/%i") ctx) None "int overflow"
            Expect.equal (capture (routef "/n/%d") ctx) (Some 99999999999L) "fits int64"
        }

        test "routef rejects handlers whose types do not match the format" {
            Expect.throws (fun () -> routef "/x/%O" (fun (_: string) -> skip) |> ignore) "%O is a Guid"
        }

        test "route matches exactly and routeCi ignores case" {
            Expect.isTrue (run (route "/v1/health" >=> toHandler (Op(Stop 1))) = ([], false)) "no path set"
            let ctx = contextFor "/V1/Health" "GET"
            Expect.isNone ((route "/v1/health" earlyReturn ctx).GetAwaiter().GetResult()) "case-sensitive"
            Expect.isSome ((routeCi "/v1/health" earlyReturn ctx).GetAwaiter().GetResult()) "case-insensitive"
        }

        test "subRoute strips its prefix and restores it when skipping" {
            let ctx = contextFor "/v1/health" "GET"
            let handler = choose [ subRoute "/v1" (route "/other"); route "/v1/health" ]
            Expect.isSome ((handler earlyReturn ctx).GetAwaiter().GetResult()) "falls through to the full path"
            let nested = subRoute "/v1" (route "/health")
            Expect.isSome ((nested earlyReturn (contextFor "/v1/health" "GET")).GetAwaiter().GetResult()) "nested"
        }

        test "routeTemplate captures and decodes named segments" {
            let ctx = contextFor "/v1/runs/abc%20d/logs" "GET"
            let seen = capture (routeTemplate "/v1/runs/{run_id}/logs") ctx
            Expect.equal (seen |> Option.map (fun a -> a["run_id"])) (Some "abc d") "run_id"
            Expect.isNone (capture (routeTemplate "/v1/runs/{run_id}") (contextFor "/v1/runs/a/b" "GET")) "one segment"
        }

        test "verb filters" {
            Expect.isSome ((GET earlyReturn (contextFor "/" "GET")).GetAwaiter().GetResult()) "GET"
            Expect.isNone ((GET earlyReturn (contextFor "/" "POST")).GetAwaiter().GetResult()) "POST is not GET"
            Expect.isSome ((verb "patch" earlyReturn (contextFor "/" "PATCH")).GetAwaiter().GetResult()) "verb"
        }
    ]

let all = testList "HTTP core" [ composition; routing ]
