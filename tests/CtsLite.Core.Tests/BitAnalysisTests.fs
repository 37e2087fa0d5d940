module CtsLite.Core.Tests.BitAnalysisTests

open System
open Expecto
open FsCheck
open FsCheck.FSharp
open CtsLite.Can
open CtsLite.Logs

let private frame (time: float) address bus (payload: byte array) = {
    TimeNs = int64 (Math.Round(time * 1e9))
    Address = address
    Bus = bus
    Payload = payload
    Service = CanService.Can
}

let labels =
    testList "bit labels" [
        test "the three conventions stay distinct" {
            Expect.equal (Bits.parseBitwatch "B4b5") (Some 34) "B<byte>b<msb>: MSB-first inside the byte"
            Expect.equal (Bits.bitwatchLabel 34) "B4b5" "and back"
            Expect.equal (Bits.lsbLabel 34) "Byte4 bit2 (LSB)" "LSB label"
            Expect.equal (Bits.msbLabel 34) "MSB B4b5" "MSB label"
            Expect.equal (Bits.parseSelector "0x146:b43") (Ok { Address = 0x146u; Bit = 43 }) "global LSB index"
            Expect.equal (Bits.parseSelector "0x146:B5b4") (Ok { Address = 0x146u; Bit = 43 }) "bitwatch form"
            Expect.equal (Bits.parseSelector "0x146:MSB B20") (Ok { Address = 0x146u; Bit = 43 }) "legacy: 63 - nn"
            Expect.isError (Bits.parseSelector "0x146:B9b9") "msb past 7"
            Expect.isError (Bits.parseSelector "146:b3") "address must be hex"
        }
        testProperty "bitwatch labels round-trip every bit of a 64-byte payload" (fun (n: byte) (k: byte) ->
            let bit = (int n * 2 + int k % 2) % 512
            Bits.parseBitwatch (Bits.bitwatchLabel bit) = Some bit)
        testProperty
            "flipping the changed bits of the old payload gives the new one"
            (fun (a: byte array) (seed: int) ->
                let b =
                    a
                    |> Array.mapi (fun i x ->
                        if (seed >>> (i % 31)) &&& 1 = 1 then
                            x ^^^ byte (seed + i)
                        else
                            x)

                let flipped = Array.copy a

                for bit in Bits.changed a b do
                    flipped[bit / 8] <- flipped[bit / 8] ^^^ (1uy <<< (bit % 8))

                flipped = b)
        test "extra bytes of a longer payload count every set bit" {
            Expect.equal (Bits.changed [| 1uy |] [| 1uy; 0x81uy |]) [ 8; 15 ] "bits of the new byte"
        }
    ]

let analysis =
    testList "bit analysis" [
        test "change statistics count changed messages, flips per bit, and never mix buses" {
            let frames = [
                frame 0.0 0x10u 0 [| 0uy |]
                frame 0.1 0x10u 0 [| 1uy |]
                frame 0.2 0x10u 0 [| 1uy |]
                frame 0.3 0x10u 0 [| 3uy |]
                frame 0.0 0x10u 1 [| 0xFFuy |]
                frame 0.1 0x10u 1 [| 0xFFuy |]
            ]

            match BitAnalysis.changeStats frames with
            | [ bus0; bus1 ] ->
                Expect.equal (bus0.Address, bus0.Bus, bus0.Messages, bus0.MessagesChanged) (0x10u, 0, 4, 2) "bus 0"

                Expect.equal
                    (Map.ofSeq (bus0.FlipsPerBit |> Seq.map (fun kv -> kv.Key, kv.Value)))
                    (Map [ 0, 1; 1, 1 ])
                    "flips"

                Expect.equal bus0.ChangeRate 0.5 "rate"
                Expect.equal (bus1.Bus, bus1.MessagesChanged) (1, 0) "bus 1 apart, nothing changed"
            | other -> failtestf "%A" other
        }
        test "edges: the first frame initializes, then each change is one edge" {
            let frames = [
                for i, v in List.indexed [ 1uy; 1uy; 0uy; 0uy; 1uy ] -> frame (float i) 0x20u 0 [| v |]
            ]

            let edges = BitAnalysis.edges [ { Address = 0x20u; Bit = 0 } ] frames

            Expect.equal
                (edges |> List.map (fun e -> e.Time, e.Rising))
                [ 2.0, false; 4.0, true ]
                "falling at 2, rising at 4"
        }
        test "the Python comma-tools' reference run: 0x321 bit 41 pulses three times inside the window" {
            // Frames every 0.1 s from 0 to 25 s; byte 5 = 0x02 during [6, 8.1), [10, 12.2), [14, 15.8);
            // byte 0 is a 4-bit counter (its bits toggle outside the window too).
            let high t =
                (t >= 6.0 && t < 8.1) || (t >= 10.0 && t < 12.2) || (t >= 14.0 && t < 15.8)

            let frames = [
                for i in 0..250 ->
                    let t = Math.Round(float i * 0.1, 1)
                    frame t 0x321u 0 [| byte (i % 16); 0uy; 0uy; 0uy; 0uy; (if high t then 2uy else 0uy); 0uy; 0uy |]
            ]

            match BitAnalysis.activeOnlyInWindow 5.0 20.0 frames with
            | [ { Address = 0x321u; Bus = 0 }, [ 41, 6 ] ] -> ()
            | other -> failtestf "expected bit 41 with 6 toggles, got %A" other

            let toggles = (BitAnalysis.toggles frames).[{ Address = 0x321u; Bus = 0 }].[41]
            Expect.equal toggles [ 6.0; 8.1; 10.0; 12.2; 14.0; 15.8 ] "toggle times"
        }
    ]

