namespace CtsLite.Tools

open System
open System.Collections.Generic
open CtsLite.Can
open CtsLite.Logs

/// A moment of the log: logMonoTime in ns, seconds (`Abs`) and seconds after the log's first event (`Rel`).
[<Struct>]
type LogTime = { Ns: int64; Abs: float; Rel: float }

/// A state change of one decoded signal (a button press, an activation).
type SignalEdge = {
    Time: LogTime
    Address: uint32
    Bus: int
    /// The DBC signal, e.g. `Set` or `Cruise_Activated`.
    Signal: string
    /// The bit (global LSB index) of a one-bit signal.
    Bit: int option
    Rising: bool
    /// The speed sample nearest in time (mph), if there is any speed.
    SpeedMph: float option
}

/// A maximal run of speed samples inside the band.
type TargetSpeedEvent = {
    Start: LogTime
    /// The first out-of-band sample, or the last sample when the run reaches the end.
    End: LogTime
    EndsAtLastSample: bool
    Samples: int
    MinMph: float
    MaxMph: float
}

/// A marker window (left blinker on, then right blinker on within the timeout).
type MarkerWindow = {
    Start: LogTime
    /// The right-on time; equal to `Start` for a partial window.
    Stop: LogTime
    /// max(0, start − pre) after the log's first event, as a log time.
    WindowStart: LogTime
    WindowEnd: LogTime
    Partial: bool
}

/// Frame activity of one (address, bus) around the marker windows, summed over the windows.
type SegmentCounts = {
    Address: uint32
    Bus: int
    Pre: int
    Window: int
    Post: int
    UniquePre: int
    UniqueWindow: int
    UniquePost: int
} with

    /// window − max(pre, post).
    member c.Delta = c.Window - max c.Pre c.Post

/// Change statistics of one (address, bus) inside one marker window.
type WindowActivity = {
    Address: uint32
    Bus: int
    Messages: int
    /// Messages whose payload differed from the previous one.
    Changes: int
    /// (bit, flips), most flips first, at most 5.
    TopBits: (int * int) list
}

/// A candidate bit of a target address.
type CandidateBit = {
    Address: uint32
    Bus: int
    Bit: int
    Toggles: int
    Rises: int
    Falls: int
    Penalty: float
    Score: float
}

/// An interval where the engaged bit is 1.
type EngagedInterval = { Start: LogTime; End: LogTime }

/// A frame whose checksum does not match (still used).
type BadChecksum = {
    Time: LogTime
    Address: uint32
    Bus: int
    Payload: string
}

/// Frame integrity over the whole input.
type Integrity = {
    FramesChecksumChecked: int64
    BadChecksums: BadChecksum list
    BadChecksumCount: int64
    FramesCounterChecked: int64
    CounterDiscontinuities: int64
    /// Frames that could not be decoded or failed validation, per (address, bus), with the first reason.
    SkippedFrames: ((uint32 * int) * (int64 * string)) list
}

/// Everything the cruise-control analysis found.
type CruiseAnalysis = {
    Files: string list
    FirstNs: int64
    LastNs: int64
    Events: int64
    CanFrames: int64
    /// Every speed sample: (time, mph).
    Speeds: (LogTime * float) array
    SetPresses: SignalEdge list
    ResumePresses: SignalEdge list
    MainPresses: SignalEdge list
    /// Cruise_Activated rising on Cruise_Status and ES_Brake.
    CruiseActivations: SignalEdge list
    CruiseDeactivations: SignalEdge list
    TargetSpeedEvents: TargetSpeedEvent list
    MarkerWindows: MarkerWindow list
    MarkerWindowsDropped: int
    /// Per window, activity of every (address, bus) that changed inside it, most changes first.
    WindowActivity: WindowActivity list list
    SegmentCounts: SegmentCounts list
    Candidates: CandidateBit list
    EngagedIntervals: EngagedInterval list
    /// Frames per (address, bus), in address then bus order.
    MessageCounts: ((uint32 * int) * int64) list
    /// The bus used for each analysed address.
    BusByAddress: (uint32 * int) list
    Integrity: Integrity
    Warnings: string list
    /// True when `max_events` stopped the reading early.
    Truncated: bool
}

