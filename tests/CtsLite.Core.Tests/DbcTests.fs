module CtsLite.Core.Tests.DbcTests

open System
open System.IO
open System.Text.Json
open Expecto
open FsCheck
open FsCheck.FSharp
open CtsLite.Can
open CtsLite.Capnp
open CtsLite.Logs
open CtsLite.Tests

let private opendbc () =
    Path.Combine(TestEnv.sharedDir (), "reference", "opendbc")

let private parse path =
    match Dbc.loadFile path with
    | Ok db -> db
    | Error es -> failtestf "%s" (String.Join("\n", es |> List.map DbcError.describe))

let private parseText text = Dbc.parseText "fixture.dbc" text

let private signal (db: Database) (message: string) (name: string) =
    let m =
        db.TryMessageNamed message
        |> Option.defaultWith (fun () -> failtestf "no message %s" message)

    m, m.Signals |> List.find (fun s -> s.Name = name)

let opendbcFiles =
    testList "opendbc" [
        test "every DBC file parses with zero errors and every BO_/SG_ line becomes a message/signal" {
            let files = Directory.GetFiles(opendbc (), "*.dbc", SearchOption.AllDirectories)
            Expect.isGreaterThanOrEqual files.Length 17 "all the reference files"

            for file in files do
                let db = parse file

                // Files without imports: compare with a plain count of their own lines.
                if not (File.ReadAllText(file).Contains "IMPORT ") then
                    let lines = File.ReadAllLines file

                    Expect.equal
                        db.Messages.Length
                        (lines |> Array.filter (fun l -> l.StartsWith "BO_ ") |> Array.length)
                        $"{file}: messages"

                    Expect.equal
                        (db.Messages |> List.sumBy (fun m -> m.Signals.Length))
                        (lines |> Array.filter (fun l -> l.StartsWith " SG_ ") |> Array.length)
                        $"{file}: signals"
        }
        test "a template with IMPORTs equals its generated file" {
            for template, generated in
                [
                    "generator/subaru/subaru_global_2017.dbc", "generated/subaru_global_2017_generated.dbc"
                    "generator/subaru/subaru_outback_2015.dbc", "generated/subaru_outback_2015_generated.dbc"
                    "generator/toyota/toyota_nodsu_pt.dbc", "generated/toyota_nodsu_pt_generated.dbc"
                ] do
                let a = parse (Path.Combine(opendbc (), template))
                let b = parse (Path.Combine(opendbc (), generated))

                let key (db: Database) =
                    db.Messages
                    |> List.map (fun m -> m.Id, m.Name, m.Signals |> List.map (fun s -> s.Name, s.StartBit, s.Length))
                    |> List.sort

                Expect.equal (key a) (key b) template
        }
        test "a DBC with IMPORTs is written as one file that reads the same, without its imports at hand" {
            let templates =
                Directory.GetFiles(Path.Combine(opendbc (), "generator"), "*.dbc", SearchOption.AllDirectories)
                |> Array.filter (fun f -> File.ReadAllText(f).Contains "IMPORT ")

            Expect.isGreaterThanOrEqual templates.Length 4 "the generator's templates"

            for file in templates do
                match Dbc.inlineImports file with
                | Error e -> failtest $"{file}: {e}"
                | Ok text ->
                    Expect.isFalse (text.Contains "IMPORT ") $"{file}: no import left"
                    // Read with no file system at all: only the text itself.
                    let flat =
                        match Dbc.parseText (Path.GetFileName file) text with
                        | Ok db -> db
                        | Error e -> failtest $"{file}: {e}"

                    let key (db: Database) =
                        db.Messages
                        |> List.map (fun m ->
                            m.Id, m.Name, m.Signals |> List.map (fun s -> s.Name, s.StartBit, s.Factor))

                    Expect.equal (key flat) (key (parse file)) $"{file}: the same messages and signals"

            // A file without imports is its own text.
            let plain =
                Path.Combine(opendbc (), "generated", "subaru_global_2017_generated.dbc")

            Expect.equal
                (Dbc.inlineImports plain |> Result.toOption)
                (Dbc.readFile plain |> Result.toOption)
                "unchanged"

            // A missing import is an error of the file that names it.
            let dir = TestEnv.tempDir "dbc-missing-import"
            let broken = Path.Combine(dir, "main.dbc")
            File.WriteAllText(broken, "CM_ \"IMPORT _gone.dbc\";\nVERSION \"\"\n")

            match Dbc.inlineImports broken with
            | Ok _ -> failtest "accepted"
            | Error errors -> Expect.exists errors (fun e -> e.File.EndsWith "_gone.dbc") "names the missing file"
        }
        test "known signals decode to known values" {
            let subaru =
                parse (Path.Combine(opendbc (), "generated", "subaru_global_2017_generated.dbc"))

            let buttons, set = signal subaru "Cruise_Buttons" "Set"
            Expect.equal buttons.Id 0x146u "Cruise_Buttons is 0x146"
            let payload = Array.zeroCreate<byte> 8
            Signal.encode set 1.0 (Span payload)
            Expect.equal (Signal.decode set (ReadOnlySpan payload)).Physical 1.0 "set"
            Expect.equal (Array.sumBy (fun (b: byte) -> Numerics.BitOperations.PopCount(uint32 b)) payload) 1 "one bit"

            let toyota =
                parse (Path.Combine(opendbc (), "generated", "toyota_nodsu_pt_generated.dbc"))

            let wheels, fr = signal toyota "WHEEL_SPEEDS" "WHEEL_SPEED_FR"
            Expect.equal wheels.Id 0xAAu "WHEEL_SPEEDS is 0xAA"
            Expect.equal fr.ByteOrder ByteOrder.BigEndian "Motorola"
            // 0x1A6F raw -> 6767 * 0.01 - 67.67 = 0 km/h: the offset cancels out.
            let zero = [| 0x1Auy; 0x6Fuy; 0uy; 0uy; 0uy; 0uy; 0uy; 0uy |]
            Expect.floatClose Accuracy.high (Signal.decode fr (ReadOnlySpan zero)).Physical 0.0 "0 km/h"

            let _, setSpeed = signal subaru "Cruise_Status" "Cruise_Set_Speed"
            Expect.equal setSpeed.ByteOrder ByteOrder.BigEndian "the 0x241 set speed is big-endian in the DBC"
        }
    ]

