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
            match CanId.parse a, Bits.parseBitwatch b with
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

    /// What can-bitwatch read: every frame in the analyzer's frame store (times in ns after the
    /// first CAN event, or the CSV's own), the window part of each frame, and the time origin.
    type private Reading = {
        Store: FrameStore
        Parts: ResizeArray<WindowPart>
        /// `window_start` when given; else the first window frame sets the origin.
        Origin: float option
    }

    let private readFrames (ctx: ToolContext) (store: FrameStore) : Result<Reading, ToolError> =
        let p = ctx.Parameters
        let parts = ResizeArray<WindowPart>()

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
                | Ok rows ->
                    for row in rows do
                        let f = row.Frame

                        store.Add(f.TimeNs, store.KeyOf(f.Address, f.Bus), ReadOnlySpan f.Payload)
                        |> ignore

                        parts.Add(row.Part |> Option.defaultValue WindowPart.Pre)

                    Ok {
                        Store = store
                        Parts = parts
                        Origin = p.Float "window_start"
                    })
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
                    let mutable t0 = None

                    LogInput.iter ctx files 0.0 70.0 (fun reader ->
                        let m = reader.Message
                        let e = reader.Event

                        if Event.which m layout e = layout.CanDiscriminant then
                            let mono = Event.logMonoTime m layout e
                            let origin = t0 |> Option.defaultValue mono
                            t0 <- Some origin
                            let ns = int64 (mono - origin)
                            let part = WindowPart.ofTime start dur (float ns / 1e9)
                            let mutable c = CanCursor(m, layout, Event.canBatch m layout e)

                            while c.MoveNext() do
                                store.Add(ns, store.KeyOf(c.Address, int c.Src), c.Payload) |> ignore
                                parts.Add part

                        true)
                    |> Result.map (fun _ -> {
                        Store = store
                        Parts = parts
                        Origin = Some start
                    })

    /// Writes the five outputs of a reading; the summary and warnings.
    let private analyse
        (ctx: ToolContext)
        (prefix: string)
        (watched: CanBit list)
        (reading: Reading)
        : Result<ToolOutput, ToolError> =
        let p = ctx.Parameters
        let store, parts = reading.Store, reading.Parts
        let keys = store.Keys
        let byKey = store.ByKey()
        let seconds (i: int) = float (store.Time i) / 1e9
        // Keys in order of their first frame in the input.
        let firstFrame = byKey |> Array.map (fun ix -> Array.min ix)

        // One bus per address: the forced one, else the default-bus rule.
        let chosen =
            [ 0 .. keys.Count - 1 ]
            |> List.groupBy (fun k -> keys[k].Address)
            |> List.choose (fun (_, ks) ->
                match p.Int "bus" with
                | Some b -> ks |> List.tryFind (fun k -> keys[k].Bus = int b)
                | None ->
                    ks
                    |> List.map (fun k -> keys[k].Bus, int64 byKey[k].Length)
                    |> ToolSupport.defaultBus
                    |> Option.bind (fun b -> ks |> List.tryFind (fun k -> keys[k].Bus = b)))
            |> List.sortBy (fun k -> firstFrame[k])

        let addresses = chosen |> List.map (fun k -> keys[k].Address)
        // Each address's frames in time order (log order within one time).
        let framesOf = chosen |> List.map (fun k -> keys[k].Address, byKey[k]) |> dict

        // Every chosen frame in input order: the first window frame sets the origin.
        let inInputOrder =
            chosen |> Seq.collect (fun k -> byKey[k]) |> Seq.sort |> Array.ofSeq

        let windowFrames =
            inInputOrder |> Array.filter (fun i -> parts[i] = WindowPart.Window)

        let origin =
            match reading.Origin with
            | Some o -> o
            | None when windowFrames.Length > 0 -> seconds windowFrames[0]
            | None when inInputOrder.Length > 0 -> seconds inInputOrder[0]
            | None -> 0.0

        let windowEnd = windowFrames |> Array.fold (fun e i -> max e (seconds i)) origin

        // counts.csv
        Artifacts.writeWith ctx.OutputDir $"{prefix}.counts.csv" (fun w ->
            w.WriteLine "address,pre,window,post,delta"

            for a in List.sort addresses do
                let n part =
                    framesOf[a] |> Array.filter (fun i -> parts[i] = part) |> Array.length

                let pre, win, post = n WindowPart.Pre, n WindowPart.Window, n WindowPart.Post

                w.WriteLine(
                    Format.csvLine [
                        Format.address a
                        string pre
                        string win
                        string post
                        string (win - max pre post)
                    ]
                ))

        // per_address.json
        let perAddress =
            Artifacts.obj [
                for a in addresses ->
                    Format.address a,
                    Artifacts.obj [
                        for part in segments do
                            let payloads =
                                framesOf[a]
                                |> Array.filter (fun i -> parts[i] = part)
                                |> Array.map (fun i -> Convert.ToHexString(store.Payload i))

                            if payloads.Length > 0 then
                                let counted = payloads |> Array.countBy id |> Array.sortBy (fun (hex, n) -> -n, hex)

                                part.Label,
                                Artifacts.obj [
                                    "unique_payloads", Artifacts.int (int64 counted.Length)
                                    "top_payloads",
                                    Artifacts.arr [
                                        for hex, n in Array.truncate 5 counted ->
                                            Artifacts.arr [ Artifacts.str hex; Artifacts.int (int64 n) ]
                                    ]
                                ]
                    ]
            ]

        Artifacts.writeJson ctx.OutputDir $"{prefix}.per_address.json" perAddress

        // bit_edges.csv: every edge of a watched bit, in time order (input order within one time).
        let edges = [|
            for w, watch in List.indexed watched do
                match framesOf.TryGetValue watch.Address with
                | true, ix ->
                    for k in 1 .. ix.Length - 1 do
                        let before = Bits.get (store.Payload ix[k - 1]) watch.Bit
                        let v = Bits.get (store.Payload ix[k]) watch.Bit

                        if before <> v then
                            struct (ix[k], w, v)
                | false, _ -> ()
        |]

        Artifacts.writeWith ctx.OutputDir $"{prefix}.bit_edges.csv" (fun out ->
            out.WriteLine "address,byte,msb_bit,lsb_bit,global_idx,timestamp,rel,edge,segment"

            for struct (i, w, v) in edges |> Array.sortBy (fun struct (i, w, _) -> store.Time i, i, w) do
                let watch = watched[w]
                let bit = watch.Bit

                out.WriteLine(
                    Format.csvLine [
                        Format.address watch.Address
                        string (bit / 8)
                        string (7 - bit % 8)
                        string (bit % 8)
                        string bit
                        Format.decimals 6 (seconds i)
                        Format.mmss (max 0.0 (seconds i - origin))
                        (if v then "0->1" else "1->0")
                        parts[i].Label
                    ]
                ))

        // Toggles per (address, bit) with the part of the window each happened in.
        let toggles = Dictionary<CanBit, ResizeArray<float * WindowPart * bool>>()

        for a in addresses do
            let ix = framesOf[a]

            for k in 1 .. ix.Length - 1 do
                let previous = store.Payload ix[k - 1]
                let current = store.Payload ix[k]
                let n = max previous.Length current.Length

                for bit in 0 .. min 64 (n * 8) - 1 do
                    let x = Bits.get previous bit
                    let y = Bits.get current bit

                    if x <> y then
                        let key = { Address = a; Bit = bit }
                        let toggle = seconds ix[k], parts[ix[k]], y

                        match toggles.TryGetValue key with
                        | true, l -> l.Add toggle
                        | false, _ -> toggles[key] <- ResizeArray [ toggle ]

        let candidates =
            toggles.Keys
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
                let initial =
                    framesOf[key.Address]
                    |> Array.filter (fun i -> seconds i <= origin)
                    |> Array.tryLast
                    |> Option.map (fun i -> Bits.get (store.Payload i) key.Bit)
                    |> Option.defaultValue false

                let transitions = toggles[key] |> Seq.map (fun (t, _, v) -> t, v) |> List.ofSeq
                key, pulses origin windowEnd initial transitions
        ]

        Artifacts.writeWith ctx.OutputDir $"{prefix}.accel_hunt.csv" (fun w ->
            w.WriteLine "address,global_idx,pulses,valid_three_2s"

            for key, ps in hunt do
                let durations =
                    ps
                    |> List.map (fun x ->
                        Math.Round(x.Fall - x.Rise, 3).ToString(Globalization.CultureInfo.InvariantCulture))
                    |> fun l -> "[" + String.Join(", ", l) + "]"

                w.WriteLine(
                    Format.csvLine [
                        Format.address key.Address
                        string key.Bit
                        durations
                        (if validThree ps then "True" else "False")
                    ]
                ))

        ctx.Progress 100.0
        let valid = hunt |> List.filter (fun (_, ps) -> validThree ps)

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
            Facts = [
                "addresses", float addresses.Length
                "window_only_bits", float candidates.Length
                "three_pulse_bits", float valid.Length
            ]
            Warnings =
                (if windowFrames.Length = 0 then
                     [ "no frame is labelled window" ]
                 else
                     [])
        }

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
            use store = new FrameStore()

            match readFrames ctx store with
            | Error e -> Error e
            | Ok reading ->
                ctx.Cancellation.ThrowIfCancellationRequested()
                analyse ctx prefix watched reading

    /// The tool.
    let tool: Tool = {
        Descriptor = descriptor
        Check = check
        Run = run
    }
