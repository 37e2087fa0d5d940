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
    /// The bus the engaged bit was read on (None without an engaged bit or frames).
    EngagedBus: int option
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
/// Renting the frame store's arrays: a run stores a few MB of frames, and renting keeps repeated
/// runs (a service, a benchmark) from churning the large-object heap.
module internal Pool =
    let rent<'T> (n: int) : 'T array = Buffers.ArrayPool<'T>.Shared.Rent n
    let give<'T> (a: 'T array) = Buffers.ArrayPool<'T>.Shared.Return a

    let grow<'T> (a: byref<'T array>) (n: int) =
        let larger = rent<'T> n
        Array.Copy(a, larger, a.Length)
        give a
        a <- larger

type internal FrameStore() =
    let mutable times = Pool.rent<int64>(1 <<< 18)
    let mutable keys = Pool.rent<int>(1 <<< 18)
    let mutable offsets = Pool.rent<int>(1 <<< 18)
    let mutable lengths = Pool.rent<byte>(1 <<< 18)
    let mutable words = Pool.rent<uint64>(1 <<< 18)
    let mutable bytes = Pool.rent<byte>(1 <<< 21)
    let mutable count = 0
    let mutable used = 0
    let keyIndex = Dictionary<uint64, int>()
    let shortKeys = Pool.rent<int>(2048 * 256)
    let keyList = ResizeArray<struct (uint32 * int)>()
    // Per key, kept while reading (the reading thread waits on decompression anyway): its frame
    // count, its latest time, and whether its frames arrived in time order.
    let mutable keyFrames = Array.zeroCreate<int> 256
    let mutable keyLast = Array.zeroCreate<int64> 256
    let mutable keyInOrder = Array.zeroCreate<bool> 256
    do Array.Clear shortKeys

    interface IDisposable with
        member _.Dispose() =
            Pool.give times
            Pool.give keys
            Pool.give offsets
            Pool.give lengths
            Pool.give words
            Pool.give bytes
            Pool.give shortKeys

    member _.Count = count
    member _.Keys = keyList
    member _.Time(i: int) = times[i]
    member _.Key(i: int) = keys[i]

    member _.Payload(i: int) =
        ReadOnlySpan<byte>(bytes, offsets[i], int lengths[i])

    /// The payload's length in bytes.
    member _.Length(i: int) = int lengths[i]

    /// The payload's first 8 bytes as one little-endian number (zero-padded), so bit `g` of the
    /// payload (global LSB numbering) is bit `g` of the word; whole for payloads of ≤ 8 bytes.
    member _.Word(i: int) = words[i]

    member _.PayloadArray(i: int) =
        Array.sub bytes offsets[i] (int lengths[i])

    /// The key index of (address, bus), added when new. Standard 11-bit ids go through a direct
    /// table (key + 1, 0 = new), the rest through a dictionary.
    member _.KeyOf(address: uint32, bus: int) : int =
        let add () =
            let i = keyList.Count
            keyIndex[(uint64 address <<< 8) ||| uint64 bus] <- i
            keyList.Add(struct (address, bus))

            if i = keyFrames.Length then
                Array.Resize(&keyFrames, 2 * i)
                Array.Resize(&keyLast, 2 * i)
                Array.Resize(&keyInOrder, 2 * i)

            keyLast[i] <- Int64.MinValue
            keyInOrder[i] <- true
            i

        if address < 2048u then
            let slot = (int address <<< 8) ||| bus

            match shortKeys[slot] with
            | 0 ->
                let i = add ()
                shortKeys[slot] <- i + 1
                i
            | k -> k - 1
        else
            match keyIndex.TryGetValue((uint64 address <<< 8) ||| uint64 bus) with
            | true, i -> i
            | false, _ -> add ()

    member _.Add(ns: int64, key: int, payload: ReadOnlySpan<byte>) : int =
        if
            count = times.Length
            || count = keys.Length
            || count = offsets.Length
            || count = lengths.Length
            || count = words.Length
        then
            let n = count * 2
            Pool.grow &times n
            Pool.grow &keys n
            Pool.grow &offsets n
            Pool.grow &lengths n
            Pool.grow &words n

        if used + payload.Length > bytes.Length then
            Pool.grow &bytes (max (bytes.Length * 2) (used + payload.Length))

        let len = min payload.Length 255
        payload.Slice(0, len).CopyTo(Span<byte>(bytes, used, len))

        words[count] <-
            if len >= 8 then
                Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian payload
            else
                let mutable w = 0UL

                for j in 0 .. len - 1 do
                    w <- w ||| (uint64 payload[j] <<< (8 * j))

                w

        times[count] <- ns
        keys[count] <- key
        keyFrames[key] <- keyFrames[key] + 1

        if ns < keyLast[key] then
            keyInOrder[key] <- false
        else
            keyLast[key] <- ns

        offsets[count] <- used
        lengths[count] <- byte len
        used <- used + len
        count <- count + 1
        count - 1

    /// The frame indices of each key, in time order (log order within one time).
    member _.ByKey() : int array array =
        let result = Array.init keyList.Count (fun k -> Array.zeroCreate<int> keyFrames[k])
        let fill = Array.zeroCreate<int> keyList.Count

        for i in 0 .. count - 1 do
            let k = keys[i]
            result[k][fill[k]] <- i
            fill[k] <- fill[k] + 1

        for k in 0 .. result.Length - 1 do
            if not keyInOrder[k] then
                // Stable: frames of one time keep their log order.
                result[k] <- result[k] |> Array.sortBy (fun i -> times[i])

        result

