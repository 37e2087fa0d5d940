/// The analyzer's reusable pieces on their own: the frame store, distinct payloads, the bit and
/// window queries of FrameIndex (checked against plain list computations by FsCheck).
module CtsLite.Core.Tests.FrameIndexTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open CtsLite.Can
open CtsLite.Tools
open CtsLite.Tests

let private storeOf (frames: (int64 * uint32 * int * byte array) list) =
    let store = new FrameStore()

    for ns, address, bus, payload in frames do
        store.Add(ns, store.KeyOf(address, bus), ReadOnlySpan payload) |> ignore

    store

/// Rises and falls of every bit over consecutive payloads, computed the plain way.
let private plainChanges (payloads: byte array list) =
    let longest = payloads |> List.map _.Length |> List.fold max 0
    let rises = Array.zeroCreate<int>(longest * 8)
    let falls = Array.zeroCreate<int>(longest * 8)

    let bit (p: byte array) g =
        g / 8 < p.Length && (p[g / 8] >>> (g % 8)) &&& 1uy = 1uy

    for a, b in List.pairwise payloads do
        for g in 0 .. longest * 8 - 1 do
            match bit a g, bit b g with
            | false, true -> rises[g] <- rises[g] + 1
            | true, false -> falls[g] <- falls[g] + 1
            | _ -> ()

    rises, falls

