namespace CtsLite.Tools

open System
open System.Collections.Generic
open System.Runtime.InteropServices
open CtsLite.Can

/// Frame counts and distinct payloads of every (address, bus) before, inside and after marker
/// windows, summed over the windows (the distinct payloads as one set per part over all of them).
type internal WindowTotals() =
    let mutable counts = Array.zeroCreate<int>(3 * 256)
    let sets = Dictionary<int, UniquePayloads>()

    member _.Add(key: int, part: int, frames: int) =
        let i = 3 * key + part

        if i >= counts.Length then
            Array.Resize(&counts, max (2 * counts.Length) (i + 1))

        counts[i] <- counts[i] + frames

    /// The distinct payloads of (key, part), created on first use.
    member _.Set(key: int, part: int) : UniquePayloads =
        match sets.TryGetValue(3 * key + part) with
        | true, s -> s
        | _ ->
            let s = UniquePayloads()
            sets[3 * key + part] <- s
            s

    member _.Count(key: int, part: int) =
        let i = 3 * key + part
        if i < counts.Length then counts[i] else 0

    member _.Unique(key: int, part: int) =
        match sets.TryGetValue(3 * key + part) with
        | true, s -> s.Count
        | _ -> 0

    /// Adds another window's totals (counts summed, distinct payloads united).
    member this.AddAll(other: WindowTotals, keys: int) =
        for k in 0 .. keys - 1 do
            for part in 0..2 do
                let n = other.Count(k, part)

                if n > 0 then
                    this.Add(k, part, n)

                match other.TryGetSet(k, part) with
                | Some s -> this.Set(k, part).AddAll s
                | None -> ()

    member _.TryGetSet(key: int, part: int) =
        match sets.TryGetValue(3 * key + part) with
        | true, s -> Some s
        | _ -> None

/// One dashlight (address, bus): its blinker state, the marker windows they make, and the window
/// statistics, each window taken from the look-back ring once the log has passed its end.
type internal DashlightState(tracker: MarkerTracker) =
    member val Left = false with get, set
    member val Right = false with get, set
    member _.Tracker = tracker
    /// Complete windows waiting for the log to pass their post range, with that time.
    member val Due = Queue<struct (MarkerWindow * int64)>()
    member val Windows = ResizeArray<MarkerWindow>()
    member val Activity = ResizeArray<WindowActivity list>()
    member val Totals = WindowTotals()
    /// The partial window of the pending left blinker.
    member val Tentative: MarkerWindow voption = ValueNone with get, set
    /// The pending window's statistics, taken before its frames left the ring (used when the log
    /// ends with the window still pending).
    member val TentativeDone: struct (WindowTotals * WindowActivity list) voption = ValueNone with get, set

/// Edges of one message's decoded flags (Set/Resume/Main, Cruise_Activated).
type internal EdgeState(names: string array) =
    member _.Names = names
    member val Previous = Array.zeroCreate<bool> names.Length
    member val Current = Array.zeroCreate<bool> names.Length
    member val HasPrevious = false with get, set
    /// (ns, signal index, rising).
    member val Found = ResizeArray<struct (int64 * int * bool)>()

/// The frames of a target message kept for `engaged_mode=filter`, whose intervals are known only
/// at the end: time and payload, 8 to 16 bytes a frame.
type internal KeptFrames() =
    member val Times = ResizeArray<int64>()
    member val Offsets = ResizeArray<int>()
    member val Bytes = ResizeArray<byte>()

    member this.Add(ns: int64, payload: ReadOnlySpan<byte>) =
        this.Times.Add ns
        this.Offsets.Add this.Bytes.Count
        CollectionExtensions.AddRange(this.Bytes, payload)

    member this.Payload(i: int) : ReadOnlySpan<byte> =
        let stop =
            if i + 1 < this.Offsets.Count then
                this.Offsets[i + 1]
            else
                this.Bytes.Count

        Span<byte>.op_Implicit(CollectionsMarshal.AsSpan(this.Bytes).Slice(this.Offsets[i], stop - this.Offsets[i]))

/// What the analyzer does with the frames of one (address, bus) as they are read.
type internal KeyRole =
    | Counted
    | Speeds of ResizeArray<struct (int64 * float)>
    | Blinkers of DashlightState
    | ButtonEdges of EdgeState
    /// Cruise_Activated of Cruise_Status, or of ES_Brake when true.
    | ActivationEdges of EdgeState * esBrake: bool
    | BrakePedal