let readers =
    testList "CAN text formats" [
        test "candump -L lines, classic, FD and remote" {
            let lines = [
                "(1436509052.249713) can0 123#DEADBEEF"
                "(1436509052.250000) can1 1F334455#1122334455667788"
                "(1436509052.260000) vcan2 7E0##1" + String('A', 128)
                "(1436509052.270000) can0 123#R"
                ""
            ]

            match CanText.readCandump "dump.log" lines with
            | Ok frames ->
                Expect.equal frames.Length 4 "frames"

                Expect.equal
                    (frames[0].Address, frames[0].Bus, frames[0].Payload)
                    (0x123u, 0, [| 0xDEuy; 0xADuy; 0xBEuy; 0xEFuy |])
                    "classic"

                Expect.equal (frames[1].Address, frames[1].Bus) (0x1F334455u, 1) "extended id"
                Expect.equal frames[2].Payload.Length 64 "CAN FD"
                Expect.equal frames[3].Payload.Length 0 "remote"
                Expect.equal frames[0].TimeNs 1436509052_249713000L "time, to the nanosecond"
            | Error es -> failtestf "%A" es

            match
                CanText.readCandump "bad.log" [
                    "(1.0) can0 123#DEADBEEF"
                    "garbage"
                    "(x) can0 1#00"
                    "(2.0) can0 ZZ#00"
                ]
            with
            | Error es ->
                Expect.equal es.Length 3 "every bad line"
                Expect.stringStarts es[0] "bad.log:2:" "file:line"
            | Ok _ -> failtest "expected errors"
        }
        test "rlog-to-csv CSV" {
            let lines = [
                "window,segment,timestamp,address,bus,data_hex"
                "1,pre,0.000000,0x123,0,0001"
                "1,window,2.000000,0x123,0,0081"
                "1,post,4.000000,291,1,01 02"
            ]

            match CanText.readCsv "x.csv" lines with
            | Ok frames ->
                Expect.equal
                    (frames |> List.map (fun f -> f.Part))
                    [ Some WindowPart.Pre; Some WindowPart.Window; Some WindowPart.Post ]
                    "segments"

                Expect.equal frames[2].Frame.Address 291u "decimal address"
                Expect.equal frames[2].Frame.Payload [| 1uy; 2uy |] "spaces removed"
            | Error es -> failtestf "%A" es

            match CanText.readCsv "y.csv" [ "segment,timestamp,address,bus,data_hex"; "middle,1.0,0x1,0,00" ] with
            | Error [ e ] -> Expect.stringContains e "y.csv:2:" "located"
            | other -> failtestf "%A" other
        }
    ]

let all = testList "bit analysis and CAN text" [ labels; analysis; readers ]