/// Distinct payloads, exact, without clearing cost: an open-addressing set of (first 8 bytes,
/// length) whose slots count as empty unless stamped with the current generation, so `Reset`
/// is O(1) however many payloads the previous key had. Payloads over 8 bytes go to a string set.
type internal UniquePayloads() =
    let mutable words = Array.zeroCreate<uint64> 1024
    let mutable lengths = Array.zeroCreate<byte> 1024
    let mutable stamps = Array.zeroCreate<int> 1024
    let mutable generation = 1
    let mutable count = 0
    let long = HashSet<string>()

    let slotOf (word: uint64) (length: int) (mask: int) =
        // Fibonacci hashing spreads counters and checksums that differ only in a few bits.
        int (((word ^^^ uint64 length) * 0x9E3779B97F4A7C15UL) >>> 40) &&& mask

    let insert (word: uint64) (length: byte) =
        let mask = words.Length - 1
        let mutable slot = slotOf word (int length) mask
        let mutable searching = true

        while searching do
            if stamps[slot] <> generation then
                stamps[slot] <- generation
                words[slot] <- word
                lengths[slot] <- length
                count <- count + 1
                searching <- false
            elif words[slot] = word && lengths[slot] = length then
                searching <- false
            else
                slot <- (slot + 1) &&& mask

    let grow () =
        let oldWords, oldLengths, oldStamps, oldGeneration =
            words, lengths, stamps, generation

        words <- Array.zeroCreate (oldWords.Length * 2)
        lengths <- Array.zeroCreate (oldWords.Length * 2)
        stamps <- Array.zeroCreate (oldWords.Length * 2)
        generation <- 1
        count <- 0

        for i in 0 .. oldWords.Length - 1 do
            if oldStamps[i] = oldGeneration then
                insert oldWords[i] oldLengths[i]

    member _.Add(store: FrameStore, i: int) =
        let length = store.Length i

        if length <= 8 then
            // At most half full, so probes stay short.
            if count * 2 >= words.Length then
                grow ()

            insert (store.Word i) (byte length)
        else
            long.Add(Convert.ToHexString(store.Payload i)) |> ignore

    member _.Count = count + long.Count

    member _.Clear() =
        generation <- generation + 1
        count <- 0

        if long.Count > 0 then
            long.Clear()

/// What the integrity check keeps per (address, bus): the DBC's checksum and counter signals,
/// what fits the current payload length, and the last counter value.
[<AllowNullLiteral>]
type internal KeyIntegrity(checksum: Signal option, counter: Signal option) =
    member val FitsLength = -1 with get, set
    member val SumFits = false with get, set
    member val CounterFits = false with get, set
    member val HasPrevious = false with get, set
    member val Previous = 0UL with get, set
    member _.Checksum = checksum
    member _.Counter = counter

