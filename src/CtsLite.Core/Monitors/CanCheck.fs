namespace CtsLite.Monitors

open System
open System.Collections.Generic
open System.Text.Json.Nodes
open CtsLite.Can
open CtsLite.Capnp
open CtsLite.Logs
open CtsLite.Tools

/// Frame rates over a sliding window, without keeping frames: each (bus, address) counts its
/// frames and payload changes in `Buckets` slices of the window; a rate sums the complete slices
/// (the last window up to the current slice), so it lags a slice and never reads a partial one.
/// Fixed memory per key, nothing allocated per frame.
type internal WindowRates(windowNs: int64) =
    static let buckets = 20
    // One slot more than the window's slices: the current (partial) slice has its own.
    static let slots = buckets + 1
    let width = max 1L (windowNs / int64 buckets)
    let keys = Dictionary<uint64, int>()
    let keyList = ResizeArray<CanKey>()
    let mutable totals = Array.zeroCreate<int64> 64
    let mutable last = Array.zeroCreate<int64> 64
    let mutable words = Array.zeroCreate<uint64> 64
    let mutable lengths = Array.zeroCreate<int> 64
    let mutable head = Array.zeroCreate<int64> 64
    let mutable frames = Array.zeroCreate<int>(64 * slots)
    let mutable changes = Array.zeroCreate<int>(64 * slots)
    let mutable now = Int64.MinValue

    let add (address: uint32) (bus: int) =
        let k = keyList.Count
        keys[(uint64 address <<< 8) ||| uint64 bus] <- k
        keyList.Add { Address = address; Bus = bus }

        if k = totals.Length then
            let n = 2 * k
            Array.Resize(&totals, n)
            Array.Resize(&last, n)
            Array.Resize(&words, n)
            Array.Resize(&lengths, n)
            Array.Resize(&head, n)
            Array.Resize(&frames, n * slots)
            Array.Resize(&changes, n * slots)

        head[k] <- Int64.MinValue
        lengths[k] <- -1
        k

    /// The key index of (address, bus), added when new.
    member _.KeyOf(address: uint32, bus: int) : int =
        match keys.TryGetValue((uint64 address <<< 8) ||| uint64 bus) with
        | true, k -> k
        | false, _ -> add address bus

    /// Every (address, bus) seen, by key index.
    member _.Keys: IReadOnlyList<CanKey> = keyList

    /// The latest time seen (ns), or `Int64.MinValue` before any frame.
    member _.Now = now

    /// Counts one frame of key `k` at `ns`.
    member _.Add(k: int, ns: int64, payload: ReadOnlySpan<byte>) =
        if ns > now then
            now <- ns

        let slice = ns / width

        if slice > head[k] then
            // Clear the slices between the key's last one and this one (at most all its slots).
            let from =
                if head[k] = Int64.MinValue then
                    slice - int64 slots + 1L
                else
                    head[k] + 1L

            let mutable s = max from (slice - int64 slots + 1L)

            while s <= slice do
                let i = k * slots + int (s % int64 slots)
                frames[i] <- 0
                changes[i] <- 0
                s <- s + 1L

            head[k] <- slice

        // A frame older than the key's window (out of order by more than a window) still counts
        // in the total, not in the rates.
        let stored = slice > head[k] - int64 slots
        let i = k * slots + int (slice % int64 slots)

        if stored then
            frames[i] <- frames[i] + 1

        let word = PayloadWord.ofSpan payload

        if lengths[k] >= 0 && (word <> words[k] || payload.Length <> lengths[k]) && stored then
            changes[i] <- changes[i] + 1

        words[k] <- word
        lengths[k] <- payload.Length
        totals[k] <- totals[k] + 1L
        last[k] <- max last[k] ns

    member _.Total(k: int) = totals[k]
    member _.Last(k: int) = last[k]

    /// (frames, payload changes) in the window that ends where the current slice begins.
    member _.InWindow(k: int) : struct (int * int) =
        if now = Int64.MinValue then
            struct (0, 0)
        else
            let current = now / width
            let first = max (current - int64 buckets) (head[k] - int64 slots + 1L)
            let stop = min (current - 1L) head[k]
            let mutable f = 0
            let mutable c = 0
            let mutable s = first

            while s <= stop do
                let i = k * slots + int (s % int64 slots)
                f <- f + frames[i]
                c <- c + changes[i]
                s <- s + 1L

            struct (f, c)

