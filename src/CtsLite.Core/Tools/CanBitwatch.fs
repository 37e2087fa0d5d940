namespace CtsLite.Tools

open System
open System.Collections.Generic
open System.IO
open System.Text.RegularExpressions
open CtsLite.Can
open CtsLite.Logs
open FsToolkit.ErrorHandling

/// A pulse of a bit inside the window (rise to fall, or rise to the window end).
type internal Pulse = { Rise: float; Fall: float }

/// `can-bitwatch`: frame counts per segment, watched-bit edges, window-only bits and the
/// "three 2-second pulses" hunt, from the rlog-to-csv CSV or straight from a log.
[<RequireQualifiedAccess>]
module internal CanBitwatch =

    let private spec = ParameterSpec.create

    let descriptor: ToolDescriptor = {
        Id = "can-bitwatch"
        Name = "CAN bit watch"
        Description =
            "Compares CAN activity before, inside and after a time window: frame counts, payload variety, edges of watched bits, bits that toggle only inside the window, and pulses of 2 s (the 'press three times' hunt)."
        Category = ToolCategory.Analyzer
        Parameters = [
            spec
                "output_prefix"
                ParameterType.Str
                (Some(ParameterValue.Str "analysis"))
                "File name prefix of the outputs"
            spec "watch" ParameterType.List None "Bits to follow, as 0xADDR:B<byte>b<msb> (MSB-first inside the byte)"
            spec "watch_file" ParameterType.File None "A file of bit specs, one per line, # comments"
            {
                spec
                    "window_start"
                    ParameterType.Float
                    None
                    "Window start in seconds (needed with a log input; for the CSV it overrides the time origin)" with
                    Min = Some 0.0
            }
            {
                spec "window_dur" ParameterType.Float None "Window length in seconds (needed with a log input)" with
                    Min = Some 0.0
            }
            {
                spec
                    "bus"
                    ParameterType.Int
                    None
                    "Only this bus (default per address: most frames, receive buses first)" with
                    Min = Some 0.0
                    Max = Some 255.0
            }
        ]
        InputTypes = [ "csv"; "rlog"; "qlog"; "route" ]
        OutputTypes = [ "csv"; "json" ]
    }

    let private prefixPattern = Regex(@"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

    /// Parses `0xADDR:B<byte>b<msb>` into the address and its global LSB bit.
    let parseWatch (spec: string) : Result<CanBit, string> =
        match spec.Trim().Split(':') with
        | [| a; b |] ->
            match RlogToCsv.parseAddress a, Bits.parseBitwatch b with
            | Some address, Some bit -> Ok { Address = address; Bit = bit }
            | _ -> Error $"'{spec}' is not 0xADDR:B<byte>b<msb>"
        | _ -> Error $"'{spec}' is not 0xADDR:B<byte>b<msb>"

    let private check (p: ToolParameters) : ParameterError list = [
        match p.Str "output_prefix" with
        | Some prefix when not (prefixPattern.IsMatch prefix) -> {
            Parameter = "output_prefix"
            Detail = "must be a plain file name prefix (letters, digits, . _ -), not a path"
          }
        | _ -> ()

        for w in p.List "watch" do
            match parseWatch w with
            | Error e -> { Parameter = "watch"; Detail = e }
            | Ok _ -> ()

        match p.Float "window_start", p.Float "window_dur" with
        | None, Some _ -> {
            Parameter = "window_start"
            Detail = "is needed with window_dur"
          }
        | _ -> ()
    ]

    /// Pulses of one bit inside [windowStart, windowEnd] from its transitions (time, new value) in
    /// time order and its value before the window. A pulse still high at the window end ends there.
    let pulses (windowStart: float) (windowEnd: float) (initial: bool) (transitions: (float * bool) list) : Pulse list = [
        let mutable high = if initial then Some windowStart else None

        for t, v in transitions do
            if t > windowStart && t <= windowEnd then
                match v, high with
                | true, None -> high <- Some t
                | false, Some rise ->
                    { Rise = rise; Fall = t }
                    high <- None
                | _ -> ()

        match high with
        | Some rise -> { Rise = rise; Fall = windowEnd }
        | None -> ()
    ]

    /// Exactly three pulses, each 2.0 ± 0.5 s.
    let validThree (ps: Pulse list) : bool =
        ps.Length = 3
        && ps |> List.forall (fun p -> abs (p.Fall - p.Rise - 2.0) <= 0.5 + 1e-9)

    let private segments = [ WindowPart.Pre; WindowPart.Window; WindowPart.Post ]

    let private readFrames (ctx: ToolContext) : Result<CsvFrame list * float option, ToolError> =
        let p = ctx.Parameters

        let window =
            match p.Float "window_start", p.Float "window_dur" with
            | Some s, Some d -> Some(s, d)
            | _ -> None

        // A single file may be the rlog-to-csv CSV; anything else is read as a log.
        let single =
            match ctx.Input with
            | ToolInput.Path file
            | ToolInput.Files [ file ] when File.Exists file -> Some file
            | _ -> None

        match
            single
            |> Option.bind (fun path -> CanText.sniff path |> Option.map (fun kind -> kind, path))
        with
        | Some(CanTextKind.Csv, path) ->
            let lines =
                try
                    Ok(File.ReadLines path |> List.ofSeq)
                with :? IOException as e ->
                    Error(ToolError.InputUnavailable $"{path}: {e.Message}")

            lines
            |> Result.bind (fun lines ->
                match CanText.readCsv (Path.GetFileName path) lines with
                | Error es -> Error(ToolError.InputInvalid(String.Join("; ", es |> List.truncate 5)))
                | Ok frames -> Ok(frames, p.Float "window_start"))
        | Some(CanTextKind.Candump, path) ->
            Error(ToolError.InputInvalid $"{path}: a candump file; can-bitwatch reads the rlog-to-csv CSV or a log")
        | None ->
            match window with
            | None ->
                Error(
                    ToolError.parameter
                        "window_start"
                        "a log input needs window_start and window_dur (seconds after the first CAN event)"
                )
            | Some(start, dur) ->
                match LogInput.files ctx with
                | Error e -> Error e
                | Ok files ->
                    let layout = LogInput.layout ()
                    let frames = ResizeArray<CsvFrame>()
                    let mutable t0 = None

                    LogInput.iter ctx files 0.0 70.0 (fun reader ->
                        let m = reader.Message
                        let e = reader.Event

                        if Event.which m layout e = layout.CanDiscriminant then
                            let mono = Event.logMonoTime m layout e
                            let origin = t0 |> Option.defaultValue mono
                            t0 <- Some origin
                            let ns = int64 (mono - origin)
                            let t = float ns / 1e9
                            let part = Some(WindowPart.ofTime start dur t)
                            let mutable c = CanCursor(m, layout, Event.canBatch m layout e)

                            while c.MoveNext() do
                                frames.Add {
                                    Frame = {
                                        TimeNs = ns
                                        Service = CanService.Can
                                        Address = c.Address
                                        Bus = int c.Src
                                        Payload = c.Payload.ToArray()
                                    }
                                    Part = part
                                }

                        true)
                    |> Result.map (fun _ -> List.ofSeq frames, Some start)

    let private run (ctx: ToolContext) : Result<ToolOutput, ToolError> =
        let p = ctx.Parameters
        let prefix = p.StrOf "output_prefix"

        let watchFile =
            match p.Str "watch_file" with
            | None -> Ok []
            | Some f ->
                match
                    ctx.ResolveFile f
                    |> Result.bind (fun path -> CtsLite.Io.readText path |> Result.mapError (fun e -> $"{f}: {e}"))
                with
                | Error e -> Error(ToolError.InvalidFile("watch_file", e))
                | Ok(text: string) ->
                    let specs =
                        text.Split('\n')
                        |> Array.mapi (fun i l ->
                            i + 1, (let c = l.IndexOf '#' in if c >= 0 then l.Substring(0, c) else l).Trim())
                        |> Array.filter (fun (_, l) -> l <> "")
                        |> List.ofArray

                    specs
                    |> List.traverseResultM (fun (n, s) ->
                        parseWatch s
                        |> Result.mapError (fun e -> ToolError.InvalidFile("watch_file", $"line {n}: {e}")))

        let watched =
            watchFile
            |> Result.map (fun fromFile ->
                (p.List "watch"
                 |> List.choose (fun w ->
                     match parseWatch w with
                     | Ok x -> Some x
                     | Error _ -> None))
                @ fromFile
                |> List.distinct)

        match watched with
        | Error e -> Error e
        | Ok watched ->
            match readFrames ctx with
            | Error e -> Error e
            | Ok(allFrames, originOverride) ->
                ctx.Cancellation.ThrowIfCancellationRequested()

                // One bus per address: the forced one, else the default-bus rule.
                let busOf =
                    allFrames
                    |> List.countBy (fun f -> f.Frame.Address, f.Frame.Bus)
                    |> List.groupBy (fst >> fst)
                    |> List.choose (fun (address, counts) ->
                        match p.Int "bus" with
                        | Some b -> Some(address, int b)
                        | None ->
                            counts
                            |> List.map (fun ((_, b), n) -> b, int64 n)
                            |> ToolSupport.defaultBus
                            |> Option.map (fun b -> address, b))
                    |> Map.ofList

                let frames =
                    allFrames
                    |> List.filter (fun f -> busOf.TryFind f.Frame.Address = Some f.Frame.Bus)

                let segmentOf (f: CsvFrame) =
                    f.Part |> Option.defaultValue WindowPart.Pre

                let windowFrames = frames |> List.filter (fun f -> segmentOf f = WindowPart.Window)

                let origin =
                    match originOverride, windowFrames, frames with
                    | Some o, _, _ -> o
                    | None, w :: _, _ -> w.Frame.Seconds
                    | None, [], f :: _ -> f.Frame.Seconds
                    | None, [], [] -> 0.0

                let windowEnd = windowFrames |> List.map _.Frame.Seconds |> List.fold max origin

                let addresses = frames |> List.map _.Frame.Address |> List.distinct
                let sorted = frames |> List.sortBy _.Frame.Seconds

                // Each address's frames in time order (stable: file order within equal times).
                let byAddress =
                    sorted
                    |> List.groupBy _.Frame.Address
                    |> List.map (fun (a, fs) -> a, Array.ofList fs)
                    |> dict

                // counts.csv
                let countRows = [
                    for a in addresses |> List.sort ->
                        let n s =
                            byAddress[a] |> Array.filter (fun f -> segmentOf f = s) |> Array.length

                        let pre, win, post = n WindowPart.Pre, n WindowPart.Window, n WindowPart.Post

                        [
                            Format.address a
                            string pre
                            string win
                            string post
                            string (win - max pre post)
                        ]
                ]

                Artifacts.writeWith ctx.OutputDir $"{prefix}.counts.csv" (fun w ->
                    w.WriteLine "address,pre,window,post,delta"

                    for r in countRows do
                        w.WriteLine(Format.csvLine r))

                // per_address.json
                let perAddress =
                    Artifacts.obj [
                        for a in addresses ->
                            Format.address a,
                            Artifacts.obj [
                                for s in segments do
                                    let payloads =
                                        byAddress[a]
                                        |> Array.filter (fun f -> segmentOf f = s)
                                        |> Array.map (fun f -> Convert.ToHexString f.Frame.Payload)
                                        |> List.ofArray

                                    if not payloads.IsEmpty then
                                        let counted =
                                            payloads |> List.countBy id |> List.sortBy (fun (hex, n) -> -n, hex)

                                        s.Label,
                                        Artifacts.obj [
                                            "unique_payloads", Artifacts.int (int64 counted.Length)
                                            "top_payloads",
                                            Artifacts.arr [
                                                for hex, n in List.truncate 5 counted ->
                                                    Artifacts.arr [ Artifacts.str hex; Artifacts.int (int64 n) ]
                                            ]
                                        ]
                            ]
                    ]

                Artifacts.writeJson ctx.OutputDir $"{prefix}.per_address.json" perAddress

                // bit_edges.csv
                let last = Dictionary<CanBit, bool>()

                Artifacts.writeWith ctx.OutputDir $"{prefix}.bit_edges.csv" (fun w ->
                    w.WriteLine "address,byte,msb_bit,lsb_bit,global_idx,timestamp,rel,edge,segment"

                    for labelled in sorted do
                        let f = labelled.Frame

                        for key in watched do
                            if key.Address = f.Address then
                                let address, bit = key.Address, key.Bit
                                let v = Bits.get (ReadOnlySpan f.Payload) bit

                                match last.TryGetValue key with
                                | true, previous when previous <> v ->
                                    w.WriteLine(
                                        Format.csvLine [
                                            Format.address address
                                            string (bit / 8)
                                            string (7 - bit % 8)
                                            string (bit % 8)
                                            string bit
                                            Format.decimals 6 f.Seconds
                                            Format.mmss (max 0.0 (f.Seconds - origin))
                                            (if v then "0->1" else "1->0")
                                            (segmentOf labelled).Label
                                        ]
                                    )
                                | _ -> ()

                                last[key] <- v)

                // Toggles per (address, bit) with the segment of the frame where each happened.
                let toggles = Dictionary<CanBit, ResizeArray<float * WindowPart * bool>>()
                let order = ResizeArray<CanBit>()

                for a in addresses do
                    let fs = byAddress[a]

                    for i in 1 .. fs.Length - 1 do
                        let previous, current = fs[i - 1].Frame, fs[i].Frame
                        let n = max previous.Payload.Length current.Payload.Length

                        for bit in 0 .. min 64 (n * 8) - 1 do
                            let x = Bits.get (ReadOnlySpan previous.Payload) bit
                            let y = Bits.get (ReadOnlySpan current.Payload) bit

                            if x <> y then
                                let key = { Address = a; Bit = bit }
                                let toggle = current.Seconds, segmentOf fs[i], y

                                match toggles.TryGetValue key with
                                | true, l -> l.Add toggle
                                | false, _ ->
                                    toggles[key] <- ResizeArray [ toggle ]
                                    order.Add key

                let candidates =
                    order
                    |> Seq.filter (fun key -> toggles[key] |> Seq.forall (fun (_, s, _) -> s = WindowPart.Window))
                    |> Seq.sortBy (fun key ->
                        let t, _, _ = toggles[key][0]
                        t, key.Address, key.Bit)
                    |> List.ofSeq

                Artifacts.writeWith ctx.OutputDir $"{prefix}.candidates_window_only.csv" (fun w ->
                    w.WriteLine "address,global_idx,toggles"

                    for key in candidates do
                        w.WriteLine $"{Format.address key.Address},{key.Bit},{toggles[key].Count}")

                // accel_hunt.csv: pulses of each candidate inside the window.
                let hunt = [
                    for key in candidates ->
                        let a, bit = key.Address, key.Bit

                        let initial =
                            byAddress[a]
                            |> Array.filter (fun f -> f.Frame.Seconds <= origin)
                            |> Array.tryLast
                            |> Option.map (fun f -> Bits.get (ReadOnlySpan f.Frame.Payload) bit)
                            |> Option.defaultValue false

                        let transitions = toggles[key] |> Seq.map (fun (t, _, v) -> t, v) |> List.ofSeq
                        let ps = pulses origin windowEnd initial transitions
                        a, bit, ps
                ]

                Artifacts.writeWith ctx.OutputDir $"{prefix}.accel_hunt.csv" (fun w ->
                    w.WriteLine "address,global_idx,pulses,valid_three_2s"

                    for a, bit, ps in hunt do
                        let durations =
                            ps
                            |> List.map (fun x ->
                                Math.Round(x.Fall - x.Rise, 3).ToString(Globalization.CultureInfo.InvariantCulture))
                            |> fun l -> "[" + String.Join(", ", l) + "]"

                        w.WriteLine(
                            Format.csvLine [
                                Format.address a
                                string bit
                                durations
                                (if validThree ps then "True" else "False")
                            ]
                        ))

                ctx.Progress 100.0
                let valid = hunt |> List.filter (fun (_, _, ps) -> validThree ps)

                Ok {
                    Artifacts = [
                        $"{prefix}.counts.csv"
                        $"{prefix}.per_address.json"
                        $"{prefix}.bit_edges.csv"
                        $"{prefix}.candidates_window_only.csv"
                        $"{prefix}.accel_hunt.csv"
                    ]
                    Summary =
                        $"{addresses.Length} addresses, {candidates.Length} window-only bit(s), {valid.Length} with three 2 s pulses"
                    Warnings =
                        (if windowFrames.IsEmpty then
                             [ "no frame is labelled window" ]
                         else
                             [])
                }

    /// The tool.
    let tool: Tool = {
        Descriptor = descriptor
        Check = check
        Run = run
    }
