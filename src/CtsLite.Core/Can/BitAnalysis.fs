namespace CtsLite.Can

open System
open System.Collections.Generic
open System.Globalization
open System.IO

/// A CAN frame for analysis, whatever it was read from (rlog, candump, CSV).
type AnalysisFrame = {
    /// Seconds (logMonoTime / 1e9 for logs, the capture time for candump).
    Time: float
    Address: uint32
    /// The raw src byte for logs; the interface's number for candump.
    Bus: int
    Payload: byte array
    /// `pre`, `window` or `post` when the source labelled it (rlog-to-csv CSV).
    Segment: string option
}

/// Payload bits and their three naming conventions, which must never be mixed up.
/// Bit N is byte N/8, mask 1 << (N % 8) (the payload read as a little-endian integer).
[<RequireQualifiedAccess>]
module Bits =

    /// Bit `n` of the payload (false beyond its end).
    let get (payload: ReadOnlySpan<byte>) (n: int) : bool =
        n >= 0
        && (n >>> 3) < payload.Length
        && (payload[n >>> 3] >>> (n &&& 7)) &&& 1uy = 1uy

    /// Positions whose value differs; for the extra bytes of the longer payload every set bit counts.
    let changed (previous: byte array) (current: byte array) : int list =
        let longest = max previous.Length current.Length

        [
            for b in 0 .. longest - 1 do
                let x =
                    (if b < previous.Length then previous[b] else 0uy)
                    ^^^ (if b < current.Length then current[b] else 0uy)

                for i in 0..7 do
                    if (x >>> i) &&& 1uy = 1uy then
                        b * 8 + i
        ]

    /// can-bitwatch's `B<byte>b<msb>`: MSB-first inside the byte (bit 34 is `B4b5`).
    let bitwatchLabel (bit: int) : string = $"B{bit / 8}b{7 - bit % 8}"

    /// Parses `B<byte>b<msb>` into a bit number.
    let parseBitwatch (label: string) : int option =
        let t = label.Trim()
        let b = t.IndexOf 'b', t.LastIndexOf 'b'

        match t.Length > 3 && t[0] = 'B', b with
        | true, (_, i) when i > 1 ->
            match Int32.TryParse(t.AsSpan(1, i - 1)), Int32.TryParse(t.AsSpan(i + 1)) with
            | (true, byteIndex), (true, msb) when byteIndex >= 0 && byteIndex < 64 && msb >= 0 && msb <= 7 ->
                Some(byteIndex * 8 + 7 - msb)
            | _ -> None
        | _ -> None

    /// The analyzer's LSB label: `Byte{b} bit{lsb} (LSB)`.
    let lsbLabel (bit: int) : string = $"Byte{bit / 8} bit{bit % 8} (LSB)"

    /// The analyzer's MSB label: `MSB B{b}b{7 − lsb}`.
    let msbLabel (bit: int) : string = $"MSB B{bit / 8}b{7 - bit % 8}"

    /// A bit selector `0xADDR:bN` (global LSB index), `0xADDR:B<byte>b<msb>`, or the origin's legacy
    /// `0xADDR:MSB Bnn`, where nn mirrors a 64-bit integer (bit 63 − nn). Returns (address, bit).
    let parseSelector (selector: string) : Result<uint32 * int, string> =
        let fail () =
            Error $"'{selector}': expected 0xADDR:bN, 0xADDR:B<byte>b<msb> or (legacy) 0xADDR:MSB Bnn"

        match selector.Split(':', 2) with
        | [| addressText; bitText |] ->
            let a = addressText.Trim()

            let address =
                if a.StartsWith("0x", StringComparison.OrdinalIgnoreCase) then
                    match
                        UInt32.TryParse(a.Substring 2, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture)
                    with
                    | true, v -> Some v
                    | false, _ -> None
                else
                    None

            let bitPart = bitText.Trim()

            let bit =
                if bitPart.StartsWith("MSB ", StringComparison.Ordinal) then
                    let rest = bitPart.Substring(4).Trim()

                    match rest.Length > 1 && rest[0] = 'B', Int32.TryParse(rest.AsSpan 1) with
                    | true, (true, nn) when nn >= 0 && nn <= 63 -> Some(63 - nn)
                    | _ -> None
                elif bitPart.StartsWith "B" then
                    parseBitwatch bitPart
                elif bitPart.StartsWith "b" then
                    match Int32.TryParse(bitPart.AsSpan 1) with
                    | true, n when n >= 0 && n < 512 -> Some n
                    | _ -> None
                else
                    None

            match address, bit with
            | Some a, Some b -> Ok(a, b)
            | _ -> fail ()
        | _ -> fail ()

