namespace CtsLite.Logs

open System
open System.Collections.Generic
open System.Globalization
open System.IO
open CtsLite.Can

/// The text formats CAN is read from besides logs.
[<RequireQualifiedAccess>]
type CanTextKind =
    /// candump `-L` (`(time) iface id#data`).
    | Candump
    /// The CSV rlog-to-csv writes.
    | Csv

/// Where a frame lies relative to a labelled time window (rlog-to-csv's `segment` column).
[<RequireQualifiedAccess>]
type WindowPart =
    | Pre
    | Window
    | Post

    /// `pre`, `window` or `post`, as the CSV writes it.
    member p.Label =
        match p with
        | Pre -> "pre"
        | Window -> "window"
        | Post -> "post"

/// Labelling times against a window.
[<RequireQualifiedAccess>]
module WindowPart =

    /// The part of the window [start, start + duration] (inclusive) that time `t` falls in.
    let ofTime (start: float) (duration: float) (t: float) : WindowPart =
        if t < start then WindowPart.Pre
        elif t <= start + duration then WindowPart.Window
        else WindowPart.Post

    /// Parses a label, ignoring case.
    let tryParse (label: string) : WindowPart option =
        match label.ToLowerInvariant() with
        | "pre" -> Some WindowPart.Pre
        | "window" -> Some WindowPart.Window
        | "post" -> Some WindowPart.Post
        | _ -> None

/// A frame of the rlog-to-csv CSV with its window label, when the row has one.
type CsvFrame = {
    Frame: CanFrame
    Part: WindowPart option
}

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

    /// Seconds written in decimal (`1436509052.249713`, `2.5e-3`) as exact nanoseconds; `None` for
    /// anything else, negative times or times past the year 2262 (int64 nanoseconds).
    let private nanoseconds (text: string) : int64 option =
        match Decimal.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture) with
        | true, seconds when seconds >= 0m && seconds < 9_000_000_000m ->
            Some(int64 (Math.Round(seconds * 1_000_000_000m)))
        | _ -> None

    /// The text format of a file by its first line: candump `-L` (`(time) iface id#data`) or the
    /// rlog-to-csv CSV (a header naming timestamp and address); `None` for anything else (logs).
    let sniff (path: string) : CanTextKind option =
        // Not a regular file: not text either (opening it as a log then says what it is).
        if Result.isError (CtsLite.Io.regularFile path) then
            None
        else

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
                        Some CanTextKind.Candump
                    elif
                        first.ToLowerInvariant().Contains "timestamp"
                        && first.ToLowerInvariant().Contains "address"
                    then
                        Some CanTextKind.Csv
                    else
                        None
            with :? IOException ->
                None

    /// candump `-L` lines: `(1436509052.249713) can0 123#DEADBEEF` (also `##<flags><data>` for CAN FD,
    /// `#R` for remote frames, which carry no data). `canN`/`vcanN` is bus N; other names are numbered
    /// in order of appearance. Problems are reported as `file:line: message`.
    let readCandump (name: string) (lines: string seq) : Result<CanFrame list, string list> =
        let frames = ResizeArray<CanFrame>()
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

                    match nanoseconds time, frame.IndexOf '#' with
                    | None, _ -> fail $"'{time}' is not a time in seconds"
                    | _, -1 -> fail $"'{frame}' has no '#'"
                    | Some t, hash ->
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
                                TimeNs = t
                                Service = CanService.Can
                                Address = id &&& 0x1FFFFFFFu
                                Bus = bus
                                Payload = payload
                            }
                        | (false, _), _ -> fail $"'{idText}' is not a hexadecimal CAN id"
                        | _ -> fail $"'{rest}' is not hexadecimal data of at most 64 bytes"

        match List.ofSeq errors with
        | [] -> Ok(List.ofSeq frames)
        | es -> Error es

    /// The CSV `rlog-to-csv` writes: `window,segment,timestamp,address,bus,data_hex` (the segment
    /// column may be called `seg`, the data column `data`). Problems are `file:line: message`.
    let readCsv (name: string) (lines: string seq) : Result<CsvFrame list, string list> =
        let frames = ResizeArray<CsvFrame>()
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
                        let segment = segment |> Option.filter ((<>) "")

                        match nanoseconds t, address, Int32.TryParse b, hexBytes d, segment with
                        | None, _, _, _, _ -> fail $"'{t}' is not a timestamp"
                        | _, None, _, _, _ -> fail $"'{a}' is not an address"
                        | _, _, (false, _), _, _ -> fail $"'{b}' is not a bus number"
                        | _, _, _, None, _ -> fail $"'{d}' is not hexadecimal data"
                        | _, _, _, _, Some s when (WindowPart.tryParse s).IsNone ->
                            fail $"segment '{s}' is not pre, window or post"
                        | Some time, Some address, (true, bus), Some payload, segment ->
                            frames.Add {
                                Frame = {
                                    TimeNs = time
                                    Service = CanService.Can
                                    Address = address
                                    Bus = bus
                                    Payload = payload
                                }
                                Part = segment |> Option.bind WindowPart.tryParse
                            }
                    | _ -> fail "missing timestamp, address, bus or data_hex"

        match header, List.ofSeq errors with
        | None, _ ->
            Error [
                $"{name}: empty file (expected the header window,segment,timestamp,address,bus,data_hex)"
            ]
        | _, [] -> Ok(List.ofSeq frames)
        | _, es -> Error es