let fixture =
    """VERSION "1.0"

NS_ :
    NS_DESC_
    CM_
    BA_DEF_

BS_:

BU_: ECU GW

VAL_TABLE_ Gears 0 "P" 1 "R" 2 "N" 3 "D" ;

BO_ 100 Mux: 8 ECU
 SG_ Selector M : 0|8@1+ (1,0) [0|255] "" GW
 SG_ A m0 : 8|16@1+ (1,0) [0|65535] "" GW
 SG_ B m1 : 8|16@1- (0.5,-10) [-100|100] "deg" GW
 SG_ Sub m2M : 8|8@1+ (1,0) [0|255] "" GW
 SG_ Deep m3 : 16|8@1+ (1,0) [0|255] "" GW

BO_ 2147484160 Extended: 8 GW
 SG_ Temp : 0|32@1- (1,0) [0|0] "C" ECU
 SG_ Big : 32|32@1+ (1,0) [0|0] "" ECU

BO_ 300 Floats: 12 ECU
 SG_ F32 : 0|32@1- (1,0) [0|0] "" GW
 SG_ F64 : 32|64@1- (1,0) [0|0] "" GW

CM_ "Database
comment over two lines";
CM_ BO_ 100 "A multiplexed message";
CM_ SG_ 100 B "signed,
scaled";
BA_DEF_ BO_ "GenMsgCycleTime" INT 0 65535;
BA_DEF_ "BusType" STRING ;
BA_DEF_DEF_ "GenMsgCycleTime" 100;
BA_ "GenMsgCycleTime" BO_ 100 20;
BA_ "BusType" "CAN";
VAL_ 100 Selector 0 "use A" 1 "use B" ;
SIG_VALTYPE_ 300 F32 : 1;
SIG_VALTYPE_ 300 F64 : 2;
SG_MUL_VAL_ 100 Deep Sub 3-5, 9-9;
"""