/// Change statistics of one (address, bus).
type ChangeStats = {
    Address: uint32
    Bus: int
    Messages: int
    /// Messages whose payload differed from the previous one (the origin's `total_changes`).
    MessagesChanged: int
    /// Flips per bit position.
    FlipsPerBit: IReadOnlyDictionary<int, int>
    /// MessagesChanged ÷ Messages.
    ChangeRate: float
    /// The 10 bits with most flips (ties: lower bit first).
    MostActiveBits: (int * int) list
}

/// An edge of a watched bit.
type BitEdge = {
    Time: float
    Address: uint32
    Bus: int
    Bit: int
    /// True for 0→1.
    Rising: bool
}

/// The discovery analyses of the origin's `bit_analysis`, per (address, bus): buses are never mixed.
[<RequireQualifiedAccess>]
module BitAnalysis =

    let private byKey (frames: AnalysisFrame seq) =
        frames
        |> Seq.groupBy (fun f -> f.Address, f.Bus)
        |> Seq.map (fun (key, fs) -> key, Array.ofSeq fs)
        |> Seq.sortBy fst
        |> List.ofSeq

    /// Change statistics for every (address, bus) with at least 2 messages.
    let changeStats (frames: AnalysisFrame seq) : ChangeStats list = [
        for (address, bus), fs in byKey frames do
            if fs.Length >= 2 then
                let flips = Dictionary<int, int>()
                let mutable changedMessages = 0

                for i in 1 .. fs.Length - 1 do
                    match Bits.changed fs[i - 1].Payload fs[i].Payload with
                    | [] -> ()
                    | bits ->
                        changedMessages <- changedMessages + 1

                        for b in bits do
                            flips[b] <-
                                (match flips.TryGetValue b with
                                 | true, n -> n + 1
                                 | _ -> 1)

                {
                    Address = address
                    Bus = bus
                    Messages = fs.Length
                    MessagesChanged = changedMessages
                    FlipsPerBit = flips
                    ChangeRate = float changedMessages / float fs.Length
                    MostActiveBits =
                        flips
                        |> Seq.map (fun kv -> kv.Key, kv.Value)
                        |> Seq.sortBy (fun (bit, n) -> -n, bit)
                        |> Seq.truncate 10
                        |> List.ofSeq
                }
    ]

    /// Toggle times of every bit, per (address, bus), from consecutive frames.
    let toggles (frames: AnalysisFrame seq) : Map<(uint32 * int), Map<int, float list>> =
        byKey frames
        |> List.map (fun (key, fs) ->
            let times = Dictionary<int, ResizeArray<float>>()

            for i in 1 .. fs.Length - 1 do
                for b in Bits.changed fs[i - 1].Payload fs[i].Payload do
                    match times.TryGetValue b with
                    | true, l -> l.Add fs[i].Time
                    | false, _ -> times[b] <- ResizeArray [ fs[i].Time ]

            key, (times |> Seq.map (fun kv -> kv.Key, List.ofSeq kv.Value) |> Map.ofSeq))
        |> Map.ofList

    /// Edges of watched bits in time order; the first frame of each (address, bus) only initializes.
    let edges (watched: (uint32 * int) list) (frames: AnalysisFrame seq) : BitEdge list =
        let wanted =
            watched
            |> List.groupBy fst
            |> List.map (fun (a, bits) -> a, bits |> List.map snd)
            |> dict

        let last = Dictionary<struct (uint32 * int * int), bool>()

        [
            for f in frames |> Seq.sortBy (fun f -> f.Time) do
                match wanted.TryGetValue f.Address with
                | true, bits ->
                    for bit in bits do
                        let v = Bits.get (ReadOnlySpan f.Payload) bit
                        let key = struct (f.Address, f.Bus, bit)

                        match last.TryGetValue key with
                        | true, previous when previous <> v ->
                            yield {
                                Time = f.Time
                                Address = f.Address
                                Bus = f.Bus
                                Bit = bit
                                Rising = v
                            }
                        | _ -> ()

                        last[key] <- v
                | false, _ -> ()
        ]

    /// Bits that toggled, and toggled only inside [start, stop] (inclusive), per (address, bus),
    /// with their toggle counts, in order of first toggle.
    let activeOnlyInWindow
        (start: float)
        (stop: float)
        (frames: AnalysisFrame seq)
        : ((uint32 * int) * (int * int) list) list = [
        for KeyValue(key, bits) in toggles frames do
            let inside =
                bits
                |> Map.toList
                |> List.filter (fun (_, times) ->
                    not times.IsEmpty && times |> List.forall (fun t -> t >= start && t <= stop))
                |> List.sortBy (fun (bit, times) -> List.head times, bit)
                |> List.map (fun (bit, times) -> bit, times.Length)

            if not inside.IsEmpty then
                key, inside
    ]

