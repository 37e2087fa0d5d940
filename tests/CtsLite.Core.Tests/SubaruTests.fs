module CtsLite.Core.Tests.SubaruTests

open System
open System.IO
open System.Text.Json
open Expecto
open CtsLite.Can
open CtsLite.Capnp
open CtsLite.Logs
open CtsLite.Tests

let private decoder (file: string) =
    match Dbc.loadFile (TestEnv.generatedDbc file) with
    | Ok db -> Subaru.ofDatabase db |> Result.defaultWith failwith
    | Error es -> failtestf "%A" es

let private ok r =
    match r with
    | Ok v -> v
    | Error e -> failtestf "%A" e

let all =
    testList "Subaru decoders" [
        test "the Python comma-tools' reference vector, decoded through the DBC" {
            let d = decoder "subaru_global_2017_generated.dbc"
            let payload = [| 0uy; 1uy; 2uy; 3uy; 4uy; 5uy; 6uy; 7uy |]
            let w = Subaru.wheelSpeeds d (ReadOnlySpan payload) |> ok
            Expect.floatClose Accuracy.high w.FrontLeft 12.768 "FL"
            Expect.floatClose Accuracy.high w.FrontRight 235.296 "FR"
            Expect.floatClose Accuracy.high w.RearLeft 351.348 "RL"
            Expect.floatClose Accuracy.high w.RearRight 29.241 "RR"
            Expect.floatClose Accuracy.high w.AverageKph 157.16325 "average kph"
            Expect.floatClose Accuracy.medium w.AverageMph 97.656686 "average mph"

            Expect.equal
                (Subaru.cruiseButtons d (ReadOnlySpan payload) |> ok)
                {
                    Main = true
                    Set = false
                    Resume = false
                }
                "buttons"

            Expect.equal
                (Subaru.esBrake d (ReadOnlySpan payload) |> ok)
                {
                    CruiseBrakeActive = false
                    CruiseActivated = false
                }
                "ES_Brake"

            Expect.equal (Subaru.blinkers d (ReadOnlySpan payload) |> ok) { Left = true; Right = false } "blinkers"

            // Where the DBC differs from the Python comma-tools: the set speed is big-endian (bytes 6-7 give
            // 0x607 = 1543, rejected), not 12 little-endian bits from bit 51 (224 in the Python comma-tools).
            match Subaru.cruiseStatus d (ReadOnlySpan payload) with
            | Error(SubaruDecodeError.Unreasonable("Cruise_Set_Speed", 1543.0, _)) -> ()
            | other -> failtestf "%A" other
        }
        test "validation rejects impossible values and short payloads" {
            let d = decoder "subaru_global_2017_generated.dbc"
            let ff = Array.create 8 0xFFuy

            match Subaru.wheelSpeeds d (ReadOnlySpan ff) with
            | Error(SubaruDecodeError.Unreasonable("FL", v, "0..400 kph")) ->
                Expect.floatClose Accuracy.medium v 466.887 "466.9 kph"
            | other -> failtestf "%A" other

            match Subaru.cruiseButtons d (ReadOnlySpan [| 1uy; 2uy |]) with
            | Error(SubaruDecodeError.ShortPayload("Cruise_Buttons", 2)) -> ()
            | other -> failtestf "%A" other
        }
        test "the hybrid DBC carries the same signals" { decoder "subaru_global_2020_hybrid_generated.dbc" |> ignore }
        test "Set presses, set speeds and the speed range of every synthetic log equal its truth" {
            let d = decoder "subaru_global_2017_generated.dbc"
            let synthetic = Path.Combine(TestEnv.sharedDir (), "data", "rlogs", "synthetic")

            let truths = [
                Path.Combine(synthetic, "default.truth.json")
                Path.Combine(synthetic, "route", "5ca1ab1e5ca1ab1e|2025-01-16--07-45-12.truth.json")
            ]

            let mutable checkedFiles = 0

            for truthPath in truths do
                let truth = JsonDocument.Parse(File.ReadAllText truthPath).RootElement

                for expected in truth.GetProperty("expected_per_file").EnumerateArray() do
                    let log =
                        Path.Combine(
                            TestEnv.sharedDir (),
                            expected.GetProperty("file").GetString().Substring("shared/".Length)
                        )

                    let frames =
                        Log.canFrames ReaderOptions.Default log
                        |> Result.defaultWith failwith
                        |> List.filter (fun f -> f.Service = CanService.Can)

                    let presses =
                        frames
                        |> List.filter (fun f -> f.Address = Subaru.CruiseButtonsAddress && f.Bus = 1)
                        |> List.map (fun f ->
                            uint64 f.TimeNs, (Subaru.cruiseButtons d (ReadOnlySpan f.Payload) |> ok).Set)
                        |> List.pairwise
                        |> List.choose (fun ((_, before), (t, now)) -> if now && not before then Some t else None)

                    let truthPresses = [
                        for p in expected.GetProperty("set_presses").EnumerateArray() ->
                            UInt64.Parse(p.GetProperty("t_ns").GetString())
                    ]

                    Expect.equal presses truthPresses $"{log}: Set presses to the nanosecond"

                    let speeds =
                        frames
                        |> List.filter (fun f -> f.Address = Subaru.CruiseStatusAddress && f.Bus = 1)
                        |> List.map (fun f ->
                            uint64 f.TimeNs, (Subaru.cruiseStatus d (ReadOnlySpan f.Payload) |> ok).SetSpeed)

                    let changes =
                        (List.head speeds)
                        :: (speeds
                            |> List.pairwise
                            |> List.choose (fun ((_, a), (t, b)) -> if a <> b then Some(t, b) else None))

                    let truthChanges = [
                        for c in expected.GetProperty("cruise_set_speed_0x241_dbc_changes").EnumerateArray() ->
                            UInt64.Parse(c.GetProperty("t_ns").GetString()), c.GetProperty("dbc_mph").GetDouble()
                    ]

                    Expect.equal changes truthChanges $"{log}: set speed changes"

                    let mph =
                        frames
                        |> List.filter (fun f -> f.Address = Subaru.WheelSpeedsAddress)
                        |> List.map (fun f -> (Subaru.wheelSpeeds d (ReadOnlySpan f.Payload) |> ok).AverageMph)

                    let range = expected.GetProperty "speed_mph_range"
                    Expect.equal mph.Length (expected.GetProperty("speed_samples").GetInt32()) $"{log}: speed samples"
                    Expect.floatClose Accuracy.medium (List.min mph) (range[0].GetDouble()) $"{log}: min mph"
                    Expect.floatClose Accuracy.medium (List.max mph) (range[1].GetDouble()) $"{log}: max mph"
                    checkedFiles <- checkedFiles + 1

            Expect.equal checkedFiles 4 "default and the 3 route segments"
        }
    ]