/// The settings of one analysis (the tool's parameters after validation).
type CruiseSettings = {
    SpeedMin: float
    SpeedMax: float
    Markers: bool
    MarkerPre: float
    MarkerPost: float
    MarkerTimeout: float
    /// (address, bit) from the `engaged_bit` selector.
    EngagedBit: (uint32 * int) option
    EngagedBus: int option
    /// True for `engaged_mode=filter`.
    EngagedFilter: bool
    EngagedMargin: float
    /// Forces one bus for every analysed address.
    Bus: int option
    MaxEvents: int64 option
}

/// Every `can` frame of the input in a compact columnar store (about 20 bytes per frame plus its
/// payload), so window and bit statistics can look back and forward in time.
type internal FrameStore() =
    let mutable times = Array.zeroCreate<int64> 65536
    let mutable keys = Array.zeroCreate<int> 65536
    let mutable offsets = Array.zeroCreate<int> 65536
    let mutable lengths = Array.zeroCreate<byte> 65536
    let mutable bytes = Array.zeroCreate<byte>(65536 * 8)
    let mutable count = 0
    let mutable used = 0
    let keyIndex = Dictionary<uint64, int>()
    let keyList = ResizeArray<struct (uint32 * int)>()

    member _.Count = count
    member _.Keys = keyList
    member _.Time(i: int) = times[i]
    member _.Key(i: int) = keys[i]

    member _.Payload(i: int) =
        ReadOnlySpan<byte>(bytes, offsets[i], int lengths[i])

    member _.PayloadArray(i: int) =
        Array.sub bytes offsets[i] (int lengths[i])

    /// The key index of (address, bus), added when new.
    member _.KeyOf(address: uint32, bus: int) : int =
        let k = (uint64 address <<< 8) ||| uint64 bus

        match keyIndex.TryGetValue k with
        | true, i -> i
        | false, _ ->
            let i = keyList.Count
            keyIndex[k] <- i
            keyList.Add(struct (address, bus))
            i

    member _.Add(ns: int64, key: int, payload: ReadOnlySpan<byte>) : int =
        if count = times.Length then
            let n = count * 2
            Array.Resize(&times, n)
            Array.Resize(&keys, n)
            Array.Resize(&offsets, n)
            Array.Resize(&lengths, n)

        if used + payload.Length > bytes.Length then
            Array.Resize(&bytes, max (bytes.Length * 2) (used + payload.Length))

        let len = min payload.Length 255
        payload.Slice(0, len).CopyTo(Span<byte>(bytes, used, len))
        times[count] <- ns
        keys[count] <- key
        offsets[count] <- used
        lengths[count] <- byte len
        used <- used + len
        count <- count + 1
        count - 1

    /// The frame indices of each key, in log order.
    member _.ByKey() : int array array =
        let sizes = Array.zeroCreate<int> keyList.Count

        for i in 0 .. count - 1 do
            sizes[keys[i]] <- sizes[keys[i]] + 1

        let result = sizes |> Array.map Array.zeroCreate<int>
        let fill = Array.zeroCreate<int> keyList.Count

        for i in 0 .. count - 1 do
            let k = keys[i]
            result[k][fill[k]] <- i
            fill[k] <- fill[k] + 1

        result

