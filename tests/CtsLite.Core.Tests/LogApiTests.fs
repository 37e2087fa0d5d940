module CtsLite.Core.Tests.LogApiTests

open System
open System.IO
open System.Text.Json
open Expecto
open CtsLite.Capnp
open CtsLite.Can
open CtsLite.Logs
open CtsLite.Tests

let private demo () =
    Path.Combine(TestEnv.sharedDir (), "data", "rlogs", "comma_demo_a2a0ccea32023010_2023-07-27--13-01-19--0.qlog.bz2")

let private summary () =
    JsonDocument
        .Parse(File.ReadAllText(Path.ChangeExtension(demo (), null).Replace(".qlog", ".qlog.summary.json")))
        .RootElement

let private ok r =
    match r with
    | Ok v -> v
    | Error e -> failtestf "%A" e

/// Walks every frame of `file` with the cursor and with `Event.canFrame`; fails on any difference.
/// (A top-level function: the byref-like cursor cannot live inside a test closure.)
let private cursorAgrees (file: string) : int =
    let layout = EventLayout.ofSchema (Schema.cereal ()) |> ok
    use reader = LogReader.Open(file, ReaderOptions.Default) |> ok
    let mutable frames = 0

    while reader.Next() do
        let m = reader.Message
        let batch = Event.canBatch m layout reader.Event
        let mutable cursor = CanCursor(m, layout, batch)
        let mutable i = 0

        while cursor.MoveNext() do
            let f = Event.canFrame m layout batch i

            if
                cursor.Address <> f.Address
                || cursor.Src <> f.Src
                || not (cursor.Payload.SequenceEqual(m.Span(f.PayloadPos, f.PayloadLength)))
            then
                failtestf "%s: frame %d of the event at byte %d differs" file i m.StreamOffset

            i <- i + 1

        if i <> batch.Count then
            failtestf "%s: the cursor saw %d of %d frames" file i batch.Count

        frames <- frames + i

    frames

/// One `can` event (cereal's layout) whose frames have payloads of these lengths, framed as one
/// message: the test-side encoder writes what no real log holds.
let private canFramesEvent (logMonoTime: uint64) (frames: (uint32 * byte * int) list) : byte array =
    let schema = Schema.cereal ()
    let layout = EventLayout.ofSchema schema |> ok

    let canData =
        schema.TryFindStruct "CanData"
        |> Option.defaultWith (fun () -> failtest "no CanData")

    let data = Array.zeroCreate<uint64> layout.Event.DataWords

    let put (words: uint64 array) (byteOffset: int) (bytes: int) (value: uint64) =
        let shift = 8 * (byteOffset % 8)

        let mask =
            (if bytes = 8 then
                 UInt64.MaxValue
             else
                 (1UL <<< (8 * bytes)) - 1UL)
            <<< shift

        words[byteOffset / 8] <- (words[byteOffset / 8] &&& ~~~mask) ||| ((value <<< shift) &&& mask)

    put data layout.LogMonoTimeByte 8 logMonoTime
    put data layout.DiscriminantByte 2 (uint64 layout.CanDiscriminant)

    let frames = [|
        for address, src, length in frames ->
            let d = Array.zeroCreate<uint64> canData.DataWords
            put d layout.AddressByte 4 (uint64 address)
            put d layout.SrcByte 1 (uint64 src)
            let pointers = Array.create canData.PointerCount None

            pointers[layout.DatPointer] <-
                Some(Encoder.Primitives(2, Array.init length (fun j -> uint64 (j % 256))), Encoder.Near)

            d, pointers
    |]

    let pointers = Array.create layout.Event.PointerCount None

    pointers[layout.CanPointer] <-
        Some(Encoder.Composite(canData.DataWords, canData.PointerCount, frames), Encoder.Near)

    Encoder.encode 1 (Encoder.Struct(data, pointers)) Encoder.Near

/// One `can` event of frames on src 0 with these payload lengths, at addresses 0x100, 0x101, …
let private canEvent (logMonoTime: uint64) (payloadLengths: int list) : byte array =
    canFramesEvent logMonoTime [
        for i, length in List.indexed payloadLengths -> uint32 (0x100 + i), 0uy, length
    ]