let fixtures =
    testList "fixture DBCs" [
        test "multiplexing, attributes, value tables, comments, extended ids and float signals" {
            let db =
                match parseText fixture with
                | Ok db -> db
                | Error es -> failtestf "%A" (es |> List.map DbcError.describe)

            Expect.equal db.Version "1.0" "version"
            Expect.equal db.Nodes [ "ECU"; "GW" ] "nodes"
            Expect.equal db.Comment (Some "Database\ncomment over two lines") "multi-line comment"
            Expect.equal (db.ValueTables["Gears"][3L]) "D" "value table"

            let mux, selector = signal db "Mux" "Selector"
            Expect.equal mux.Comment (Some "A multiplexed message") "message comment"
            Expect.equal selector.Multiplexing Multiplexing.Multiplexor "M"
            Expect.equal (Signal.label selector 1L) (Some "use B") "VAL_"
            let _, a = signal db "Mux" "A"
            let _, b = signal db "Mux" "B"
            let _, sub = signal db "Mux" "Sub"
            let _, deep = signal db "Mux" "Deep"
            Expect.equal b.Comment (Some "signed,\nscaled") "signal comment"
            Expect.equal sub.Multiplexing (Multiplexing.MultiplexedMultiplexor 2UL) "mNM"
            Expect.equal deep.MultiplexorRanges (Some("Sub", [ 3UL, 5UL; 9UL, 9UL ])) "SG_MUL_VAL_"

            let payload = Array.zeroCreate<byte> 8
            Signal.encode selector 1.0 (Span payload)
            Signal.encode b -20.5 (Span payload)
            Expect.isFalse (Signal.isPresent mux a (ReadOnlySpan payload)) "A needs selector 0"
            Expect.isTrue (Signal.isPresent mux b (ReadOnlySpan payload)) "B with selector 1"
            Expect.equal (Signal.decode b (ReadOnlySpan payload)).Physical -20.5 "signed and scaled"
            Expect.equal (Signal.decode b (ReadOnlySpan payload)).Raw -21L "raw"

            payload[1] <- 4uy // Sub = 4 lies in 3-5
            Expect.isTrue (Signal.isPresent mux deep (ReadOnlySpan payload)) "extended multiplexing range"
            payload[1] <- 6uy
            Expect.isFalse (Signal.isPresent mux deep (ReadOnlySpan payload)) "outside the ranges"

            let extended = db.TryMessageNamed "Extended" |> Option.get
            Expect.isTrue extended.Extended "extended flag"
            Expect.equal extended.Id 512u "id without the flag"

            let floats = db.TryMessageNamed "Floats" |> Option.get
            let f32 = floats.Signals.Head
            let f64 = floats.Signals[1]
            Expect.equal f32.ValueType SignalValueType.Float32 "float"
            Expect.equal f64.ValueType SignalValueType.Float64 "double"
            let bytes = Array.zeroCreate<byte> 12
            Signal.encode f32 3.25 (Span bytes)
            Signal.encode f64 -1234.5678 (Span bytes)
            Expect.equal (Signal.decode f32 (ReadOnlySpan bytes)).Physical 3.25 "float32 value"
            Expect.equal (Signal.decode f64 (ReadOnlySpan bytes)).Physical -1234.5678 "float64 value"

            Expect.equal db.AttributeDefaults["GenMsgCycleTime"] (AttributeValue.Number 100.0) "BA_DEF_DEF_"

            Expect.contains
                db.Attributes
                (AttributeTarget.Message 100u, "GenMsgCycleTime", AttributeValue.Number 20.0)
                "BA_ on a message"

            Expect.contains
                db.Attributes
                (AttributeTarget.Database, "BusType", AttributeValue.Text "CAN")
                "BA_ on the database"
        }
        test "every problem is reported with file:line:column and no half-read message survives" {
            let bad =
                "BO_ 1 Good: 8 ECU\n SG_ X : 0|8@1+ (1,0) [0|255] \"\" GW\n\nBO_ 2 Broken: 8 ECU\n SG_ Y : 0|8@2+ (1,0) [0|255] \"\" GW\n SG_ Z : 60|8@1+ (1,0) [0|255] \"\" GW\n\nBO_ x Worse: 8 ECU\nBA_ \"Undefined\" BO_ 1 3;\nBOGUS line here;\n"

            match parseText bad with
            | Ok _ -> failtest "expected errors"
            | Error errors ->
                let lines = errors |> List.map DbcError.describe
                Expect.isGreaterThanOrEqual errors.Length 4 "accumulated, not just the first"
                Expect.exists lines (fun l -> l.StartsWith "fixture.dbc:5:") "bad byte order on line 5"
                Expect.exists lines (fun l -> l.StartsWith "fixture.dbc:8:5:") "bad id on line 8, column 5"

                Expect.exists
                    lines
                    (fun l -> l.StartsWith "fixture.dbc:9:" && l.Contains "Undefined")
                    "undefined attribute"

                Expect.exists lines (fun l -> l.StartsWith "fixture.dbc:10:1:") "unknown statement"
                Expect.all errors (fun e -> e.Line > 0 && e.Column > 0) "located"
        }
        test "counters follow with wrap-around" {
            Expect.isTrue (Checksum.counterFollows 4 3UL 4UL) "3 -> 4"
            Expect.isTrue (Checksum.counterFollows 4 15UL 0UL) "15 -> 0 wraps"
            Expect.isFalse (Checksum.counterFollows 4 3UL 5UL) "a skipped value"
            Expect.isFalse (Checksum.counterFollows 4 3UL 3UL) "a repeated value"
        }
        test "a signal that does not fit its message is an error" {
            match parseText "BO_ 5 Small: 2 ECU\n SG_ Wide : 8|16@1+ (1,0) [0|0] \"\" GW\n" with
            | Error [ {
                          Problem = DbcProblem.SignalDoesNotFit _
                      } as e ] -> Expect.stringContains (DbcError.describe e) "does not fit" "says why"
            | other -> failtestf "%A" other
        }
    ]