/// The cruise-control analysis as a function of the log's frames (Subaru global platform).
[<RequireQualifiedAccess>]
module CruiseControl =

    /// The analysed messages: Wheel_Speeds, Cruise_Buttons, Cruise_Status, ES_Brake, Brake_Pedal.
    let targetAddresses = [
        Subaru.WheelSpeedsAddress
        Subaru.CruiseButtonsAddress
        Subaru.CruiseStatusAddress
        Subaru.EsBrakeAddress
        Subaru.BrakePedalAddress
    ]

    /// kph → mph.
    [<Literal>]
    let MphPerKph = 0.621371

    /// Chatter penalty: max(0, (toggles − start) × slope).
    [<Literal>]
    let PenaltyStart = 40

    /// See `PenaltyStart`.
    [<Literal>]
    let PenaltySlope = 0.1

    /// The default bus of an address: the src with most frames, preferring receive buses (< 128),
    /// ties to the lowest src.
    let defaultBus (framesPerSrc: (int * int64) list) : int option =
        let pick (candidates: (int * int64) list) =
            candidates
            |> List.sortBy (fun (src, n) -> -n, src)
            |> List.tryHead
            |> Option.map fst

        match framesPerSrc |> List.filter (fun (src, n) -> src < 128 && n > 0L) with
        | [] -> pick (framesPerSrc |> List.filter (fun (_, n) -> n > 0L))
        | receive -> pick receive

    /// Target-speed events from speed samples in time order: maximal runs inside [lo, hi]; the end
    /// is the first out-of-band sample, or the last sample when the run reaches the end.
    let targetSpeedEvents (lo: float) (hi: float) (samples: (LogTime * float) array) : TargetSpeedEvent list = [
        let mutable i = 0

        while i < samples.Length do
            let t, v = samples[i]

            if v >= lo && v <= hi then
                let mutable j = i
                let mutable mn = v
                let mutable mx = v

                while j + 1 < samples.Length
                      && (let _, w = samples[j + 1]
                          w >= lo && w <= hi) do
                    j <- j + 1
                    let _, w = samples[j]
                    mn <- min mn w
                    mx <- max mx w

                let atEnd = j + 1 >= samples.Length
                let endTime = if atEnd then fst samples[j] else fst samples[j + 1]

                {
                    Start = t
                    End = endTime
                    EndsAtLastSample = atEnd
                    Samples = j - i + 1
                    MinMph = mn
                    MaxMph = mx
                }

                i <- j + 1
            else
                i <- i + 1
    ]

    /// Marker windows from blinker state changes (time, left, right, leftChanged, rightChanged) in
    /// time order. Returns the windows and how many pending windows the timeout dropped.
    let markerWindows
        (pre: float)
        (post: float)
        (timeout: float)
        (toTime: float -> LogTime)
        (changes: (LogTime * bool * bool * bool * bool) list)
        : MarkerWindow list * int =
        let windows = ResizeArray<MarkerWindow>()
        let mutable pending: LogTime option = None
        let mutable dropped = 0

        let make (start: LogTime) (stop: LogTime) partial = {
            Start = start
            Stop = stop
            WindowStart = toTime (max 0.0 (start.Rel - pre))
            WindowEnd = toTime (stop.Rel + post)
            Partial = partial
        }

        for t, left, right, leftChanged, rightChanged in changes do
            if leftChanged && left then
                pending <- Some t
            else
                match pending with
                | None -> ()
                | Some start when t.Rel - start.Rel > timeout ->
                    pending <- None
                    dropped <- dropped + 1
                | Some start when rightChanged && right ->
                    windows.Add(make start t false)
                    pending <- None
                | Some _ -> ()

        match pending with
        | Some start -> windows.Add(make start start true)
        | None -> ()

        List.ofSeq windows, dropped

    /// Engaged intervals of one bit from (time, value) samples: 0→1 opens, 1→0 closes, an open
    /// interval closes at the last sample.
    let engagedIntervals (samples: (LogTime * bool) seq) : EngagedInterval list = [
        let mutable opened: LogTime option = None
        let mutable last: LogTime option = None
        let mutable previous = false

        for t, v in samples do
            match v, previous, opened with
            | true, false, None -> opened <- Some t
            | false, true, Some s ->
                { Start = s; End = t }
                opened <- None
            | _ -> ()

            previous <- v
            last <- Some t

        match opened, last with
        | Some s, Some l -> { Start = s; End = l }
        | _ -> ()
    ]

    /// Widens each interval by `margin` on both sides and merges overlapping ones, as (rel start, rel end).
    let widen (margin: float) (intervals: EngagedInterval list) : (float * float) list =
        intervals
        |> List.map (fun i -> i.Start.Rel - margin, i.End.Rel + margin)
        |> List.sortBy fst
        |> List.fold
            (fun acc (s, e) ->
                match acc with
                | (ps, pe) :: rest when s <= pe -> (ps, max pe e) :: rest
                | _ -> (s, e) :: acc)
            []
        |> List.rev

    /// Chatter penalty and score of a bit with `toggles` flips.
    let score (toggles: int) : float * float =
        let penalty = max 0.0 (float (toggles - PenaltyStart) * PenaltySlope)
        penalty, float toggles - penalty

    let private nearestSpeed (speeds: (LogTime * float) array) (ns: int64) : float option =
        if speeds.Length = 0 then
            None
        else
            let mutable lo = 0
            let mutable hi = speeds.Length - 1

            while lo < hi do
                let mid = (lo + hi) / 2

                if (fst speeds[mid]).Ns < ns then
                    lo <- mid + 1
                else
                    hi <- mid

            let candidates =
                [ lo - 1; lo ] |> List.filter (fun i -> i >= 0 && i < speeds.Length)

            let best = candidates |> List.minBy (fun i -> abs ((fst speeds[i]).Ns - ns), i)

            Some(snd speeds[best])

    /// Bit flips, rises and falls of each bit over consecutive frames (payloads zero-padded).
    let internal bitCounts (store: FrameStore) (indices: int array) : Dictionary<int, struct (int * int)> =
        let result = Dictionary<int, struct (int * int)>()

        for k in 1 .. indices.Length - 1 do
            let a = store.Payload indices[k - 1]
            let b = store.Payload indices[k]
            let n = max a.Length b.Length

            for byteIndex in 0 .. n - 1 do
                let x = if byteIndex < a.Length then a[byteIndex] else 0uy
                let y = if byteIndex < b.Length then b[byteIndex] else 0uy
                let diff = x ^^^ y

                if diff <> 0uy then
                    for bit in 0..7 do
                        if (diff >>> bit) &&& 1uy = 1uy then
                            let g = byteIndex * 8 + bit

                            let struct (r, f) =
                                match result.TryGetValue g with
                                | true, v -> v
                                | _ -> struct (0, 0)

                            if (y >>> bit) &&& 1uy = 1uy then
                                result[g] <- struct (r + 1, f)
                            else
                                result[g] <- struct (r, f + 1)

        result

    /// Analyses the frames of `files` read through `readFrames`, which calls its argument with
    /// (logMonoTime ns, address, src, payload) for every `can` frame and with the event count.
    let internal analyse
        (settings: CruiseSettings)
        (decoder: SubaruDecoder)
        (dbc: Database)
        (store: FrameStore)
        (firstNs: int64)
        (lastNs: int64)
        (events: int64)
        (files: string list)
        (warnings: string list)
        (truncated: bool)
        : CruiseAnalysis =
        let toTime (ns: int64) : LogTime = {
            Ns = ns
            Abs = float ns / 1e9
            Rel = float (ns - firstNs) / 1e9
        }

        let ofRel (rel: float) : LogTime =
            let ns = firstNs + int64 (Math.Round(rel * 1e9))

            {
                Ns = ns
                Abs = float ns / 1e9
                Rel = rel
            }

        let byKey = store.ByKey()
        let keys = store.Keys

        let counts =
            [
                for k in 0 .. keys.Count - 1 do
                    let struct (a, b) = keys[k]
                    (a, b), int64 byKey[k].Length
            ]
            |> List.sortBy fst

        let busOf (address: uint32) : int option =
            match settings.Bus with
            | Some b -> Some b
            | None ->
                counts
                |> List.filter (fun ((a, _), _) -> a = address)
                |> List.map (fun ((_, b), n) -> b, n)
                |> defaultBus

        let framesOf (address: uint32) (bus: int option) : int array =
            match bus with
            | None -> [||]
            | Some b ->
                let mutable found = -1

                for k in 0 .. keys.Count - 1 do
                    let struct (a, kb) = keys[k]

                    if a = address && kb = b then
                        found <- k

                if found >= 0 then byKey[found] else [||]

        let skipped = Dictionary<(uint32 * int), (int64 * string)>()

        let skip (address: uint32) (bus: int) (e: SubaruDecodeError) =
            let reason =
                match e with
                | SubaruDecodeError.ShortPayload(m, n) -> $"{m}: payload of {n} bytes is too short"
                | SubaruDecodeError.Unreasonable(s, v, accepted) -> $"{s} = {v} outside {accepted}"

            match skipped.TryGetValue((address, bus)) with
            | true, (n, first) -> skipped[(address, bus)] <- (n + 1L, first)
            | _ -> skipped[(address, bus)] <- (1L, reason)

        let busByAddress =
            (targetAddresses @ [ Subaru.DashlightsAddress ])
            |> List.choose (fun a -> busOf a |> Option.map (fun b -> a, b))

        let bus (address: uint32) =
            busByAddress |> List.tryFind (fst >> (=) address) |> Option.map snd

        // Speed samples from Wheel_Speeds.
        let speeds =
            match bus Subaru.WheelSpeedsAddress with
            | None -> [||]
            | Some b -> [|
                for i in framesOf Subaru.WheelSpeedsAddress (Some b) do
                    match Subaru.wheelSpeeds decoder (store.Payload i) with
                    | Ok w -> toTime (store.Time i), w.AverageMph
                    | Error e -> skip Subaru.WheelSpeedsAddress b e
              |]

        let signalBit (address: uint32) (name: string) =
            dbc.TryMessage address
            |> Option.bind (fun m -> m.Signals |> List.tryFind (fun s -> s.Name = name))
            |> Option.bind (fun s -> if s.Length = 1 then Some s.StartBit else None)

        // Edges of decoded booleans: the first decoded frame only initialises.
        let edgesOf
            (address: uint32)
            (decode: int -> Result<'T, SubaruDecodeError>)
            (signals: (string * ('T -> bool)) list)
            : SignalEdge list =
            match bus address with
            | None -> []
            | Some b ->
                let found = ResizeArray<SignalEdge>()
                let mutable previous: 'T option = None

                for i in framesOf address (Some b) do
                    match decode i with
                    | Error e -> skip address b e
                    | Ok state ->
                        match previous with
                        | Some p ->
                            for name, get in signals do
                                if get p <> get state then
                                    let t = toTime (store.Time i)

                                    found.Add {
                                        Time = t
                                        Address = address
                                        Bus = b
                                        Signal = name
                                        Bit = signalBit address name
                                        Rising = get state
                                        SpeedMph = nearestSpeed speeds t.Ns
                                    }
                        | None -> ()

                        previous <- Some state

                List.ofSeq found

        let buttons =
            edgesOf Subaru.CruiseButtonsAddress (fun i -> Subaru.cruiseButtons decoder (store.Payload i)) [
                "Set", _.Set
                "Resume", _.Resume
                "Main", _.Main
            ]

        let presses name =
            buttons |> List.filter (fun e -> e.Signal = name && e.Rising)

        let activations =
            (edgesOf Subaru.CruiseStatusAddress (fun i -> Subaru.cruiseStatus decoder (store.Payload i)) [
                "Cruise_Activated", _.CruiseActivated
            ])
            @ (edgesOf Subaru.EsBrakeAddress (fun i -> Subaru.esBrake decoder (store.Payload i)) [
                "Cruise_Activated", _.CruiseActivated
            ])
            |> List.sortBy (fun e -> e.Time.Ns, e.Address)

        // Brake pedal frames are decoded so bad ones are counted like the others.
        match bus Subaru.BrakePedalAddress with
        | Some b ->
            for i in framesOf Subaru.BrakePedalAddress (Some b) do
                match Subaru.brakePedal decoder (store.Payload i) with
                | Error e -> skip Subaru.BrakePedalAddress b e
                | Ok _ -> ()
        | None -> ()

        let targetEvents = targetSpeedEvents settings.SpeedMin settings.SpeedMax speeds

        let windows, dropped =
            if not settings.Markers then
                [], 0
            else
                match bus Subaru.DashlightsAddress with
                | None -> [], 0
                | Some b ->
                    let changes = ResizeArray()
                    let mutable left = false
                    let mutable right = false

                    for i in framesOf Subaru.DashlightsAddress (Some b) do
                        match Subaru.blinkers decoder (store.Payload i) with
                        | Error e -> skip Subaru.DashlightsAddress b e
                        | Ok s ->
                            if s.Left <> left || s.Right <> right then
                                changes.Add(toTime (store.Time i), s.Left, s.Right, s.Left <> left, s.Right <> right)

                            left <- s.Left
                            right <- s.Right

                    markerWindows
                        settings.MarkerPre
                        settings.MarkerPost
                        settings.MarkerTimeout
                        ofRel
                        (List.ofSeq changes)

        // Activity of every (address, bus) around each window.
        let relOf i = float (store.Time i - firstNs) / 1e9

        let activity = [
            for w in windows ->
                [
                    for k in 0 .. keys.Count - 1 do
                        let inside =
                            byKey[k]
                            |> Array.filter (fun i ->
                                let r = relOf i
                                r >= w.WindowStart.Rel && r <= w.WindowEnd.Rel)

                        if inside.Length >= 2 then
                            let flips = bitCounts store inside
                            let mutable changed = 0

                            for j in 1 .. inside.Length - 1 do
                                if not ((store.Payload inside[j - 1]).SequenceEqual(store.Payload inside[j])) then
                                    changed <- changed + 1

                            if changed > 0 then
                                let struct (a, b) = keys[k]

                                {
                                    Address = a
                                    Bus = b
                                    Messages = inside.Length
                                    Changes = changed
                                    TopBits =
                                        flips
                                        |> Seq.map (fun kv ->
                                            let struct (r, f) = kv.Value
                                            kv.Key, r + f)
                                        |> Seq.sortBy (fun (bit, n) -> -n, bit)
                                        |> Seq.truncate 5
                                        |> List.ofSeq
                                }
                ]
                |> List.sortBy (fun a -> -a.Changes, a.Address, a.Bus)
        ]

        let segmentCounts = [
            if not windows.IsEmpty then
                for k in 0 .. keys.Count - 1 do
                    let mutable pre, win, post = 0, 0, 0
                    let uPre, uWin, uPost = HashSet<string>(), HashSet<string>(), HashSet<string>()

                    for w in windows do
                        let len = w.WindowEnd.Rel - w.WindowStart.Rel

                        for i in byKey[k] do
                            let r = relOf i

                            if r >= w.WindowStart.Rel - len && r < w.WindowStart.Rel then
                                pre <- pre + 1
                                uPre.Add(Convert.ToHexString(store.Payload i)) |> ignore
                            elif r >= w.WindowStart.Rel && r <= w.WindowEnd.Rel then
                                win <- win + 1
                                uWin.Add(Convert.ToHexString(store.Payload i)) |> ignore
                            elif r > w.WindowEnd.Rel && r <= w.WindowEnd.Rel + len then
                                post <- post + 1
                                uPost.Add(Convert.ToHexString(store.Payload i)) |> ignore

                    if pre + win + post > 0 then
                        let struct (a, b) = keys[k]

                        {
                            Address = a
                            Bus = b
                            Pre = pre
                            Window = win
                            Post = post
                            UniquePre = uPre.Count
                            UniqueWindow = uWin.Count
                            UniquePost = uPost.Count
                        }
        ]

        // Engaged intervals from the selected bit.
        let engaged =
            match settings.EngagedBit with
            | None -> []
            | Some(address, bit) ->
                let b =
                    match settings.EngagedBus with
                    | Some b -> Some b
                    | None -> busOf address

                engagedIntervals [
                    for i in framesOf address b -> toTime (store.Time i), Bits.get (store.Payload i) bit
                ]

        let inEngaged =
            let widened = widen settings.EngagedMargin engaged
            fun (rel: float) -> widened |> List.exists (fun (s, e) -> rel >= s && rel <= e)

        let keep (rel: float) =
            not settings.EngagedFilter || settings.EngagedBit.IsNone || inEngaged rel

        let candidates = [
            for address in targetAddresses do
                match bus address with
                | None -> ()
                | Some b ->
                    let frames = framesOf address (Some b) |> Array.filter (fun i -> keep (relOf i))

                    let counts = bitCounts store frames

                    let top =
                        counts
                        |> Seq.map (fun kv ->
                            let struct (r, f) = kv.Value
                            kv.Key, r, f)
                        |> Seq.sortBy (fun (bit, r, f) -> -(r + f), bit)
                        |> Seq.truncate 10

                    for bit, r, f in top do
                        let penalty, s = score (r + f)

                        {
                            Address = address
                            Bus = b
                            Bit = bit
                            Toggles = r + f
                            Rises = r
                            Falls = f
                            Penalty = penalty
                            Score = s
                        }
        ]

        // Checksums and counters of every frame whose DBC message declares them.
        let mutable checkedSums = 0L
        let mutable badCount = 0L
        let bad = ResizeArray<BadChecksum>()
        let mutable checkedCounters = 0L
        let mutable discontinuities = 0L

        for k in 0 .. keys.Count - 1 do
            let struct (a, b) = keys[k]

            match dbc.TryMessage a with
            | None -> ()
            | Some m ->
                // Only the Subaru rule (byte 0 sums the address and the other bytes) is checked;
                // messages with another checksum layout (Steering's byte 4) are left alone.
                let checksum =
                    m.Signals
                    |> List.tryFind (fun s ->
                        s.Name = "CHECKSUM"
                        && s.StartBit = 0
                        && s.Length = 8
                        && s.ByteOrder = ByteOrder.LittleEndian)

                let counter = m.Signals |> List.tryFind (fun s -> s.Name = "COUNTER")
                let mutable previous: uint64 option = None

                for i in byKey[k] do
                    let payload = store.Payload i

                    if
                        checksum.IsSome
                        && payload.Length >= 2
                        && Signal.fits checksum.Value payload.Length
                    then
                        checkedSums <- checkedSums + 1L

                        if not (Checksum.subaruValid a payload) then
                            badCount <- badCount + 1L

                            if bad.Count < 1000 then
                                bad.Add {
                                    Time = toTime (store.Time i)
                                    Address = a
                                    Bus = b
                                    Payload = Convert.ToHexString payload
                                }

                    match counter with
                    | Some c when Signal.fits c payload.Length ->
                        let value = Signal.rawBits c payload
                        checkedCounters <- checkedCounters + 1L

                        match previous with
                        | Some p when not (Checksum.counterFollows c.Length p value) ->
                            discontinuities <- discontinuities + 1L
                        | _ -> ()

                        previous <- Some value
                    | _ -> ()

        {
            Files = files
            FirstNs = firstNs
            LastNs = lastNs
            Events = events
            CanFrames = int64 store.Count
            Speeds = speeds
            SetPresses = presses "Set"
            ResumePresses = presses "Resume"
            MainPresses = presses "Main"
            CruiseActivations = activations |> List.filter _.Rising
            CruiseDeactivations = activations |> List.filter (fun e -> not e.Rising)
            TargetSpeedEvents = targetEvents
            MarkerWindows = windows
            MarkerWindowsDropped = dropped
            WindowActivity = activity
            SegmentCounts = segmentCounts
            Candidates = candidates
            EngagedIntervals = engaged
            MessageCounts = counts
            BusByAddress = busByAddress
            Integrity = {
                FramesChecksumChecked = checkedSums
                BadChecksums = List.ofSeq bad
                BadChecksumCount = badCount
                FramesCounterChecked = checkedCounters
                CounterDiscontinuities = discontinuities
                SkippedFrames = skipped |> Seq.map (fun kv -> kv.Key, kv.Value) |> Seq.sortBy fst |> List.ofSeq
            }
            Warnings = warnings
            Truncated = truncated
        }