/// Checksums (Subaru rule: byte 0 sums the address and the other bytes) and counters of every
/// frame whose DBC message declares them, checked as frames are read — the reading thread waits
/// on decompression anyway — in log order per (address, bus). Nothing is allocated per frame.
type internal IntegrityCheck(dbc: Database) =
    let perKey = ResizeArray<KeyIntegrity>()
    let bad = ResizeArray<struct (int64 * uint32 * int * string)>()
    let mutable checkedSums = 0L
    let mutable badCount = 0L
    let mutable checkedCounters = 0L
    let mutable discontinuities = 0L

    member _.FramesChecksumChecked = checkedSums
    member _.BadChecksumCount = badCount
    member _.FramesCounterChecked = checkedCounters
    member _.CounterDiscontinuities = discontinuities

    /// The first 1000 bad frames: (ns, address, bus, payload hex).
    member _.Bad = bad

    /// Checks frame (`key` = its (address, bus) index in the frame store).
    member _.Check(key: int, address: uint32, bus: int, ns: int64, payload: ReadOnlySpan<byte>) =
        while perKey.Count <= key do
            perKey.Add null

        let mutable k = perKey[key]

        if isNull k then
            k <-
                match dbc.TryMessage address with
                | None -> KeyIntegrity(None, None)
                | Some m ->
                    // Only the Subaru rule is checked; messages with another checksum layout
                    // (Steering's byte 4) are left alone.
                    KeyIntegrity(
                        m.Signals
                        |> List.tryFind (fun s ->
                            s.Name = "CHECKSUM"
                            && s.StartBit = 0
                            && s.Length = 8
                            && s.ByteOrder = ByteOrder.LittleEndian),
                        m.Signals |> List.tryFind (fun s -> s.Name = "COUNTER")
                    )

            perKey[key] <- k

        if k.Checksum.IsSome || k.Counter.IsSome then
            let length = payload.Length

            if length <> k.FitsLength then
                k.FitsLength <- length
                k.SumFits <- k.Checksum.IsSome && length >= 2 && Signal.fits k.Checksum.Value length
                k.CounterFits <- k.Counter.IsSome && Signal.fits k.Counter.Value length

            if k.SumFits then
                checkedSums <- checkedSums + 1L

                if not (Checksum.subaruValid address payload) then
                    badCount <- badCount + 1L

                    if bad.Count < 1000 then
                        bad.Add(struct (ns, address, bus, Convert.ToHexString payload))

            if k.CounterFits then
                let c = k.Counter.Value
                let value = Signal.rawBits c payload
                checkedCounters <- checkedCounters + 1L

                if k.HasPrevious && not (Checksum.counterFollows c.Length k.Previous value) then
                    discontinuities <- discontinuities + 1L

                k.HasPrevious <- true
                k.Previous <- value

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

    /// The `n` bits that flipped most (rises + falls), most first, ties to the lower bit; bits
    /// that never flipped are left out. A selection over ints: this runs for every key and window.
    let internal top (n: int) (rises: int array) (falls: int array) : (int * int) list =
        let taken = Array.zeroCreate<bool> rises.Length

        [
            let mutable go = true
            let mutable k = 0

            while go && k < n do
                let mutable best = -1
                let mutable bestFlips = 0

                for bit in 0 .. rises.Length - 1 do
                    let flips = rises[bit] + falls[bit]

                    if not taken[bit] && flips > bestFlips then
                        best <- bit
                        bestFlips <- flips

                if best < 0 then
                    go <- false
                else
                    taken[best] <- true
                    k <- k + 1
                    best, bestFlips
        ]

    /// Rises (0→1) and falls (1→0) of each bit over consecutive frames `indices[first..stop-1]`
    /// (payloads zero-padded), indexed by global LSB bit number, and how many frames differ from
    /// the one before (length or content).
    let internal bitChanges
        (store: FrameStore)
        (indices: int array)
        (first: int)
        (stop: int)
        : struct (int array * int array * int) =
        let mutable longest = 0

        for k in first .. stop - 1 do
            longest <- max longest (store.Length indices[k])

        let rises = Array.zeroCreate<int>(longest * 8)
        let falls = Array.zeroCreate<int>(longest * 8)
        let mutable changed = 0

        for k in first + 1 .. stop - 1 do
            let i = indices[k - 1]
            let j = indices[k]

            if store.Length i <= 8 && store.Length j <= 8 then
                // Only the bits that changed are visited.
                let after = store.Word j
                let mutable diff = store.Word i ^^^ after

                if diff <> 0UL || store.Length i <> store.Length j then
                    changed <- changed + 1

                while diff <> 0UL do
                    let g = Numerics.BitOperations.TrailingZeroCount diff

                    if (after >>> g) &&& 1UL = 1UL then
                        rises[g] <- rises[g] + 1
                    else
                        falls[g] <- falls[g] + 1

                    diff <- diff &&& (diff - 1UL)
            else
                let a = store.Payload i
                let b = store.Payload j
                let n = max a.Length b.Length

                if not (a.SequenceEqual b) then
                    changed <- changed + 1

                for byteIndex in 0 .. n - 1 do
                    let x = if byteIndex < a.Length then a[byteIndex] else 0uy
                    let y = if byteIndex < b.Length then b[byteIndex] else 0uy
                    let diff = x ^^^ y

                    if diff <> 0uy then
                        for bit in 0..7 do
                            if (diff >>> bit) &&& 1uy = 1uy then
                                let g = byteIndex * 8 + bit

                                if (y >>> bit) &&& 1uy = 1uy then
                                    rises[g] <- rises[g] + 1
                                else
                                    falls[g] <- falls[g] + 1

        struct (rises, falls, changed)

    /// The rises and falls of `bitChanges` over all of `indices`.
    let internal bitCounts (store: FrameStore) (indices: int array) : int array * int array =
        let struct (rises, falls, _) = bitChanges store indices 0 indices.Length
        rises, falls

    /// The first position in `indices` (time-ordered frame indices) whose time is ≥ `ns`.
    let internal lowerBound (store: FrameStore) (indices: int array) (ns: int64) : int =
        let mutable lo = 0
        let mutable hi = indices.Length

        while lo < hi do
            let mid = (lo + hi) >>> 1

            if store.Time indices[mid] < ns then
                lo <- mid + 1
            else
                hi <- mid

        lo

    /// The first position in `indices` whose time is > `ns`.
    let internal upperBound (store: FrameStore) (indices: int array) (ns: int64) : int =
        let mutable lo = 0
        let mutable hi = indices.Length

        while lo < hi do
            let mid = (lo + hi) >>> 1

            if store.Time indices[mid] <= ns then
                lo <- mid + 1
            else
                hi <- mid

        lo

    /// Analyses the frames of `files` read through `readFrames`, which calls its argument with
    /// (logMonoTime ns, address, src, payload) for every `can` frame and with the event count.
    let internal analyse
        (settings: CruiseSettings)
        (decoder: SubaruDecoder)
        (dbc: Database)
        (store: FrameStore)
        (integrity: IntegrityCheck)
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

        // Per-key frame indices in time order.
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
                |> ToolSupport.defaultBus

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

            // Decoding runs on several cores.
            lock skipped (fun () ->
                match skipped.TryGetValue((address, bus)) with
                | true, (n, first) -> skipped[(address, bus)] <- (n + 1L, first)
                | _ -> skipped[(address, bus)] <- (1L, reason))

        let busByAddress =
            (targetAddresses @ [ Subaru.DashlightsAddress ])
            |> List.choose (fun a -> busOf a |> Option.map (fun b -> a, b))

        let bus (address: uint32) =
            busByAddress |> List.tryFind (fst >> (=) address) |> Option.map snd

        let relOf i = float (store.Time i - firstNs) / 1e9


        // The engaged bit's bus: given, else the address's bus under the same policy as the rest.
        let engagedBus =
            match settings.EngagedBit, settings.EngagedBus with
            | Some _, Some b -> Some b
            | Some(address, _), None -> busOf address
            | None, _ -> None

        // Engaged intervals and candidate bits, also on another core.
        let candidatesTask =
            Threading.Tasks.Task.Run(fun () ->
                // Engaged intervals from the selected bit.
                let engaged =
                    match settings.EngagedBit with
                    | None -> []
                    | Some(address, bit) ->
                        engagedIntervals [
                            for i in framesOf address engagedBus ->
                                toTime (store.Time i), Bits.get (store.Payload i) bit
                        ]

                let keep = keeps settings engaged

                let candidates = [
                    for address in targetAddresses do
                        match bus address with
                        | None -> ()
                        | Some b ->
                            let frames = framesOf address (Some b) |> Array.filter (fun i -> keep (relOf i))

                            let rises, falls = bitCounts store frames

                            for bit, _ in top 10 rises falls do
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

                engaged, candidates)

        // Speed samples from Wheel_Speeds, on another core while the windows and the activity in
        // them are computed.
        let speedsTask =
            Threading.Tasks.Task.Run(fun () ->
                match bus Subaru.WheelSpeedsAddress with
                | None -> [||]
                | Some b -> [|
                    for i in framesOf Subaru.WheelSpeedsAddress (Some b) do
                        match Subaru.wheelSpeeds decoder (store.Payload i) with
                        | Ok w -> toTime (store.Time i), w.AverageMph
                        | Error e -> skip Subaru.WheelSpeedsAddress b e
                  |])

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

        // Activity of every (address, bus) around each window, found by binary search in each
        // key's time-ordered frames.
        let nsOf (rel: float) = firstNs + int64 (Math.Round(rel * 1e9))

        // Counts and distinct payloads around each window, on another core while the activity
        // inside the windows is computed.
        let segmentCountsTask =
            Threading.Tasks.Task.Run(fun () -> [
                if not windows.IsEmpty then
                    let uPre, uWin, uPost = UniquePayloads(), UniquePayloads(), UniquePayloads()

                    for k in 0 .. keys.Count - 1 do
                        let ix = byKey[k]
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
                            let preStart = lowerBound store ix (nsOf (w.WindowStart.Rel - len))
                            let winStart = lowerBound store ix (nsOf w.WindowStart.Rel)
                            let winStop = upperBound store ix (nsOf w.WindowEnd.Rel)
                            let postStop = upperBound store ix (nsOf (w.WindowEnd.Rel + len))
                            pre <- pre + count preStart winStart uPre
                            win <- win + count winStart winStop uWin
                            post <- post + count winStop postStop uPost

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
            ])


        let topBits (rises: int array, falls: int array) = top 5 rises falls

        let activity = [
            for w in windows ->
                [
                    for k in 0 .. keys.Count - 1 do
                        let ix = byKey[k]
                        let first = lowerBound store ix (nsOf w.WindowStart.Rel)
                        let stop = upperBound store ix (nsOf w.WindowEnd.Rel)

                        if stop - first >= 2 then
                            let struct (rises, falls, changed) = bitChanges store ix first stop

                            if changed > 0 then
                                let struct (a, b) = keys[k]

                                {
                                    Address = a
                                    Bus = b
                                    Messages = stop - first
                                    Changes = changed
                                    TopBits = topBits (rises, falls)
                                }
                ]
                |> List.sortBy (fun a -> -a.Changes, a.Address, a.Bus)
        ]

        let speeds = speedsTask.Result

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

        let engaged, candidates = candidatesTask.Result
        let segmentCounts = segmentCountsTask.Result

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
            EngagedBus = engagedBus
            MessageCounts = counts
            BusByAddress = busByAddress
            Integrity = {
                FramesChecksumChecked = integrity.FramesChecksumChecked
                BadChecksums = [
                    for struct (ns, address, bus, hex) in integrity.Bad ->
                        {
                            Time = toTime ns
                            Address = address
                            Bus = bus
                            Payload = hex
                        }
                ]
                BadChecksumCount = integrity.BadChecksumCount
                FramesCounterChecked = integrity.FramesCounterChecked
                CounterDiscontinuities = integrity.CounterDiscontinuities
                SkippedFrames = skipped |> Seq.map (fun kv -> kv.Key, kv.Value) |> Seq.sortBy fst |> List.ofSeq
            }
            Warnings = warnings
            Truncated = truncated
        }