let all =
    testList "frame index" [
        test "frames are kept per (address, bus) in time order, payloads as given" {
            use store =
                storeOf [
                    30L, 0x146u, 0, [| 3uy |]
                    10L, 0x146u, 0, [| 1uy |]
                    20L, 0x146u, 1, [| 2uy; 2uy |]
                    10L, 0x146u, 0, [| 4uy |]
                ]

            Expect.equal store.Count 4 "every frame"

            Expect.equal
                (List.ofSeq store.Keys)
                [ { Address = 0x146u; Bus = 0 }; { Address = 0x146u; Bus = 1 } ]
                "buses never mixed"

            let byKey = store.ByKey()
            let times (k: int) = byKey[k] |> Array.map store.Time
            Expect.equal (times 0) [| 10L; 10L; 30L |] "time order"
            // Frames of one time keep their log order.
            Expect.equal (byKey[0] |> Array.map (fun i -> (store.PayloadArray i)[0])) [| 1uy; 4uy; 3uy |] "stable"
            Expect.equal (store.PayloadArray(byKey[1][0])) [| 2uy; 2uy |] "payload"
        }
        test "distinct payloads count exactly and reset for the next key" {
            use store =
                storeOf (
                    [ for i in 0..999 -> int64 i, 1u, 0, [| byte (i % 7); 0uy |] ]
                    @ [
                        0L, 1u, 0, Array.init 12 byte
                        1L, 1u, 0, Array.init 12 byte
                        2L, 1u, 0, [| 0uy; 0uy; 0uy |]
                    ]
                )

            let set = UniquePayloads()

            for i in 0 .. store.Count - 1 do
                set.Add(store, i)

            // 7 short values, one 12-byte payload, and a 3-byte one (another length).
            Expect.equal set.Count 9 "exact"
            set.Clear()
            Expect.equal set.Count 0 "reset"
            set.Add(store, 0)
            Expect.equal set.Count 1 "counts again after a reset"
        }
        testProperty "bitChanges equals the plain count of rises and falls" (fun (payloads: NonEmptyArray<byte> list) ->
            let payloads =
                payloads |> List.map (fun a -> a.Get |> Array.truncate 12) |> List.truncate 40

            use store = storeOf [ for i, p in List.indexed payloads -> int64 i, 1u, 0, p ]
            let indices = Array.init store.Count id

            let struct (rises, falls, changed) =
                FrameIndex.bitChanges store (ReadOnlySpan indices) 0 indices.Length

            let plainRises, plainFalls = plainChanges payloads

            let plainChanged =
                payloads |> List.pairwise |> List.filter (fun (a, b) -> a <> b) |> List.length

            rises = plainRises && falls = plainFalls && changed = plainChanged)
        testProperty
            "BitFlips one payload at a time equals bitChanges over the stored frames"
            (fun (payloads: NonEmptyArray<byte> list) ->
                let payloads =
                    payloads |> List.map (fun a -> a.Get |> Array.truncate 12) |> List.truncate 40

                use store = storeOf [ for i, p in List.indexed payloads -> int64 i, 1u, 0, p ]
                let indices = Array.init store.Count id

                let struct (rises, falls, _) =
                    FrameIndex.bitChanges store (ReadOnlySpan indices) 0 indices.Length

                let flips = BitFlips()

                for p in payloads do
                    flips.Add(ReadOnlySpan p)

                // BitFlips sizes its counts by the longest payload so far; bits past it never flipped.
                let trim (a: int array) n =
                    Array.init n (fun i -> if i < a.Length then a[i] else 0)

                let n = max rises.Length 64
                trim flips.Rises n = trim rises n && trim flips.Falls n = trim falls n)
        test "DropFirst forgets the oldest frames and keeps the rest, their payloads and keys" {
            use store =
                storeOf [
                    for i in 0..9 ->
                        int64 i, (if i % 2 = 0 then 0x146u else 0x13Au), 0, Array.create (1 + i % 3) (byte i)
                ]

            store.DropFirst 6
            Expect.equal store.Count 4 "four left"
            Expect.equal [ for i in 0..3 -> store.Time i ] [ 6L; 7L; 8L; 9L ] "the newest, in order"

            Expect.equal
                [ for i in 0..3 -> store.PayloadArray i ]
                [ for i in 6..9 -> Array.create (1 + i % 3) (byte i) ]
                "their payloads"

            Expect.equal [ for i in 0..3 -> store.Keys[store.Key i].Address ] [ 0x146u; 0x13Au; 0x146u; 0x13Au ] "keys"
            Expect.equal (store.ByKey() |> Array.map Array.length) [| 2; 2 |] "per-key counts follow"
            store.Add(10L, store.KeyOf(0x146u, 0), ReadOnlySpan [| 42uy |]) |> ignore
            Expect.equal (store.PayloadArray 4) [| 42uy |] "appends after the kept frames"
        }
        test "top takes the most-flipped bits, ties to the lower bit, never a bit that did not flip" {
            let rises = [| 0; 5; 1; 2; 0 |]
            let falls = [| 0; 0; 4; 1; 0 |]
            Expect.equal (FrameIndex.top 3 rises falls) [| struct (1, 5); struct (2, 5); struct (3, 3) |] "ordered"

            Expect.equal
                (FrameIndex.top 10 rises falls)
                [| struct (1, 5); struct (2, 5); struct (3, 3) |]
                "only bits that flipped"
        }
        testProperty
            "window bounds are the first time ≥ and the first time > the given one"
            (fun (times: int16 list) (probe: int16) ->
                let times = times |> List.map int64 |> List.sort
                use store = storeOf [ for t in times -> t, 1u, 0, [| 0uy |] ]
                let ix = if store.Count = 0 then [||] else store.ByKey()[0]
                let ns = int64 probe
                let lo = FrameIndex.lowerBound store (ReadOnlySpan ix) ns
                let hi = FrameIndex.upperBound store (ReadOnlySpan ix) ns

                lo = (times |> List.filter (fun t -> t < ns) |> List.length)
                && hi = (times |> List.filter (fun t -> t <= ns) |> List.length))
        test "the analysis is the same on every run, its pooled ring and arrays reused" {
            let prepared =
                ToolRunner.prepare "cruise-control-analyzer" []
                |> Result.defaultWith (failwithf "%A")

            let ctx: ToolContext = {
                Input =
                    ToolInput.Path(
                        IO.Path.Combine(TestEnv.sharedDir (), "data", "rlogs", "synthetic", "default.rlog.zst")
                    )
                Parameters = prepared.Parameters
                OutputDir = TestEnv.tempDir "stages"
                Progress = ignore
                Log = fun _ _ -> ()
                Cancellation = Threading.CancellationToken.None
                ResolveFile = Ok
                ShowPath = id
            }

            let settings = CruiseTool.settings ctx.Parameters

            let dbc =
                ToolSupport.loadDbc ctx "dbc" CruiseTool.DefaultDbc
                |> Result.defaultWith (failwithf "%A")

            let analyse () =
                CruiseTool.analyse ctx settings dbc |> Result.defaultWith (failwithf "%A")

            let first = analyse ()
            Expect.isNonEmpty first.SetPresses "Set presses found"
            Expect.isNonEmpty first.Candidates "candidate bits found"

            for _ in 1..3 do
                Expect.equal (analyse ()) first "the same analysis"
        }
    ]