/// `can_bus_check` and `can_hybrid_rx_check`: every (bus, address) on the bus over a sliding
/// window — frames, rate, last-seen age, payload-change rate, checksum and counter errors by the
/// DBC's rules — with an expected set whose absence is flagged.
[<RequireQualifiedAccess>]
module internal CanCheck =

    let private spec = ParameterSpec.create

    /// The Subaru messages a port checks first (the origin's `can_bus_check.py` set).
    let busCheckAddresses = [ "0x40"; "0x168"; "0x13C"; "0x240"; "0x321" ]

    /// The Subaru hybrid receive set (`can_hybrid_rx_check.py`).
    let hybridAddresses = [ "0x119"; "0x139"; "0x13A"; "0x168"; "0x226"; "0x321" ]

    let private descriptor (id: string) (name: string) (description: string) (addresses: string list) = {
        Id = id
        Name = name
        Description = description
        Category = ToolCategory.Monitor
        Parameters = [
            {
                spec
                    "window_s"
                    ParameterType.Float
                    (Some(ParameterValue.Float 1.0))
                    "Sliding window for rates and for flagging an expected address missing, seconds" with
                    Min = Some 0.05
                    Max = Some 3600.0
            }
            spec
                "addresses"
                ParameterType.List
                (Some(ParameterValue.List addresses))
                "Expected CAN ids (0x13A or decimal), flagged when not seen within the window"
            spec
                "dbc"
                ParameterType.File
                (Some(ParameterValue.File ToolSupport.SubaruDbc))
                "DBC for message names and checksum/counter rules: an upload id or a path (default: the built-in Subaru global DBC)"
        ]
        InputTypes = [ "zmq"; "rlog"; "qlog"; "route" ]
        OutputTypes = [ "json" ]
    }

    let private check (p: ToolParameters) : ParameterError list = [
        for a in p.List "addresses" do
            if (CanId.parse a).IsNone then
                {
                    Parameter = "addresses"
                    Detail = $"'{a}' is not a CAN id (0x13A or decimal, at most 29 bits)"
                }
    ]

    type private State(ctx: MonitorContext, dbc: Database, expected: uint32 list) =
        let windowNs = int64 (ctx.Parameters.FloatOf "window_s" * 1e9)
        let rates = WindowRates windowNs
        let integrity = IntegrityCheck dbc
        let layout = ctx.Layout
        let mutable events = 0L
        let mutable frameCount = 0L

        interface IMonitorState with
            member _.Step(m: Message, e: StructRef) =
                events <- events + 1L
                let which = Event.which m layout e

                if which = layout.CanDiscriminant then
                    let mutable f = CanCursor(m, layout, Event.canBatch m layout e)
                    let ns = int64 (Event.logMonoTime m layout e)

                    while f.MoveNext() do
                        let bus = int f.Src
                        let k = rates.KeyOf(f.Address, bus)
                        let payload = f.Payload
                        rates.Add(k, ns, payload)
                        integrity.Check(k, f.Address, bus, ns, payload)
                        frameCount <- frameCount + 1L

            member _.Snapshot() =
                let windowS = float windowNs / 1e9
                let now = rates.Now
                let keys = rates.Keys

                let seen =
                    [ for k in 0 .. keys.Count - 1 -> k ]
                    |> List.sortBy (fun k -> keys[k].Address, keys[k].Bus)

                let nameOf (address: uint32) =
                    match dbc.TryMessage address with
                    | Some msg -> JsonValue.Create msg.Name :> JsonNode
                    | None -> null

                let isExpected (address: uint32) = List.contains address expected
                let entries = JsonArray()

                for k in seen do
                    let key = keys[k]
                    let struct (inWindow, changed) = rates.InWindow k
                    let struct (sums, counters) = integrity.KeyErrors k
                    let age = now - rates.Last k
                    let o = JsonObject()
                    o["bus"] <- JsonValue.Create key.Bus
                    o["address"] <- JsonValue.Create(MonitorSupport.addressText key.Address)
                    o["name"] <- nameOf key.Address
                    o["count"] <- JsonValue.Create(rates.Total k)
                    o["window_count"] <- JsonValue.Create inWindow
                    o["rate_hz"] <- JsonValue.Create(Math.Round(float inWindow / windowS, 3))
                    o["age_s"] <- JsonValue.Create(MonitorSupport.seconds age)
                    o["change_rate_hz"] <- JsonValue.Create(Math.Round(float changed / windowS, 3))
                    o["expected"] <- JsonValue.Create(isExpected key.Address)
                    o["missing"] <- JsonValue.Create(isExpected key.Address && age > windowNs)
                    o["checksum_errors"] <- JsonValue.Create sums
                    o["counter_errors"] <- JsonValue.Create counters
                    entries.Add o

                for address in expected do
                    if not (keys |> Seq.exists (fun k -> k.Address = address)) then
                        let o = JsonObject()
                        o["bus"] <- null
                        o["address"] <- JsonValue.Create(MonitorSupport.addressText address)
                        o["name"] <- nameOf address
                        o["count"] <- JsonValue.Create 0L
                        o["window_count"] <- JsonValue.Create 0
                        o["rate_hz"] <- JsonValue.Create 0.0
                        o["age_s"] <- null
                        o["change_rate_hz"] <- JsonValue.Create 0.0
                        o["expected"] <- JsonValue.Create true
                        o["missing"] <- JsonValue.Create true
                        o["checksum_errors"] <- JsonValue.Create 0L
                        o["counter_errors"] <- JsonValue.Create 0L
                        entries.Add o

                let data = JsonObject()
                data["window_s"] <- JsonValue.Create windowS

                data["log_time_s"] <-
                    if now = Int64.MinValue then
                        null
                    else
                        JsonValue.Create(MonitorSupport.seconds now)

                data["events"] <- JsonValue.Create events
                data["frames"] <- JsonValue.Create frameCount
                data["addresses"] <- entries
                data

    let private start (ctx: MonitorContext) : Result<IMonitorState, ToolError> =
        let p = ctx.Parameters

        match ToolSupport.loadDbcWith ctx.ResolveFile "dbc" (p.StrOf "dbc") with
        | Error e -> Error e
        | Ok dbc ->
            let expected = p.List "addresses" |> List.choose CanId.parse |> List.distinct

            Ok(State(ctx, dbc, expected) :> IMonitorState)

    let private monitor (d: ToolDescriptor) : Monitor = {
        Descriptor = d
        Check = check
        Services = fun _ -> [ "can" ]
        Start = start
    }

    /// `can_bus_check`.
    let busCheck: Monitor =
        monitor (
            descriptor
                "can_bus_check"
                "CAN bus check"
                "Every (bus, address) on the bus over a sliding window: frame count, rate, last-seen age, payload-change rate, checksum and counter errors; the expected addresses flagged when missing"
                busCheckAddresses
        )

    /// `can_hybrid_rx_check`.
    let hybridRxCheck: Monitor =
        monitor (
            descriptor
                "can_hybrid_rx_check"
                "CAN hybrid RX check"
                "The CAN bus check with the Subaru hybrid receive set expected (Steering_Torque, Brake_Pedal, Wheel_Speeds, Throttle_Hybrid, Brake_Hybrid, ES_DashStatus)"
                hybridAddresses
        )
