namespace CtsLite.Tools

open System
open System.Collections.Generic
open CtsLite.Can
open CtsLite.Logs

/// Marker windows one blinker change at a time (left on opens a pending window, right on within
/// the timeout closes it), so windows are known while the log is read.
type internal MarkerTracker(pre: float, post: float, timeout: float, toTime: float -> LogTime) =
    let mutable pending: LogTime option = None
    let mutable dropped = 0

    let make (start: LogTime) (stop: LogTime) partial = {
        Start = start
        Stop = stop
        WindowStart = toTime (max 0.0 (start.Rel - pre))
        WindowEnd = toTime (stop.Rel + post)
        Partial = partial
    }

    /// The left-on time of the window waiting for its right blinker.
    member _.Pending = pending
    /// Pending windows the timeout dropped.
    member _.Dropped = dropped

    /// The window this change completes, if it completes one.
    member _.Change(t: LogTime, left: bool, right: bool, leftChanged: bool, rightChanged: bool) : MarkerWindow option =
        if leftChanged && left then
            pending <- Some t
            None
        else
            match pending with
            | None -> None
            | Some start when t.Rel - start.Rel > timeout ->
                pending <- None
                dropped <- dropped + 1
                None
            | Some start when rightChanged && right ->
                pending <- None
                Some(make start t false)
            | Some _ -> None

    /// The partial window of a left blinker still waiting at the end of the log.
    member _.Partial: MarkerWindow option =
        pending |> Option.map (fun start -> make start start true)

/// Engaged intervals of one bit one sample at a time: 0→1 opens, 1→0 closes, an open interval
/// closes at the last sample.
type internal EngagedTracker() =
    let found = ResizeArray<EngagedInterval>()
    let mutable opened: LogTime voption = ValueNone
    let mutable last: LogTime voption = ValueNone
    let mutable previous = false

    member _.Sample(t: LogTime, v: bool) =
        match v, previous, opened with
        | true, false, ValueNone -> opened <- ValueSome t
        | false, true, ValueSome s ->
            found.Add { Start = s; End = t }
            opened <- ValueNone
        | _ -> ()

        previous <- v
        last <- ValueSome t

    member _.Intervals: EngagedInterval list = [
        yield! found

        match opened, last with
        | ValueSome s, ValueSome l -> { Start = s; End = l }
        | _ -> ()
    ]

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
    let targetSpeedEvents (lo: float) (hi: float) (samples: struct (LogTime * float) array) : TargetSpeedEvent list = [
        let mutable i = 0

        while i < samples.Length do
            let struct (t, v) = samples[i]

            if v >= lo && v <= hi then
                let mutable j = i
                let mutable mn = v
                let mutable mx = v

                while j + 1 < samples.Length
                      && (let struct (_, w) = samples[j + 1]
                          w >= lo && w <= hi) do
                    j <- j + 1
                    let struct (_, w) = samples[j]
                    mn <- min mn w
                    mx <- max mx w

                let atEnd = j + 1 >= samples.Length

                let endTime =
                    let struct (t, _) = if atEnd then samples[j] else samples[j + 1]
                    t

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
        let tracker = MarkerTracker(pre, post, timeout, toTime)

        let windows = [
            for t, left, right, leftChanged, rightChanged in changes do
                yield! tracker.Change(t, left, right, leftChanged, rightChanged) |> Option.toList

            yield! tracker.Partial |> Option.toList
        ]

        windows, tracker.Dropped

    /// Engaged intervals of one bit from (time, value) samples: 0→1 opens, 1→0 closes, an open
    /// interval closes at the last sample.
    let engagedIntervals (samples: (LogTime * bool) seq) : EngagedInterval list =
        let tracker = EngagedTracker()

        for t, v in samples do
            tracker.Sample(t, v)

        tracker.Intervals

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
    let nearestSpeed (speeds: struct (LogTime * float) array) (ns: int64) : float option =
        if speeds.Length = 0 then
            None
        else
            let mutable lo = 0
            let mutable hi = speeds.Length - 1

            while lo < hi do
                let mid = (lo + hi) / 2

                let struct (t, _) = speeds[mid]

                if t.Ns < ns then lo <- mid + 1 else hi <- mid

            let candidates =
                [ lo - 1; lo ] |> List.filter (fun i -> i >= 0 && i < speeds.Length)

            let best =
                candidates
                |> List.minBy (fun i ->
                    let struct (t, _) = speeds[i]
                    abs (t.Ns - ns), i)

            let struct (_, mph) = speeds[best]
            Some mph