type Layout = {
    Start: int
    Length: int
    Order: ByteOrder
    Signed: bool
    Factor: float
    Offset: float
}

let private genLayout = gen {
    let! order = Gen.elements [ ByteOrder.LittleEndian; ByteOrder.BigEndian ]
    let! length = Gen.choose (1, 64)
    let! signed = Gen.elements [ true; false ]
    let! factor = Gen.elements [ 1.0; 0.5; 0.01; 0.057; 2.0; 1e-3 ]
    let! offset = Gen.elements [ 0.0; -67.67; 40.0; -1000.0 ]
    let! start = Gen.choose (0, 64 * 8 - 1)

    return {
        Start = start
        Length = length
        Order = order
        Signed = signed
        Factor = factor
        Offset = offset
    }
}

let private toSignal (l: Layout) : Signal = {
    Name = "S"
    StartBit = l.Start
    Length = l.Length
    ByteOrder = l.Order
    Signed = l.Signed
    Factor = l.Factor
    Offset = l.Offset
    Minimum = 0.0
    Maximum = 0.0
    Unit = ""
    Receivers = []
    Multiplexing = Multiplexing.None
    MultiplexorRanges = None
    ValueType = SignalValueType.Integer
    Values = Collections.Generic.Dictionary<int64, string>()
    Comment = None
}

/// Encode then decode returns the raw value, and no bit outside the signal matters.
let private rawRoundTrip (layout: Layout, rawSeed: int64, noise: byte array) : Property =
    let s = toSignal layout

    Signal.fits s 64
    ==> lazy
        (let raw =
            if s.Length = 64 then rawSeed
            elif s.Signed then rawSeed % (1L <<< (s.Length - 1))
            else int64 (uint64 rawSeed &&& ((1UL <<< s.Length) - 1UL))

         let payload = Array.copy noise
         Signal.encodeRaw s raw (Span payload)
         let decoded = Signal.decode s (ReadOnlySpan payload)
         // The signal's own bits: encode all ones into zeros.
         let mask = Array.zeroCreate<byte> 64
         Signal.encodeRaw s -1L (Span mask)
         let flipped = Array.init 64 (fun i -> payload[i] ^^^ ~~~mask[i])
         let again = Signal.decode s (ReadOnlySpan flipped)

         let untouched =
             Array.init 64 (fun i -> (payload[i] ^^^ noise[i]) &&& ~~~mask[i])
             |> Array.forall ((=) 0uy)

         decoded.Raw = raw && again.Raw = raw && untouched)

