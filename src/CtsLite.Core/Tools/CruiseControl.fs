namespace CtsLite.Tools

open System
open System.Collections.Generic
open CtsLite.Can
open CtsLite.Logs

/// What the reading pass of the analyzer hands to the analysis: every `can` frame in a store,
/// the integrity checked on the way, and the extent of the log.
type internal CruiseReading = {
    Store: FrameStore
    Integrity: IntegrityCheck
    FirstNs: int64
    LastNs: int64
    Events: int64
    Files: string list
    Warnings: string list
    /// `max_events` stopped the reading early.
    Truncated: bool
}

/// The cruise-control analysis as a function of the log's frames (Subaru global platform).
[<RequireQualifiedAccess>]
module internal CruiseControl =

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

    /// Whether a moment (seconds after the first event) counts under `engaged_mode`: always in
    /// annotate mode or without an engaged bit; in filter mode only inside the widened intervals.
    let keeps (settings: CruiseSettings) (engaged: EngagedInterval list) : float -> bool =
        let widened = widen settings.EngagedMargin engaged

        fun rel ->
            not settings.EngagedFilter
            || settings.EngagedBit.IsNone
            || widened |> List.exists (fun (s, e) -> rel >= s && rel <= e)

    /// Chatter penalty and score of a bit with `toggles` flips.
    let score (toggles: int) : float * float =
        let penalty = max 0.0 (float (toggles - PenaltyStart) * PenaltySlope)
        penalty, float toggles - penalty

    /// The speed of the sample nearest to `ns` (samples in time order; ties to the earlier one).
    let nearestSpeed (speeds: (LogTime * float) array) (ns: int64) : float option =
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

    /// The frames of a reading with the lookups every stage shares: per-key frame indices in
    /// time order, the frame counts and the default-bus rule. Read-only once built, so the stages
    /// can run on several cores.
    type internal AnalysisFrames(reading: CruiseReading, settings: CruiseSettings) =
        let store = reading.Store
        let byKey = store.ByKey()
        let keys = store.Keys

        let counts =
            [
                for k in 0 .. keys.Count - 1 ->
                    {
                        Key = keys[k]
                        Frames = int64 byKey[k].Length
                    }
            ]
            |> List.sortBy (fun c -> c.Key.Address, c.Key.Bus)

        let busOf (address: uint32) : int option =
            match settings.Bus with
            | Some b -> Some b
            | None ->
                counts
                |> List.filter (fun c -> c.Key.Address = address)
                |> List.map (fun c -> c.Key.Bus, c.Frames)
                |> ToolSupport.defaultBus

        let busByAddress =
            (targetAddresses @ [ Subaru.DashlightsAddress ])
            |> List.choose (fun a -> busOf a |> Option.map (fun b -> { Address = a; Bus = b }))

        member _.Store = store
        member _.FirstNs = reading.FirstNs
        /// Frame indices of each key index, in time order.
        member _.ByKey = byKey
        member _.Keys = keys
        member _.Counts = counts
        /// The bus of an address under the default-bus rule (or the forced bus).
        member _.BusOf(address: uint32) = busOf address
        /// The chosen bus of each analysed address.
        member _.BusByAddress = busByAddress

        /// The chosen bus of an analysed address.
        member _.Bus(address: uint32) =
            busByAddress |> List.tryFind (fun k -> k.Address = address) |> Option.map _.Bus

        /// The frame indices of (address, bus) in time order; none without a bus.
        member _.Of(address: uint32, bus: int option) : int array =
            match bus with
            | None -> [||]
            | Some b ->
                let mutable found = -1

                for k in 0 .. keys.Count - 1 do
                    if keys[k].Address = address && keys[k].Bus = b then
                        found <- k

                if found >= 0 then byKey[found] else [||]

        member _.Time(ns: int64) : LogTime = {
            Ns = ns
            Abs = float ns / 1e9
            Rel = float (ns - reading.FirstNs) / 1e9
        }

        member _.OfRel(rel: float) : LogTime =
            let ns = reading.FirstNs + int64 (Math.Round(rel * 1e9))

            {
                Ns = ns
                Abs = float ns / 1e9
                Rel = rel
            }

        member _.NsOf(rel: float) =
            reading.FirstNs + int64 (Math.Round(rel * 1e9))

        member _.RelOf(i: int) =
            float (store.Time i - reading.FirstNs) / 1e9

    /// Frames a stage could not decode, per (address, bus), with the first reason. Each stage keeps
    /// its own (they decode different addresses), so nothing is shared while they run.
    type internal Skips() =
        let skipped = Dictionary<CanKey, int64 * string>()

        member _.Add(address: uint32, bus: int, e: SubaruDecodeError) =
            let key = { Address = address; Bus = bus }

            match skipped.TryGetValue key with
            | true, (n, first) -> skipped[key] <- (n + 1L, first)
            | _ ->
                let reason =
                    match e with
                    | SubaruDecodeError.ShortPayload(m, n) -> $"{m}: payload of {n} bytes is too short"
                    | SubaruDecodeError.Unreasonable(s, v, accepted) -> $"{s} = {v} outside {accepted}"

                skipped[key] <- (1L, reason)

        member _.Entries = skipped |> Seq.map (fun kv -> kv.Key, kv.Value)

    /// Stage: the engaged bit's intervals, and the candidate bits of each analysed address (its
    /// frames kept by `engaged_mode`).
    let internal candidateStage
        (settings: CruiseSettings)
        (frames: AnalysisFrames)
        (engagedBus: int option)
        : EngagedInterval list * CandidateBit list =
        let store = frames.Store

        let engaged =
            match settings.EngagedBit with
            | None -> []
            | Some { Address = address; Bit = bit } ->
                engagedIntervals [
                    for i in frames.Of(address, engagedBus) -> frames.Time(store.Time i), Bits.get (store.Payload i) bit
                ]

        let keep = keeps settings engaged

        let candidates = [
            for address in targetAddresses do
                match frames.Bus address with
                | None -> ()
                | Some b ->
                    let indices =
                        frames.Of(address, Some b) |> Array.filter (fun i -> keep (frames.RelOf i))

                    let rises, falls = FrameIndex.bitCounts store indices

                    for bit, _ in FrameIndex.top 10 rises falls do
                        let r, f = rises[bit], falls[bit]
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

        engaged, candidates

    /// Stage: speed samples (mph) from Wheel_Speeds.
    let internal speedStage (decoder: SubaruDecoder) (frames: AnalysisFrames) : (LogTime * float) array * Skips =
        let skips = Skips()
        let store = frames.Store

        let speeds =
            match frames.Bus Subaru.WheelSpeedsAddress with
            | None -> [||]
            | Some b -> [|
                for i in frames.Of(Subaru.WheelSpeedsAddress, Some b) do
                    match Subaru.wheelSpeeds decoder (store.Payload i) with
                    | Ok w -> frames.Time(store.Time i), w.AverageMph
                    | Error e -> skips.Add(Subaru.WheelSpeedsAddress, b, e)
              |]

        speeds, skips

    /// Stage: marker windows from the blinkers (none when markers are off), with how many pending
    /// windows the timeout dropped.
    let internal markerStage
        (settings: CruiseSettings)
        (decoder: SubaruDecoder)
        (frames: AnalysisFrames)
        : (MarkerWindow list * int) * Skips =
        let skips = Skips()
        let store = frames.Store

        let windows =
            match settings.Markers, frames.Bus Subaru.DashlightsAddress with
            | false, _
            | _, None -> [], 0
            | true, Some b ->
                let changes = ResizeArray()
                let mutable left = false
                let mutable right = false

                for i in frames.Of(Subaru.DashlightsAddress, Some b) do
                    match Subaru.blinkers decoder (store.Payload i) with
                    | Error e -> skips.Add(Subaru.DashlightsAddress, b, e)
                    | Ok s ->
                        if s.Left <> left || s.Right <> right then
                            changes.Add(frames.Time(store.Time i), s.Left, s.Right, s.Left <> left, s.Right <> right)

                        left <- s.Left
                        right <- s.Right

                markerWindows
                    settings.MarkerPre
                    settings.MarkerPost
                    settings.MarkerTimeout
                    frames.OfRel
                    (List.ofSeq changes)

        windows, skips

    /// Stage: frame counts and distinct payloads of every (address, bus) before, inside and after
    /// the windows (each as long as its window), by binary search in each key's frames.
    let internal segmentCountStage (frames: AnalysisFrames) (windows: MarkerWindow list) : SegmentCounts list = [
        if not windows.IsEmpty then
            let store = frames.Store
            let uPre, uWin, uPost = UniquePayloads(), UniquePayloads(), UniquePayloads()

            for k in 0 .. frames.Keys.Count - 1 do
                let ix = frames.ByKey[k]
                let mutable pre, win, post = 0, 0, 0
                uPre.Clear()
                uWin.Clear()
                uPost.Clear()

                let count (fromPos: int) (toPos: int) (unique: UniquePayloads) =
                    for j in fromPos .. toPos - 1 do
                        unique.Add(store, ix[j])

                    toPos - fromPos

                for w in windows do
                    let len = w.WindowEnd.Rel - w.WindowStart.Rel
                    let preStart = FrameIndex.lowerBound store ix (frames.NsOf(w.WindowStart.Rel - len))
                    let winStart = FrameIndex.lowerBound store ix (frames.NsOf w.WindowStart.Rel)
                    let winStop = FrameIndex.upperBound store ix (frames.NsOf w.WindowEnd.Rel)
                    let postStop = FrameIndex.upperBound store ix (frames.NsOf(w.WindowEnd.Rel + len))
                    pre <- pre + count preStart winStart uPre
                    win <- win + count winStart winStop uWin
                    post <- post + count winStop postStop uPost

                if pre + win + post > 0 then
                    {
                        Address = frames.Keys[k].Address
                        Bus = frames.Keys[k].Bus
                        Pre = pre
                        Window = win
                        Post = post
                        UniquePre = uPre.Count
                        UniqueWindow = uWin.Count
                        UniquePost = uPost.Count
                    }
    ]

    /// Stage: per window, the (address, bus) pairs whose payload changed inside it, most changes
    /// first, with their five most active bits.
    let internal windowActivityStage (frames: AnalysisFrames) (windows: MarkerWindow list) : WindowActivity list list = [
        let store = frames.Store

        for w in windows ->
            [
                for k in 0 .. frames.Keys.Count - 1 do
                    let ix = frames.ByKey[k]
                    let first = FrameIndex.lowerBound store ix (frames.NsOf w.WindowStart.Rel)
                    let stop = FrameIndex.upperBound store ix (frames.NsOf w.WindowEnd.Rel)

                    if stop - first >= 2 then
                        let struct (rises, falls, changed) = FrameIndex.bitChanges store ix first stop

                        if changed > 0 then
                            {
                                Address = frames.Keys[k].Address
                                Bus = frames.Keys[k].Bus
                                Messages = stop - first
                                Changes = changed
                                TopBits = FrameIndex.top 5 rises falls
                            }
            ]
            |> List.sortBy (fun a -> -a.Changes, a.Address, a.Bus)
    ]

    /// Stage: edges of the decoded buttons and cruise states (the first decoded frame of each
    /// address only initialises), with the speed nearest to each; brake pedal frames are decoded
    /// too so bad ones are counted like the others.
    let internal signalEdgeStage
        (decoder: SubaruDecoder)
        (dbc: Database)
        (frames: AnalysisFrames)
        (speeds: (LogTime * float) array)
        : (SignalEdge list * SignalEdge list) * Skips =
        let skips = Skips()
        let store = frames.Store

        let signalBit (address: uint32) (name: string) =
            dbc.TryMessage address
            |> Option.bind (fun m -> m.Signals |> List.tryFind (fun s -> s.Name = name))
            |> Option.bind (fun s -> if s.Length = 1 then Some s.StartBit else None)

        let edgesOf
            (address: uint32)
            (decode: int -> Result<'T, SubaruDecodeError>)
            (signals: (string * ('T -> bool)) list)
            : SignalEdge list =
            match frames.Bus address with
            | None -> []
            | Some b ->
                let found = ResizeArray<SignalEdge>()
                let mutable previous: 'T option = None

                for i in frames.Of(address, Some b) do
                    match decode i with
                    | Error e -> skips.Add(address, b, e)
                    | Ok state ->
                        match previous with
                        | Some p ->
                            for name, get in signals do
                                if get p <> get state then
                                    let t = frames.Time(store.Time i)

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

        let activations =
            (edgesOf Subaru.CruiseStatusAddress (fun i -> Subaru.cruiseStatus decoder (store.Payload i)) [
                "Cruise_Activated", _.CruiseActivated
            ])
            @ (edgesOf Subaru.EsBrakeAddress (fun i -> Subaru.esBrake decoder (store.Payload i)) [
                "Cruise_Activated", _.CruiseActivated
            ])
            |> List.sortBy (fun e -> e.Time.Ns, e.Address)

        match frames.Bus Subaru.BrakePedalAddress with
        | Some b ->
            for i in frames.Of(Subaru.BrakePedalAddress, Some b) do
                match Subaru.brakePedal decoder (store.Payload i) with
                | Error e -> skips.Add(Subaru.BrakePedalAddress, b, e)
                | Ok _ -> ()
        | None -> ()

        (buttons, activations), skips

    /// Runs two or three independent stages at once on the calling thread and the pool, and
    /// rethrows a stage's exception as itself (not wrapped in an AggregateException).
    let private together (stages: (unit -> unit) list) =
        try
            Threading.Tasks.Parallel.Invoke(stages |> List.map (fun f -> Action f) |> Array.ofList)
        with :? AggregateException as e when e.InnerExceptions.Count >= 1 ->
            Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw()

    /// The analysis of a reading, in two rounds of independent stages: (candidates, speeds, marker
    /// windows), then (segment counts and window activity of the windows, signal edges with the
    /// speeds). All parallelism of the analyzer is here.
    let internal analyse
        (settings: CruiseSettings)
        (decoder: SubaruDecoder)
        (dbc: Database)
        (reading: CruiseReading)
        : CruiseAnalysis =
        let frames = AnalysisFrames(reading, settings)

        // The engaged bit's bus: given, else the address's bus under the same policy as the rest.
        let engagedBus =
            match settings.EngagedBit, settings.EngagedBus with
            | Some _, Some b -> Some b
            | Some { Address = address }, None -> frames.BusOf address
            | None, _ -> None

        let mutable candidates = [], []
        let mutable speeds = [||], Skips()
        let mutable markers = ([], 0), Skips()

        together [
            fun () -> candidates <- candidateStage settings frames engagedBus
            fun () -> speeds <- speedStage decoder frames
            fun () -> markers <- markerStage settings decoder frames
        ]

        let engaged, candidates = candidates
        let speeds, speedSkips = speeds
        let (windows, dropped), markerSkips = markers
        let mutable segmentCounts = []
        let mutable activity = []
        let mutable edges = ([], []), Skips()

        together [
            fun () -> segmentCounts <- segmentCountStage frames windows
            fun () -> activity <- windowActivityStage frames windows
            fun () -> edges <- signalEdgeStage decoder dbc frames speeds
        ]

        let (buttons, activations), edgeSkips = edges

        let presses name =
            buttons |> List.filter (fun e -> e.Signal = name && e.Rising)

        let integrity = reading.Integrity

        {
            Files = reading.Files
            FirstNs = reading.FirstNs
            LastNs = reading.LastNs
            Events = reading.Events
            CanFrames = int64 frames.Store.Count
            Speeds = speeds
            SetPresses = presses "Set"
            ResumePresses = presses "Resume"
            MainPresses = presses "Main"
            CruiseActivations = activations |> List.filter _.Rising
            CruiseDeactivations = activations |> List.filter (fun e -> not e.Rising)
            TargetSpeedEvents = targetSpeedEvents settings.SpeedMin settings.SpeedMax speeds
            MarkerWindows = windows
            MarkerWindowsDropped = dropped
            WindowActivity = activity
            SegmentCounts = segmentCounts
            Candidates = candidates
            EngagedIntervals = engaged
            EngagedBus = engagedBus
            MessageCounts = frames.Counts
            BusByAddress = frames.BusByAddress
            Integrity = {
                FramesChecksumChecked = integrity.FramesChecksumChecked
                BadChecksums = [
                    for struct (ns, address, bus, hex) in integrity.Bad ->
                        {
                            Time = frames.Time ns
                            Address = address
                            Bus = bus
                            Payload = hex
                        }
                ]
                BadChecksumCount = integrity.BadChecksumCount
                FramesCounterChecked = integrity.FramesCounterChecked
                CounterDiscontinuities = integrity.CounterDiscontinuities
                SkippedFrames =
                    Seq.concat [ speedSkips.Entries; markerSkips.Entries; edgeSkips.Entries ]
                    |> Seq.map (fun (key, (n, reason)) -> {
                        Key = key
                        Frames = n
                        FirstReason = reason
                    })
                    |> Seq.sortBy (fun s -> s.Key.Address, s.Key.Bus)
                    |> List.ofSeq
            }
            Warnings = reading.Warnings
            Truncated = reading.Truncated
        }
