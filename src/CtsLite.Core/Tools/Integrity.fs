namespace CtsLite.Tools

open System
open System.Collections.Generic
open CtsLite.Can
open CtsLite.Logs

/// What the integrity check keeps per (address, bus): the DBC's checksum and counter signals,
/// what fits the current payload length, and the last counter value.
[<AllowNullLiteral>]
type internal KeyIntegrity(checksum: Signal option, counter: Signal option) =
    member val FitsLength = -1 with get, set
    member val SumFits = false with get, set
    member val CounterFits = false with get, set
    member val HasPrevious = false with get, set
    member val Previous = 0UL with get, set
    member val BadSums = 0L with get, set
    member val CounterBreaks = 0L with get, set
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

    /// Bad checksums and counter breaks of one key so far.
    member _.KeyErrors(key: int) : struct (int64 * int64) =
        if key < perKey.Count && not (isNull perKey[key]) then
            struct (perKey[key].BadSums, perKey[key].CounterBreaks)
        else
            struct (0L, 0L)

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
                    k.BadSums <- k.BadSums + 1L

                    if bad.Count < 1000 then
                        bad.Add(struct (ns, address, bus, Convert.ToHexString payload))

            if k.CounterFits then
                let c = k.Counter.Value
                let value = Signal.rawBits c payload
                checkedCounters <- checkedCounters + 1L

                if k.HasPrevious && not (Checksum.counterFollows c.Length k.Previous value) then
                    discontinuities <- discontinuities + 1L
                    k.CounterBreaks <- k.CounterBreaks + 1L

                k.HasPrevious <- true
                k.Previous <- value