/// Physical values inside the representable range come back within half a step.
let private physicalRoundTrip (layout: Layout, n: int) : Property =
    let s = {
        toSignal layout with
            Length = max layout.Length 24
    }

    Signal.fits s 64
    ==> lazy
        (let physical = float n * 0.05 * s.Factor + s.Offset
         let payload = Array.zeroCreate<byte> 64
         Signal.encode s physical (Span payload)
         let back = (Signal.decode s (ReadOnlySpan payload)).Physical
         let bits = if s.Signed then s.Length - 1 else s.Length
         let lo = if s.Signed then -(2.0 ** float bits) else 0.0
         let hi = 2.0 ** float bits - 1.0
         let rawWanted = (physical - s.Offset) / s.Factor

         rawWanted < lo
         || rawWanted > hi
         || abs (back - physical) <= s.Factor / 2.0 + 1e-9 * max 1.0 (abs physical))

let properties =
    let bytes = ArbMap.defaults |> ArbMap.generate<byte>

    testList "signal properties" [
        testPropertyWithConfig
            {
                FsCheckConfig.defaultConfig with
                    maxTest = 2000
            }
            "encode then decode returns the raw value, touching only the signal's bits"
            (Prop.forAll
                (Arb.fromGen (
                    Gen.zip3 genLayout (ArbMap.defaults |> ArbMap.generate<int64>) (Gen.arrayOfLength 64 bytes)
                ))
                rawRoundTrip)

        testPropertyWithConfig
            {
                FsCheckConfig.defaultConfig with
                    maxTest = 1000
            }
            "physical values round-trip within factor/2"
            (Prop.forAll (Arb.fromGen (Gen.zip genLayout (Gen.choose (-1000000, 1000000)))) physicalRoundTrip)
    ]

let private frames (file: string) =
    match Log.canFrames ReaderOptions.Default file with
    | Ok fs -> fs
    | Error e -> failtest e