/// The analyzer's state for one (address, bus) of an analysed message.
[<AllowNullLiteral>]
type internal KeyState
    (key: CanKey, role: KeyRole, flips: BitFlips option, kept: KeptFrames option, engaged: EngagedTracker option) =
    member _.Key = key
    member _.Role = role
    member _.Flips = flips
    member _.Kept = kept
    member _.Engaged = engaged
    member val Skipped = 0L with get, set
    member val FirstSkip = "" with get, set

/// The cruise-control analysis in one pass over the log, in memory that does not grow with its
/// length: per (address, bus) counts and running statistics, the analysed messages decoded as
/// they come, and a look-back ring of every frame just long enough for a marker window's before,
/// inside and after ranges (3 × (timeout + pre + post) seconds). Every (address, bus) of an
/// analysed address is followed, as the default bus is known only at the end.
type internal CruiseStream(settings: CruiseSettings, decoder: SubaruDecoder, dbc: Database, integrity: IntegrityCheck) =
    // A time step back of more than this between events is a join of two logs (`cat` of
    // segments), not the jitter of events from different services.
    static let joinStep = 1_000_000_000L
    let ring = new FrameStore()
    let mutable frames = Array.zeroCreate<int64> 256
    let mutable states: KeyState array = Array.zeroCreate 256
    let mutable first = ValueNone
    let mutable last = Int64.MinValue
    let mutable offset = 0L
    let mutable events = 0L
    let joins = ResizeArray<struct (int64 * int64)>()
    let dashlights = ResizeArray<DashlightState>()

    let lookBack =
        int64 (
            (3.0 * (settings.MarkerTimeout + settings.MarkerPre + settings.MarkerPost) + 3.0)
            * 1e9
        )

    let mutable dropCheckAt = 16384

    let firstNs () = ValueOption.defaultValue 0L first

    let time (ns: int64) : LogTime = {
        Ns = ns
        Abs = float ns / 1e9
        Rel = float (ns - firstNs ()) / 1e9
    }

    let nsOf (rel: float) =
        firstNs () + int64 (Math.Round(rel * 1e9))

    let ofRel (rel: float) : LogTime =
        let ns = nsOf rel

        {
            Ns = ns
            Abs = float ns / 1e9
            Rel = rel
        }

    /// When every frame a window's ranges need has been read (plus the join tolerance for late
    /// events).
    let dueOf (w: MarkerWindow) =
        nsOf (w.WindowEnd.Rel + (w.WindowEnd.Rel - w.WindowStart.Rel)) + joinStep

    // Scratch for `takeWindow`, kept between windows: a window's range is a few hundred thousand
    // frames, and fresh index arrays for each would be large-object-heap garbage that only a full
    // collection frees (measured: a 20-minute log's peak grew by tens of MB).
    let mutable grouped = Array.zeroCreate<int> 0
    let mutable starts = Array.zeroCreate<int> 0
    let mutable fill = Array.zeroCreate<int> 0

    let inTimeOrder = {
        new IComparer<int> with
            // Stable: frames of one time keep their log order (indices are in log order).
            member _.Compare(i, j) =
                let c = compare (ring.Time i) (ring.Time j)
                if c <> 0 then c else compare i j
    }

    /// One window over the ring: its before/inside/after counts and distinct payloads into
    /// `totals` (each range as long as the window), and its activity rows.
    let takeWindow (w: MarkerWindow) (totals: WindowTotals) : WindowActivity list =
        let len = w.WindowEnd.Rel - w.WindowStart.Rel
        let a = nsOf (w.WindowStart.Rel - len)
        let b = nsOf w.WindowStart.Rel
        let c = nsOf w.WindowEnd.Rel
        let d = nsOf (w.WindowEnd.Rel + len)
        // The ring is in log order, which is time order for CAN frames up to the join tolerance:
        // a binary search finds the range, a counting sort groups it by key.
        let mutable lo = 0
        let mutable hi = ring.Count

        while lo < hi do
            let mid = (lo + hi) >>> 1

            if ring.Time mid < a - joinStep then
                lo <- mid + 1
            else
                hi <- mid

        let mutable stop = lo

        while stop < ring.Count && ring.Time stop <= d + joinStep do
            stop <- stop + 1

        let keyCount = ring.Keys.Count

        if starts.Length < keyCount + 1 then
            starts <- Array.zeroCreate (2 * (keyCount + 1))
            fill <- Array.zeroCreate starts.Length

        Array.Clear(starts, 0, keyCount + 1)

        for i in lo .. stop - 1 do
            let t = ring.Time i

            if t >= a && t <= d then
                starts[ring.Key i + 1] <- starts[ring.Key i + 1] + 1

        for k in 1..keyCount do
            starts[k] <- starts[k] + starts[k - 1]

        if grouped.Length < starts[keyCount] then
            grouped <- Array.zeroCreate (max starts[keyCount] (2 * grouped.Length))

        Array.blit starts 0 fill 0 (keyCount + 1)

        for i in lo .. stop - 1 do
            let t = ring.Time i

            if t >= a && t <= d then
                let k = ring.Key i
                grouped[fill[k]] <- i
                fill[k] <- fill[k] + 1

        let rows = ResizeArray<WindowActivity>()

        for k in 0 .. keyCount - 1 do
            let first = starts[k]
            let n = starts[k + 1] - first

            if n > 0 then
                let mutable ordered = true

                for j in first + 1 .. first + n - 1 do
                    if ring.Time grouped[j] < ring.Time grouped[j - 1] then
                        ordered <- false

                if not ordered then
                    Array.Sort(grouped, first, n, inTimeOrder)

                let ix = ReadOnlySpan<int>(grouped, first, n)
                let winStart = FrameIndex.lowerBound ring ix b
                let winStop = FrameIndex.upperBound ring ix c
                let before = totals.Set(k, 0)
                let inside = totals.Set(k, 1)
                let after = totals.Set(k, 2)

                for j in 0 .. n - 1 do
                    let part =
                        if j < winStart then before
                        elif j < winStop then inside
                        else after

                    part.Add(ring, ix[j])

                totals.Add(k, 0, winStart)
                totals.Add(k, 1, winStop - winStart)
                totals.Add(k, 2, n - winStop)

                if winStop - winStart >= 2 then
                    let struct (rises, falls, changed) = FrameIndex.bitChanges ring ix winStart winStop

                    if changed > 0 then
                        rows.Add {
                            Address = ring.Keys[k].Address
                            Bus = ring.Keys[k].Bus
                            Messages = winStop - winStart
                            Changes = changed
                            TopBits = FrameIndex.top 5 rises falls
                        }

        rows |> Seq.sortBy (fun a -> -a.Changes, a.Address, a.Bus) |> List.ofSeq

    /// Takes the complete windows whose frames have all been read by `now`, in order.
    let takeDue (d: DashlightState) (now: int64) =
        while d.Due.Count > 0
              && (let struct (_, due) = d.Due.Peek()
                  now > due) do
            let struct (w, _) = d.Due.Dequeue()
            d.Activity.Add(takeWindow w d.Totals)

    let skip (st: KeyState) (e: SubaruDecodeError) =
        if st.Skipped = 0L then
            st.FirstSkip <-
                match e with
                | SubaruDecodeError.ShortPayload(m, n) -> $"{m}: payload of {n} bytes is too short"
                | SubaruDecodeError.Unreasonable(s, v, accepted) -> $"{s} = {v} outside {accepted}"

        st.Skipped <- st.Skipped + 1L

    let edge (e: EdgeState) (ns: int64) =
        if e.HasPrevious then
            for i in 0 .. e.Names.Length - 1 do
                if e.Previous[i] <> e.Current[i] then
                    e.Found.Add(struct (ns, i, e.Current[i]))

        Array.blit e.Current 0 e.Previous 0 e.Current.Length
        e.HasPrevious <- true

    let blinkers (d: DashlightState) (ns: int64) (left: bool) (right: bool) =
        if left <> d.Left || right <> d.Right then
            let before = d.Tracker.Pending

            match d.Tracker.Change(time ns, left, right, left <> d.Left, right <> d.Right) with
            | Some w ->
                d.Windows.Add w
                d.Due.Enqueue(struct (w, dueOf w))
            | None -> ()

            if d.Tracker.Pending <> before then
                d.Tentative <- ValueOption.ofOption d.Tracker.Partial

                d.TentativeDone <- ValueNone

        d.Left <- left
        d.Right <- right

    let stateOf (key: int) (address: uint32) : KeyState =
        let isTarget = CruiseControl.targetAddresses |> List.contains address

        let engaged =
            match settings.EngagedBit with
            | Some b when b.Address = address -> Some(EngagedTracker())
            | _ -> None

        let role =
            if address = Subaru.WheelSpeedsAddress then
                Speeds(ResizeArray())
            elif address = Subaru.DashlightsAddress && settings.Markers then
                let d =
                    DashlightState(
                        MarkerTracker(settings.MarkerPre, settings.MarkerPost, settings.MarkerTimeout, ofRel)
                    )

                dashlights.Add d
                Blinkers d
            elif address = Subaru.CruiseButtonsAddress then
                ButtonEdges(EdgeState [| "Set"; "Resume"; "Main" |])
            elif address = Subaru.CruiseStatusAddress then
                ActivationEdges(EdgeState [| "Cruise_Activated" |], false)
            elif address = Subaru.EsBrakeAddress then
                ActivationEdges(EdgeState [| "Cruise_Activated" |], true)
            elif address = Subaru.BrakePedalAddress then
                BrakePedal
            else
                Counted

        match role, isTarget, engaged with
        | Counted, false, None -> null
        | _ ->
            KeyState(
                ring.Keys[key],
                role,
                (if isTarget && not settings.EngagedFilter then
                     Some(BitFlips())
                 else
                     None),
                (if isTarget && settings.EngagedFilter then
                     Some(KeptFrames())
                 else
                     None),
                engaged
            )

    let step (st: KeyState) (ns: int64) (payload: ReadOnlySpan<byte>) =
        match st.Flips with
        | Some f -> f.Add payload
        | None -> ()

        match st.Kept with
        | Some k -> k.Add(ns, payload)
        | None -> ()

        match st.Engaged, settings.EngagedBit with
        | Some e, Some b -> e.Sample(time ns, Bits.get payload b.Bit)
        | _ -> ()

        match st.Role with
        | Counted -> ()
        | Speeds speeds ->
            match Subaru.wheelSpeeds decoder payload with
            | Ok w -> speeds.Add(struct (ns, w.AverageMph))
            | Error e -> skip st e
        | Blinkers d ->
            match Subaru.blinkers decoder payload with
            | Ok s -> blinkers d ns s.Left s.Right
            | Error e -> skip st e
        | ButtonEdges e ->
            match Subaru.cruiseButtons decoder payload with
            | Ok b ->
                e.Current[0] <- b.Set
                e.Current[1] <- b.Resume
                e.Current[2] <- b.Main
                edge e ns
            | Error x -> skip st x
        | ActivationEdges(e, esBrake) ->
            let activated =
                if esBrake then
                    Subaru.esBrake decoder payload |> Result.map _.CruiseActivated
                else
                    Subaru.cruiseStatus decoder payload |> Result.map _.CruiseActivated

            match activated with
            | Ok a ->
                e.Current[0] <- a
                edge e ns
            | Error x -> skip st x
        | BrakePedal ->
            match Subaru.brakePedal decoder payload with
            | Ok _ -> ()
            | Error e -> skip st e

    /// Keeps the ring to the look-back: every few thousand frames, once the frames older than it
    /// are a quarter of the ring, they go in one move (a few bytes moved per frame, and the ring
    /// stays within 4/3 of the look-back).
    let trimRing (now: int64) =
        if ring.Count >= dropCheckAt then
            let horizon = now - lookBack
            let mutable old = 0

            while old < ring.Count && ring.Time old < horizon do
                old <- old + 1

            if old * 4 >= ring.Count then
                // A pending left blinker's partial window is needed only if the log ends before
                // its right blinker (most complete), so it is taken only when its frames would
                // otherwise go: by then the log is well past its ranges (the look-back is three
                // times the longest window), so every frame of them has been read.
                for d in dashlights do
                    match d.Tentative, d.TentativeDone with
                    | ValueSome w, ValueNone when nsOf (2.0 * w.WindowStart.Rel - w.WindowEnd.Rel) - joinStep < horizon ->
                        let totals = WindowTotals()
                        d.TentativeDone <- ValueSome(struct (totals, takeWindow w totals))
                    | _ -> ()

                ring.DropFirst old

            dropCheckAt <- ring.Count + max 16384 (ring.Count / 4)

    interface IDisposable with
        member _.Dispose() = (ring :> IDisposable).Dispose()

    /// Counts an event of raw time `rawNs` and returns its time on the drive's timeline: a step
    /// back of more than a second starts a joined log, placed right after the one before.
    member _.Event(rawNs: int64) : int64 =
        let mutable ns = rawNs + offset

        if first.IsSome && ns < last - joinStep then
            joins.Add(struct (events, last - ns))
            offset <- offset + (last - ns)
            ns <- last

        if first.IsNone then
            first <- ValueSome ns

        last <- Math.Max(last, ns)
        events <- events + 1L

        for d in dashlights do
            takeDue d ns

        if settings.Markers then
            trimRing ns

        ns

    /// Events counted so far.
    member _.Events = events

    /// One CAN frame of the event at `ns` (the time `Event` returned).
    member _.Frame(ns: int64, address: uint32, bus: int, payload: ReadOnlySpan<byte>) =
        let key = ring.KeyOf(address, bus)

        if key >= frames.Length then
            Array.Resize(&frames, 2 * frames.Length)
            Array.Resize(&states, 2 * states.Length)
            states[key] <- stateOf key address
        elif frames[key] = 0L then
            states[key] <- stateOf key address

        frames[key] <- frames[key] + 1L
        integrity.Check(key, address, bus, ns, payload)

        if settings.Markers then
            ring.Add(ns, key, payload) |> ignore

        match states[key] with
        | null -> ()
        | st -> step st ns payload

    /// The analysis of everything read.
    member _.Finish(files: string list, warnings: string list, truncated: bool) : CruiseAnalysis =
        let keys = ring.Keys
        let firstNs = firstNs ()

        let counts =
            [ for k in 0 .. keys.Count - 1 -> { Key = keys[k]; Frames = frames[k] } ]
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
            (CruiseControl.targetAddresses @ [ Subaru.DashlightsAddress ])
            |> List.choose (fun a -> busOf a |> Option.map (fun b -> { Address = a; Bus = b }))

        let chosen (address: uint32) =
            busByAddress |> List.tryFind (fun k -> k.Address = address) |> Option.map _.Bus

        let stateAt (address: uint32) (bus: int option) : KeyState =
            match bus with
            | None -> null
            | Some b ->
                let mutable found = null

                for k in 0 .. keys.Count - 1 do
                    if keys[k].Address = address && keys[k].Bus = b then
                        found <- states[k]

                found

        let engagedBus =
            match settings.EngagedBit, settings.EngagedBus with
            | Some _, Some b -> Some b
            | Some { Address = address }, None -> busOf address
            | None, _ -> None

        let engaged =
            match settings.EngagedBit with
            | None -> []
            | Some b ->
                match stateAt b.Address engagedBus with
                | null -> []
                | st -> st.Engaged |> Option.map _.Intervals |> Option.defaultValue []

        let keep = CruiseControl.keeps settings engaged

        let candidates = [
            for address in CruiseControl.targetAddresses do
                match chosen address with
                | None -> ()
                | Some b ->
                    let flips =
                        match stateAt address (Some b) with
                        | null -> None
                        | st ->
                            match st.Flips, st.Kept with
                            | Some f, _ -> Some f
                            | None, Some kept ->
                                let f = BitFlips()

                                for i in 0 .. kept.Times.Count - 1 do
                                    if keep (time kept.Times[i]).Rel then
                                        f.Add(kept.Payload i)

                                Some f
                            | None, None -> None

                    match flips with
                    | None -> ()
                    | Some f ->
                        for bit, _ in FrameIndex.top 10 f.Rises f.Falls do
                            let r, fl = f.Rises[bit], f.Falls[bit]
                            let penalty, s = CruiseControl.score (r + fl)

                            {
                                Address = address
                                Bus = b
                                Bit = bit
                                Toggles = r + fl
                                Rises = r
                                Falls = fl
                                Penalty = penalty
                                Score = s
                            }
        ]

        let speedState =
            stateAt Subaru.WheelSpeedsAddress (chosen Subaru.WheelSpeedsAddress)

        let speeds =
            match speedState with
            | null -> [||]
            | st ->
                match st.Role with
                | Speeds s -> [| for struct (ns, mph) in s -> struct (time ns, mph) |]
                | _ -> [||]

        let dash =
            match stateAt Subaru.DashlightsAddress (chosen Subaru.DashlightsAddress) with
            | null -> None
            | st ->
                match st.Role with
                | Blinkers d -> Some d
                | _ -> None

        let windows, dropped, activity, segmentCounts =
            match dash with
            | None -> [], 0, [], []
            | Some d ->
                takeDue d Int64.MaxValue

                match d.Tracker.Partial with
                | Some w ->
                    d.Windows.Add w

                    match d.TentativeDone with
                    | ValueSome(struct (totals, rows)) ->
                        d.Totals.AddAll(totals, keys.Count)
                        d.Activity.Add rows
                    | ValueNone -> d.Activity.Add(takeWindow w d.Totals)
                | None -> ()

                let counts = [
                    if d.Windows.Count > 0 then
                        for k in 0 .. keys.Count - 1 do
                            let t = d.Totals

                            if t.Count(k, 0) + t.Count(k, 1) + t.Count(k, 2) > 0 then
                                {
                                    Address = keys[k].Address
                                    Bus = keys[k].Bus
                                    Pre = t.Count(k, 0)
                                    Window = t.Count(k, 1)
                                    Post = t.Count(k, 2)
                                    UniquePre = t.Unique(k, 0)
                                    UniqueWindow = t.Unique(k, 1)
                                    UniquePost = t.Unique(k, 2)
                                }
                ]

                List.ofSeq d.Windows, d.Tracker.Dropped, List.ofSeq d.Activity, counts

        let signalBit (address: uint32) (name: string) =
            dbc.TryMessage address
            |> Option.bind (fun m -> m.Signals |> List.tryFind (fun s -> s.Name = name))
            |> Option.bind (fun s -> if s.Length = 1 then Some s.StartBit else None)

        let edgesOf (address: uint32) : SignalEdge list =
            match stateAt address (chosen address) with
            | null -> []
            | st ->
                match st.Role with
                | ButtonEdges e
                | ActivationEdges(e, _) -> [
                    for struct (ns, i, rising) in e.Found ->
                        let t = time ns

                        {
                            Time = t
                            Address = address
                            Bus = st.Key.Bus
                            Signal = e.Names[i]
                            Bit = signalBit address e.Names[i]
                            Rising = rising
                            SpeedMph = CruiseControl.nearestSpeed speeds t.Ns
                        }
                  ]
                | _ -> []

        let buttons = edgesOf Subaru.CruiseButtonsAddress

        let activations =
            edgesOf Subaru.CruiseStatusAddress @ edgesOf Subaru.EsBrakeAddress
            |> List.sortBy (fun e -> e.Time.Ns, e.Address)

        let presses name =
            buttons |> List.filter (fun e -> e.Signal = name && e.Rising)

        let skipped = [
            // The target messages are the decoded ones; Dashlights too when markers are on.
            let decoded =
                CruiseControl.targetAddresses
                @ (if settings.Markers then
                       [ Subaru.DashlightsAddress ]
                   else
                       [])

            for address in decoded do
                match stateAt address (chosen address) with
                | null -> ()
                | st when st.Skipped > 0L -> {
                    Key = st.Key
                    Frames = st.Skipped
                    FirstReason = st.FirstSkip
                  }
                | _ -> ()
        ]

        let joinWarnings = [
            for struct (at, back) in joins ->
                $"time steps back {float back / 1e9:F3} s at event {at} (a joined log?): the rest is shifted to follow on, as a new segment"
        ]

        {
            Files = files
            FirstNs = firstNs
            LastNs = Math.Max(last, firstNs)
            Events = events
            CanFrames = Array.sum frames
            Speeds = speeds
            SetPresses = presses "Set"
            ResumePresses = presses "Resume"
            MainPresses = presses "Main"
            CruiseActivations = activations |> List.filter _.Rising
            CruiseDeactivations = activations |> List.filter (fun e -> not e.Rising)
            TargetSpeedEvents = CruiseControl.targetSpeedEvents settings.SpeedMin settings.SpeedMax speeds
            MarkerWindows = windows
            MarkerWindowsDropped = dropped
            WindowActivity = activity
            SegmentCounts = segmentCounts
            Candidates = candidates
            EngagedIntervals = engaged
            EngagedBus = engagedBus
            MessageCounts = counts
            BusByAddress = busByAddress
            Integrity = {
                FramesChecksumChecked = integrity.FramesChecksumChecked
                BadChecksums = [
                    for struct (ns, address, bus, hex) in integrity.Bad ->
                        {
                            Time = time ns
                            Address = address
                            Bus = bus
                            Payload = hex
                        }
                ]
                BadChecksumCount = integrity.BadChecksumCount
                FramesCounterChecked = integrity.FramesCounterChecked
                CounterDiscontinuities = integrity.CounterDiscontinuities
                SkippedFrames = skipped |> List.sortBy (fun s -> s.Key.Address, s.Key.Bus)
            }
            Warnings = warnings @ joinWarnings
            Truncated = truncated
        }