/// Reading CAN captured without openpilot.
[<RequireQualifiedAccess>]
module CanText =

    let private hexBytes (text: string) : byte array option =
        let t = text.Replace(" ", "").Replace(",", "").Replace("0x", "").Replace("0X", "")
        let t = if t.Length % 2 = 1 then "0" + t else t

        try
            Some(Convert.FromHexString t)
        with :? FormatException ->
            None

    /// The text format of a file by its first line: candump `-L` (`(time) iface id#data`) or the
    /// rlog-to-csv CSV (a header naming timestamp and address); `None` for anything else (logs).
    let sniff (path: string) : string option =
        try
            use stream = File.OpenRead path
            let head = Array.zeroCreate<byte> 512
            let n = stream.Read(head, 0, head.Length)

            let isText =
                head
                |> Array.take n
                |> Array.forall (fun b -> b = 9uy || b = 10uy || b = 13uy || (b >= 32uy && b < 127uy))

            if n = 0 || not isText then
                None
            else
                let first =
                    Text.Encoding.ASCII.GetString(head, 0, n).Split('\n')
                    |> Array.map (fun l -> l.Trim())
                    |> Array.tryFind (fun l -> l <> "")
                    |> Option.defaultValue ""

                if first.StartsWith "(" && first.Contains "#" then
                    Some "candump"
                elif
                    first.ToLowerInvariant().Contains "timestamp"
                    && first.ToLowerInvariant().Contains "address"
                then
                    Some "csv"
                else
                    None
        with :? IOException ->
            None

    /// candump `-L` lines: `(1436509052.249713) can0 123#DEADBEEF` (also `##<flags><data>` for CAN FD,
    /// `#R` for remote frames, which carry no data). `canN`/`vcanN` is bus N; other names are numbered
    /// in order of appearance. Problems are reported as `file:line: message`.
    let readCandump (name: string) (lines: string seq) : Result<AnalysisFrame list, string list> =
        let frames = ResizeArray<AnalysisFrame>()
        let errors = ResizeArray<string>()
        let interfaces = Dictionary<string, int>()
        let mutable lineNo = 0

        for raw in lines do
            lineNo <- lineNo + 1
            let line = raw.Trim()

            if line <> "" && not (line.StartsWith "#") then
                let parts = line.Split(' ', StringSplitOptions.RemoveEmptyEntries)

                let fail message =
                    errors.Add $"{name}:{lineNo}: {message}"

                if parts.Length < 3 || not (parts[0].StartsWith "(" && parts[0].EndsWith ")") then
                    fail "expected '(<seconds>) <interface> <id>#<data>'"
                else
                    let time = parts[0].Trim('(', ')')
                    let iface = parts[1]
                    let frame = parts[2]

                    let bus =
                        let digits = iface.TrimStart([| 'v'; 'c'; 'a'; 'n' |])

                        match iface.StartsWith "can" || iface.StartsWith "vcan", Int32.TryParse digits with
                        | true, (true, n) -> n
                        | _ ->
                            match interfaces.TryGetValue iface with
                            | true, n -> n
                            | false, _ ->
                                interfaces[iface] <- interfaces.Count
                                interfaces.Count - 1

                    match
                        Double.TryParse(time, NumberStyles.Float, CultureInfo.InvariantCulture), frame.IndexOf '#'
                    with
                    | (false, _), _ -> fail $"'{time}' is not a time in seconds"
                    | _, -1 -> fail $"'{frame}' has no '#'"
                    | (true, t), hash ->
                        let idText = frame.Substring(0, hash)
                        let rest = frame.Substring(hash + 1)

                        let data =
                            if rest.StartsWith "#" then
                                // CAN FD: one flags nibble, then the data.
                                if rest.Length >= 2 then
                                    hexBytes (rest.Substring 2)
                                else
                                    None
                            elif rest.StartsWith "R" then
                                Some [||]
                            else
                                hexBytes rest

                        match
                            UInt32.TryParse(idText, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture), data
                        with
                        | (true, id), Some payload when payload.Length <= 64 ->
                            frames.Add {
                                Time = t
                                Address = id &&& 0x1FFFFFFFu
                                Bus = bus
                                Payload = payload
                                Segment = None
                            }
                        | (false, _), _ -> fail $"'{idText}' is not a hexadecimal CAN id"
                        | _ -> fail $"'{rest}' is not hexadecimal data of at most 64 bytes"

        match List.ofSeq errors with
        | [] -> Ok(List.ofSeq frames)
        | es -> Error es

    /// The CSV `rlog-to-csv` writes: `window,segment,timestamp,address,bus,data_hex` (the segment
    /// column may be called `seg`, the data column `data`). Problems are `file:line: message`.
    let readCsv (name: string) (lines: string seq) : Result<AnalysisFrame list, string list> =
        let frames = ResizeArray<AnalysisFrame>()
        let errors = ResizeArray<string>()
        let mutable header: Map<string, int> option = None
        let mutable lineNo = 0

        for raw in lines do
            lineNo <- lineNo + 1
            let line = raw.Trim()

            if line <> "" then
                let cells = line.Split ','

                match header with
                | None -> header <- Some(cells |> Array.mapi (fun i c -> c.Trim().ToLowerInvariant(), i) |> Map.ofArray)
                | Some h ->
                    let cell (names: string list) =
                        names
                        |> List.tryPick (fun n -> h.TryFind n)
                        |> Option.filter (fun i -> i < cells.Length)
                        |> Option.map (fun i -> cells[i].Trim())

                    let fail message =
                        errors.Add $"{name}:{lineNo}: {message}"

                    match
                        cell [ "timestamp" ],
                        cell [ "address" ],
                        cell [ "bus" ],
                        cell [ "data_hex"; "data" ],
                        cell [ "segment"; "seg" ]
                    with
                    | Some t, Some a, Some b, Some d, segment ->
                        let address =
                            if a.StartsWith("0x", StringComparison.OrdinalIgnoreCase) then
                                match
                                    UInt32.TryParse(
                                        a.Substring 2,
                                        NumberStyles.AllowHexSpecifier,
                                        CultureInfo.InvariantCulture
                                    )
                                with
                                | true, v -> Some v
                                | false, _ -> None
                            else
                                match UInt32.TryParse(a, NumberStyles.None, CultureInfo.InvariantCulture) with
                                | true, v -> Some v
                                | false, _ ->
                                    match
                                        UInt32.TryParse(a, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture)
                                    with
                                    | true, v -> Some v
                                    | false, _ -> None

                        // An empty cell is an unlabelled row (rlog-to-csv without a window).
                        let segment =
                            segment |> Option.map (fun s -> s.ToLowerInvariant()) |> Option.filter ((<>) "")

                        match
                            Double.TryParse(t, NumberStyles.Float, CultureInfo.InvariantCulture),
                            address,
                            Int32.TryParse b,
                            hexBytes d,
                            segment
                        with
                        | (false, _), _, _, _, _ -> fail $"'{t}' is not a timestamp"
                        | _, None, _, _, _ -> fail $"'{a}' is not an address"
                        | _, _, (false, _), _, _ -> fail $"'{b}' is not a bus number"
                        | _, _, _, None, _ -> fail $"'{d}' is not hexadecimal data"
                        | _, _, _, _, Some s when s <> "pre" && s <> "window" && s <> "post" ->
                            fail $"segment '{s}' is not pre, window or post"
                        | (true, time), Some address, (true, bus), Some payload, segment ->
                            frames.Add {
                                Time = time
                                Address = address
                                Bus = bus
                                Payload = payload
                                Segment = segment
                            }
                    | _ -> fail "missing timestamp, address, bus or data_hex"

        match header, List.ofSeq errors with
        | None, _ ->
            Error [
                $"{name}: empty file (expected the header window,segment,timestamp,address,bus,data_hex)"
            ]
        | _, [] -> Ok(List.ofSeq frames)
        | _, es -> Error es