let realData =
    testList "real frames" [
        test "comma2k19 WHEEL_SPEEDS agree with carState.wheelSpeeds within the DBC resolution" {
            let log = TestEnv.comma2k19 "zst"

            let db =
                parse (Path.Combine(opendbc (), "generated", "toyota_nodsu_pt_generated.dbc"))

            let wheels = db.TryMessage 0xAAu |> Option.get

            let speed name =
                wheels.Signals |> List.find (fun s -> s.Name = name)

            let names = [ "WHEEL_SPEED_FL"; "WHEEL_SPEED_FR"; "WHEEL_SPEED_RL"; "WHEEL_SPEED_RR" ]
            let fields = [ "fl"; "fr"; "rl"; "rr" ]

            let events =
                Log.events ReaderOptions.Default None [ "can"; "carState" ] log
                |> Result.defaultWith failwith

            let decoded = Collections.Generic.List<float list>()
            let states = Collections.Generic.List<int * float list>()

            for e in events do
                match e.Service with
                | "can" ->
                    for f in e.CanFrames() do
                        if f.Address = 0xAAu && f.Bus = 0 then
                            decoded.Add [
                                for n in names -> (Signal.decode (speed n) (ReadOnlySpan f.Payload)).Physical / 3.6
                            ]
                | _ when decoded.Count > 0 ->
                    let state = [
                        for f in fields ->
                            match e.Field $"carState.wheelSpeeds.{f}" with
                            | Ok(FieldValue.Float v) -> v
                            | other -> failtestf "%A" other
                    ]

                    states.Add(decoded.Count - 1, state)
                | _ -> ()

            // DBC resolution 0.01 km/h; carState holds float32 m/s.
            let same (a: float list) (b: float list) =
                List.forall2 (fun x y -> abs (x - y) <= 0.01 / 3.6 + 1e-5) a b
            // carState holds the newest sample of comma2k19's processed 83 Hz series, whose clock runs
            // a little ahead of the raw frame times: each state is the frame logged just before it
            // or, near a bucket boundary, the one just after.
            let latest = states |> Seq.filter (fun (i, st) -> same decoded[i] st) |> Seq.length

            let next =
                states
                |> Seq.filter (fun (i, st) ->
                    not (same decoded[i] st) && i + 1 < decoded.Count && same decoded[i + 1] st)
                |> Seq.length

            Expect.equal states.Count 6000 "one carState per 10 ms"
            Expect.equal (latest + next) states.Count "every carState equals a decoded WHEEL_SPEEDS frame"
            Expect.isGreaterThan latest (states.Count * 8 / 10) "mostly the frame just before"
        }
        test "Subaru checksums find exactly the planted bad frames" {
            let log =
                Path.Combine(TestEnv.sharedDir (), "data", "rlogs", "synthetic", "default.rlog.zst")

            let truth =
                JsonDocument
                    .Parse(
                        File.ReadAllText(
                            Path.Combine(TestEnv.sharedDir (), "data", "rlogs", "synthetic", "default.truth.json")
                        )
                    )
                    .RootElement

            let db =
                parse (Path.Combine(opendbc (), "generated", "subaru_global_2017_generated.dbc"))

            let withChecksum =
                db.Messages
                |> List.filter (fun m ->
                    m.Signals
                    |> List.exists (fun s -> s.Name = "CHECKSUM" && s.StartBit = 0 && s.Length = 8))
                |> List.map (fun m -> m.Id)
                |> Set.ofList

            let bad =
                [
                    for f in frames log do
                        if
                            f.Service = CanService.Can
                            && f.Bus < 128
                            && withChecksum.Contains f.Address
                            && not (Checksum.subaruValid f.Address (ReadOnlySpan f.Payload))
                        then
                            f.Address, f.Bus, uint64 f.TimeNs
                ]
                |> List.sort

            let planted =
                [
                    for p in truth.GetProperty("planted").GetProperty("bad_checksum_frames").EnumerateArray() ->
                        Convert.ToUInt32(p.GetProperty("address").GetString(), 16),
                        p.GetProperty("bus").GetInt32(),
                        UInt64.Parse(p.GetProperty("t_ns").GetString())
                ]
                |> List.sort

            Expect.equal
                (bad |> List.map (fun (a, s, _) -> a, s))
                (planted |> List.map (fun (a, s, _) -> a, s))
                "the planted frames, on their bus"
        }
        test "Toyota checksums hold on the real comma2k19 frames that carry one" {
            let log = TestEnv.comma2k19 "zst"
            // STEER_ANGLE_SENSOR (0x25) has no checksum; STEERING_IPAS / BRAKE_MODULE style messages do.
            let db =
                parse (Path.Combine(opendbc (), "generated", "toyota_nodsu_pt_generated.dbc"))

            let sizes =
                db.Messages
                |> List.filter (fun m -> m.Signals |> List.exists (fun s -> s.Name = "CHECKSUM"))
                |> List.map (fun m -> m.Id, m.Size)
                |> Map.ofList
            // comma2k19 padded every payload to 8 bytes and lost the DLC: a frame is checked at its DBC
            // length, or (shorter frames, e.g. this RAV4's 5-byte EPS_STATUS) at the length before
            // its zero padding.
            let validAtSomeLength (f: CanFrame) =
                let padded =
                    f.Payload
                    |> Array.tryFindIndexBack (fun b -> b <> 0uy)
                    |> Option.map ((+) 1)
                    |> Option.defaultValue 0

                [ sizes[f.Address]; padded ]
                |> List.exists (fun n ->
                    n > 0
                    && n <= f.Payload.Length
                    && Checksum.toyotaValid f.Address (ReadOnlySpan(f.Payload, 0, n)))

            let total, valid =
                frames log
                |> List.filter (fun f -> f.Bus = 0 && sizes.ContainsKey f.Address)
                |> List.fold (fun (c, v) f -> c + 1, (if validAtSomeLength f then v + 1 else v)) (0, 0)

            Expect.isGreaterThan total 1000 "frames with a checksum"
            Expect.equal valid total "every real frame's checksum is right"
        }
    ]