let all =
    testList "Log API" [
        test "distinct addresses per src count standard and extended ids alike" {
            let file = Path.Combine(TestEnv.tempDir "addresses", "ids.rlog")
            let standard = [ 0u; 0x7FFu; 0x146u ]
            let extended = [ 0x800u; 0x18DAF110u; 0x1FFFFFFFu ]

            File.WriteAllBytes(
                file,
                Array.concat [
                    canFramesEvent 1_000UL [ for a in standard @ extended -> a, 0uy, 8 ]
                    // Again on src 0 (nothing new), and once on src 128.
                    canFramesEvent 2_000UL [ for a in standard @ extended -> a, 0uy, 8 ]
                    canFramesEvent 3_000UL [ 0x146u, 128uy, 8; 0x18DAF110u, 128uy, 8 ]
                ]
            )

            let layout = EventLayout.ofSchema (Schema.cereal ()) |> ok

            match LogInfo.compute (Schema.cereal ()) layout ReaderOptions.Default [ file ] with
            | Ok info ->
                Expect.equal info.CanFrames 14L "every frame"
                Expect.equal info.CanFramesPerSrc[0] 12L "src 0"
                Expect.equal info.CanDistinctAddressesPerSrc[0] 6 "three standard and three extended on src 0"
                Expect.equal info.CanDistinctAddressesPerSrc[128] 2 "one of each on src 128"
            | Error e -> failtest (DecodeError.describe e)
        }
        test "a CAN payload over 64 bytes is damage, not a frame: no reader copies it" {
            let file = Path.Combine(TestEnv.tempDir "canpayload", "long.rlog")

            File.WriteAllBytes(
                file,
                Array.concat [
                    canEvent 1_000UL [ 8; 64 ]
                    canEvent 2_000UL [ 8; 65_536 ]
                    canEvent 3_000UL [ 8 ]
                ]
            )

            let events = Log.events ReaderOptions.Default None [] file |> ok

            let frames = [
                for e in events do
                    yield! e.CanFrames()
            ]

            // Every frame before the long one (its own event's first included); the file ends there.
            Expect.equal (frames |> List.map _.Payload.Length) [ 8; 64; 8 ] "the frames before the long one"
            Expect.equal events.Warnings.Count 1 "one warning"
            Expect.stringContains events.Warnings[0] "65536 bytes (CAN FD carries at most 64)" "says why"

            match
                Log.events
                    {
                        ReaderOptions.Default with
                            Strict = true
                    }
                    None
                    []
                    file
                |> ok
            with
            | strict ->
                for e in strict do
                    e.CanFrames() |> ignore

                match strict.Error with
                | Some {
                           Reason = DecodeReason.CanPayloadTooLong 65536
                       } -> ()
                | other -> failtestf "strict: %A" other
        }
        test "events filter by service and read fields by path" {
            let events = Log.events ReaderOptions.Default None [ "carState" ] (demo ()) |> ok
            let speeds = [ for e in events -> e.Field "carState.vEgo" |> ok ]
            Expect.equal speeds.Length 579 "one per carState event"
            let range = summary().GetProperty "carState_vEgo_range"

            let values =
                speeds
                |> List.map (function
                    | FieldValue.Float v -> v
                    | other -> failtestf "%A" other)

            Expect.floatClose Accuracy.low (System.Math.Round(List.min values, 2)) (range[0].GetDouble()) "min vEgo"
            Expect.floatClose Accuracy.low (System.Math.Round(List.max values, 2)) (range[1].GetDouble()) "max vEgo"
            Expect.isEmpty events.Warnings "no damage"
        }
        test "list indexes, enums, text and missing union members" {
            let events =
                Log.events ReaderOptions.Default None [ "pandaStates"; "carParams" ] (demo ())
                |> ok

            let first service =
                events |> Seq.find (fun e -> e.Service = service)

            // Every panda state: the path reader agrees with the (capnp-conformant) JSON of the event.
            let mutable allowed = 0

            for e in events do
                if e.Service = "pandaStates" then
                    let json = JsonDocument.Parse(e.ToJson() |> ok).RootElement

                    let expected =
                        (json.GetProperty "pandaStates").[0].GetProperty("controlsAllowed").GetBoolean()

                    Expect.equal
                        (e.Field "pandaStates[0].controlsAllowed" |> ok)
                        (FieldValue.Bool expected)
                        "controls allowed"

                    if expected then
                        allowed <- allowed + 1

            Expect.isGreaterThan allowed 0 "both values occur in the drive"

            let panda = first "pandaStates"

            match panda.Field "pandaStates[0].pandaType" |> ok with
            | FieldValue.Enum(name, _) -> Expect.isNonEmpty name "enum by name"
            | other -> failtestf "%A" other

            Expect.equal (panda.Field "pandaStates[9].controlsAllowed" |> ok) FieldValue.Missing "past the end"
            Expect.equal (panda.Field "carState.vEgo" |> ok) FieldValue.Missing "inactive union member"
            Expect.equal (panda.Field "noSuchField" |> ok) FieldValue.Missing "unknown name"
            Expect.isError (panda.Field "pandaStates[x]") "malformed path"

            let carParams = first "carParams"

            Expect.equal
                (carParams.Field "carParams.carFingerprint" |> ok)
                (FieldValue.Text "TOYOTA COROLLA TSS2 2019")
                "text"

            match carParams.Field "carParams.safetyConfigs" |> ok with
            | FieldValue.Json json -> Expect.stringStarts json "[{" "a list of structs as JSON"
            | other -> failtestf "%A" other
        }
        test "JSON of one event and CAN frames copied out" {
            let events = Log.events ReaderOptions.Default None [ "initData" ] (demo ()) |> ok
            let json = events |> Seq.head |> fun e -> e.ToJson() |> ok
            let root = JsonDocument.Parse(json).RootElement
            Expect.equal (root.GetProperty("initData").GetProperty("version").GetString()) "0.9.4-release" "version"

            let frames = Log.canFrames ReaderOptions.Default (demo ()) |> ok
            Expect.equal (frames |> List.filter (fun f -> f.Service = CanService.Can) |> List.length) 211 "can frames"

            Expect.equal
                (frames |> List.filter (fun f -> f.Service = CanService.Sendcan) |> List.length)
                80
                "sendcan frames"

            Expect.all frames (fun f -> f.Payload.Length <= 8) "classic CAN payloads"
        }
        test "the CAN cursor reads every frame exactly as the general path does" {
            for file in [ demo (); TestEnv.comma2k19 "zst" ] do
                Expect.isGreaterThan (cursorAgrees file) 200 "frames compared"
        }
        test "unknown services and inputs are errors" {
            Expect.isError (Log.events ReaderOptions.Default None [ "carStat" ] (demo ())) "unknown service"
            Expect.isError (Log.events ReaderOptions.Default None [] "/nowhere/rlog.zst") "missing file"
        }
        test "unknown union members are named unknown(n)" {
            let layout = EventLayout.ofSchema (Schema.cereal ()) |> ok
            Expect.equal (Event.whichName layout 65000) "unknown(65000)" "unknown member"
            Expect.equal (Event.whichName layout (Event.discriminantOf layout "can" |> Option.get)) "can" "known member"
        }
    ]