let problems =
    testList "DBC problems" [
        test "each problem is a case of the closed union, located, and described as before" {
            let text =
                "VERSION \"\"\nBO_ x Broken: 8 XXX\nBO_ 300 Big: 99 XXX\nFOO_ 1;\nCM_ \"open"

            match parseText text with
            | Ok _ -> failtest "accepted"
            | Error errors ->
                let problems = errors |> List.map (fun e -> e.Line, e.Problem)
                Expect.contains problems (2, DbcProblem.Expected("the message id", Some "x")) "a bad message id"
                Expect.contains problems (3, DbcProblem.MessageSize("Big", 99UL)) "a size over 64 bytes"
                Expect.contains problems (4, DbcProblem.UnexpectedKeyword "FOO_") "an unknown keyword"
                Expect.contains problems (5, DbcProblem.UnterminatedString) "an open string"

                Expect.contains
                    (errors |> List.map DbcError.describe)
                    "fixture.dbc:3:9: message Big: size 99 exceeds 64 bytes"
                    "the text names file, line, column and what"
        }
        test "one bad token is one problem, not one per field the statement still expected" {
            let text =
                "VERSION \"\"\nBO_ 12 X: 8 XXX\n SG_ Y : seven|8@1+ (1,0) [0|0] \"\" XXX\n SG_ Z : 8|8@1+ (1,0) [0|0] \"\" XXX\nBO_ x Broken: 8 XXX\n"

            match parseText text with
            | Ok _ -> failtest "accepted"
            | Error errors ->
                let located = errors |> List.map (fun e -> e.Line, e.Column, e.Problem)

                Expect.equal
                    (located |> List.filter (fun (line, _, _) -> line = 3))
                    [ 3, 10, DbcProblem.Expected("the start bit", Some "seven") ]
                    "one problem for the bad token"

                Expect.isFalse (located |> List.exists (fun (line, _, _) -> line = 4)) "the next signal is fine"

                Expect.equal
                    (located |> List.find (fun (line, _, _) -> line = 5))
                    (5, 5, DbcProblem.Expected("the message id", Some "x"))
                    "and the statement after it is still read"
        }
    ]

let plans =
    testList "signal names and decode plans" [
        test "MESSAGE.SIGNAL by name or address; what is missing is named" {
            let db =
                parse (Path.Combine(opendbc (), "generated", "subaru_global_2017_generated.dbc"))

            match SignalRef.resolve db "Cruise_Buttons.Set", SignalRef.resolve db "0x146.Set" with
            | Ok(m1, s1), Ok(m2, s2) ->
                Expect.equal (m1.Id, s1.Name) (0x146u, "Set") "by name"
                Expect.equal (m2.Id, s2.Name) (m1.Id, s1.Name) "by address"
            | other -> failtestf "%A" other

            Expect.equal (SignalRef.resolve db "No_Such.X") (Error "the DBC has no message 'No_Such'") "message"

            Expect.equal (SignalRef.resolve db "Cruise_Buttons.XX") (Error "Cruise_Buttons has no signal 'XX'") "signal"

            Expect.isError (SignalRef.resolve db "Set") "no dot"
        }
        test "a plan lists the named signals by address, or every signal when none is named" {
            let db =
                parse (Path.Combine(opendbc (), "generated", "subaru_global_2017_generated.dbc"))

            match DecodePlan.create db [ "Cruise_Buttons.Set"; "Cruise_Buttons.Resume"; "Wheel_Speeds.FL" ] with
            | Ok plan ->
                match plan.TryFind 0x146u with
                | Some(m, signals) ->
                    Expect.equal m.Name "Cruise_Buttons" "message"
                    Expect.equal (signals |> List.map _.Name) [ "Set"; "Resume" ] "in the order named"
                | None -> failtest "0x146 missing"

                Expect.isSome (plan.TryFind (db.TryMessageNamed "Wheel_Speeds").Value.Id) "second message"
                Expect.isNone (plan.TryFind 0x7FFu) "nothing else"
            | Error e -> failtest e

            match DecodePlan.create db [] with
            | Ok plan ->
                for m in db.Messages do
                    Expect.equal (plan.TryFind m.Id |> Option.map (snd >> List.length)) (Some m.Signals.Length) m.Name
            | Error e -> failtest e

            Expect.equal
                (DecodePlan.create db [ "Cruise_Buttons.Set"; "Nope.X" ] |> Result.map ignore)
                (Error "Nope.X: the DBC has no message 'Nope'")
                "the first bad name"
        }
    ]

let all =
    testList "CAN and DBC" [ opendbcFiles; fixtures; properties; realData; problems; plans ]
