namespace CtsLite.Monitors

open System
open System.Collections.Generic
open System.Text.Json.Nodes
open CtsLite.Can
open CtsLite.Capnp
open CtsLite.Logs
open CtsLite.Tools

/// The last value, and the minimum and maximum over a sliding window, of one numeric series:
/// `Slices` slices of the window keep their own min/max, so nothing is kept per sample.
type internal WindowRange(windowNs: int64) =
    static let slices = 20
    let width = max 1L (windowNs / int64 slices)
    let mins = Array.create slices Double.PositiveInfinity
    let maxs = Array.create slices Double.NegativeInfinity
    let mutable head = Int64.MinValue

    member val Last = Double.NaN with get, set
    member val LastNs = Int64.MinValue with get, set
    member val Count = 0L with get, set

    member this.Add(ns: int64, v: float) =
        let slice = ns / width

        if slice > head then
            let from =
                if head = Int64.MinValue then
                    slice - int64 slices + 1L
                else
                    head + 1L

            let mutable s = max from (slice - int64 slices + 1L)

            while s <= slice do
                let i = int (s % int64 slices)
                mins[i] <- Double.PositiveInfinity
                maxs[i] <- Double.NegativeInfinity
                s <- s + 1L

            head <- slice

        if slice > head - int64 slices then
            let i = int (slice % int64 slices)
            mins[i] <- min mins[i] v
            maxs[i] <- max maxs[i] v

        if ns >= this.LastNs then
            this.Last <- v
            this.LastNs <- ns

        this.Count <- this.Count + 1L

    /// (min, max) over the slices of the window that ends at `now` (NaN when none).
    member _.Range(now: int64) : struct (float * float) =
        let current = now / width
        let mutable lo = Double.PositiveInfinity
        let mutable hi = Double.NegativeInfinity
        let mutable s = max (current - int64 slices + 1L) (head - int64 slices + 1L)

        while s <= min current head do
            let i = int (s % int64 slices)
            lo <- min lo mins[i]
            hi <- max hi maxs[i]
            s <- s + 1L

        if lo > hi then
            struct (Double.NaN, Double.NaN)
        else
            struct (lo, hi)

/// `signal_watch`: any DBC signals (per bus they appear on) and log fields as live values — last,
/// min and max over the window, samples, age — the general monitor of a car port.
[<RequireQualifiedAccess>]
module internal SignalWatch =

    let private spec = ParameterSpec.create

    let descriptor: ToolDescriptor = {
        Id = "signal_watch"
        Name = "Signal watch"
        Description =
            "Any DBC signals (MESSAGE.SIGNAL, per bus) and log fields (carState.vEgo) as live values: last, min and max over a sliding window, sample count and age"
        Category = ToolCategory.Monitor
        Parameters = [
            spec "signals" ParameterType.List None "DBC signals as MESSAGE.SIGNAL (message name or 0xID)"
            spec
                "fields"
                ParameterType.List
                None
                "Log fields by path, e.g. carState.vEgo or pandaStates[0].controlsAllowed"
            spec
                "dbc"
                ParameterType.File
                (Some(ParameterValue.File ToolSupport.SubaruDbc))
                "DBC for the signals: an upload id or a path (default: the built-in Subaru global DBC)"
            {
                spec
                    "window_s"
                    ParameterType.Float
                    (Some(ParameterValue.Float 10.0))
                    "Sliding window for min and max, seconds" with
                    Min = Some 0.05
                    Max = Some 3600.0
            }
            {
                spec "bus" ParameterType.Int None "Only this bus for the signals (default: every bus they appear on)" with
                    Min = Some 0.0
                    Max = Some 255.0
            }
        ]
        InputTypes = [ "zmq"; "rlog"; "qlog"; "route" ]
        OutputTypes = [ "json" ]
    }

    let private check (p: ToolParameters) : ParameterError list = [
        if (p.List "signals").IsEmpty && (p.List "fields").IsEmpty then
            {
                Parameter = "signals"
                Detail = "name at least one signal or field"
            }
    ]

    /// One watched DBC signal on one bus.
    type private SignalSeries = {
        Name: string
        Message: DbcMessage
        Signal: Signal
        Bus: int
        Values: WindowRange
    }

    type private FieldSeries = {
        Path: string
        Service: int
        Values: WindowRange
        mutable Text: string
    }

    type private State
        (ctx: MonitorContext, signals: (string * DbcMessage * Signal) list, fields: (string * int) list, bus: int option)
        =
        let layout = ctx.Layout
        let windowNs = int64 (ctx.Parameters.FloatOf "window_s" * 1e9)
        // By address, the signals of that message (a series per bus is added when the bus shows).
        let byAddress = Dictionary<uint32, (string * DbcMessage * Signal) array>()
        let series = Dictionary<struct (uint32 * int), SignalSeries array>()
        let order = ResizeArray<SignalSeries>()

        let fieldSeries =
            fields
            |> List.map (fun (path, service) -> {
                Path = path
                Service = service
                Values = WindowRange windowNs
                Text = null
            })
            |> Array.ofList

        let mutable now = Int64.MinValue

        do
            for name, message, signal in signals do
                let known =
                    match byAddress.TryGetValue message.Id with
                    | true, a -> a
                    | false, _ -> [||]

                byAddress[message.Id] <- Array.append known [| name, message, signal |]

        let seriesOf (address: uint32) (b: int) =
            match series.TryGetValue(struct (address, b)) with
            | true, s -> s
            | false, _ ->
                let made =
                    byAddress[address]
                    |> Array.map (fun (name, message, signal) -> {
                        Name = name
                        Message = message
                        Signal = signal
                        Bus = b
                        Values = WindowRange windowNs
                    })

                series[struct (address, b)] <- made
                order.AddRange made
                made

        let number (v: FieldValue) =
            match v with
            | FieldValue.Bool b -> Some(if b then 1.0 else 0.0)
            | FieldValue.Int i -> Some(float i)
            | FieldValue.UInt u -> Some(float u)
            | FieldValue.Float f -> Some f
            | FieldValue.Enum(_, raw) -> Some(float raw)
            | _ -> None

        let entry (name: string) (kind: string) (values: WindowRange) =
            let o = JsonObject()
            o["name"] <- JsonValue.Create name
            o["kind"] <- JsonValue.Create kind
            let struct (lo, hi) = values.Range now
            o["last"] <- MonitorSupport.number (Some values.Last)
            o["min"] <- MonitorSupport.number (Some lo)
            o["max"] <- MonitorSupport.number (Some hi)
            o["count"] <- JsonValue.Create values.Count

            o["age_s"] <-
                if values.LastNs = Int64.MinValue then
                    null
                else
                    JsonValue.Create(MonitorSupport.seconds (now - values.LastNs))

            o

        interface IMonitorState with
            member _.Step(m: Message, e: StructRef) =
                let ns = int64 (Event.logMonoTime m layout e)
                now <- max now ns
                let which = Event.which m layout e

                if which = layout.CanDiscriminant && byAddress.Count > 0 then
                    let mutable f = CanCursor(m, layout, Event.canBatch m layout e)

                    while f.MoveNext() do
                        let b = int f.Src

                        if byAddress.ContainsKey f.Address && (bus.IsNone || bus.Value = b) then
                            let payload = f.Payload

                            for s in seriesOf f.Address b do
                                if
                                    Signal.fits s.Signal payload.Length
                                    && (s.Signal.Multiplexing = Multiplexing.None
                                        || Signal.isPresent s.Message s.Signal payload)
                                then
                                    s.Values.Add(ns, (Signal.decode s.Signal payload).Physical)

                for s in fieldSeries do
                    if s.Service = which then
                        match FieldPath.read ctx.Schema m layout.Event e s.Path with
                        | Ok v ->
                            match number v, v with
                            | Some x, FieldValue.Enum(name, _) ->
                                s.Values.Add(ns, x)
                                s.Text <- name
                            | Some x, _ -> s.Values.Add(ns, x)
                            | None, FieldValue.Text t ->
                                s.Values.Add(ns, Double.NaN)
                                s.Text <- t
                            | None, _ -> ()
                        | Error _ -> ()

            member _.Snapshot() =
                let values = JsonArray()

                for s in order |> Seq.sortBy (fun s -> s.Name, s.Bus) do
                    let o = entry s.Name "signal" s.Values
                    o.Insert(2, "bus", JsonValue.Create s.Bus)
                    o["unit"] <- JsonValue.Create s.Signal.Unit
                    values.Add o

                for s in fieldSeries do
                    let o = entry s.Path "field" s.Values

                    if not (isNull s.Text) then
                        o["text"] <- JsonValue.Create s.Text

                    values.Add o

                let data = JsonObject()
                data["window_s"] <- JsonValue.Create(float windowNs / 1e9)

                data["log_time_s"] <-
                    if now = Int64.MinValue then
                        null
                    else
                        JsonValue.Create(MonitorSupport.seconds now)

                data["values"] <- values
                data

    let private start (ctx: MonitorContext) : Result<IMonitorState, ToolError> =
        let p = ctx.Parameters
        let signalNames = p.List "signals"

        let dbc =
            if signalNames.IsEmpty then
                Ok None
            else
                ToolSupport.loadDbcWith ctx.ResolveFile "dbc" (p.StrOf "dbc") |> Result.map Some

        match dbc with
        | Error e -> Error e
        | Ok db ->
            let resolved =
                signalNames
                |> List.map (fun name ->
                    match db with
                    | None -> Error "no DBC"
                    | Some db -> SignalRef.resolve db name |> Result.map (fun (m, s) -> name, m, s))

            let fields =
                p.List "fields"
                |> List.map (fun path ->
                    match Event.discriminantOf ctx.Layout (FieldPath.service path) with
                    | Some d -> Ok(path, d)
                    | None -> Error $"'{path}': no service '{FieldPath.service path}' in the schema")

            match
                resolved
                |> List.tryPick (function
                    | Error e -> Some e
                    | Ok _ -> None)
            with
            | Some e -> Error(ToolError.parameter "signals" e)
            | None ->
                match
                    fields
                    |> List.tryPick (function
                        | Error e -> Some e
                        | Ok _ -> None)
                with
                | Some e -> Error(ToolError.parameter "fields" e)
                | None ->
                    let signals = resolved |> List.choose Result.toOption
                    let fields = fields |> List.choose Result.toOption
                    let bus = p.Int "bus" |> Option.map int
                    Ok(State(ctx, signals, fields, bus) :> IMonitorState)

    let monitor: Monitor = {
        Descriptor = descriptor
        Check = check
        Services =
            fun p -> [
                if not (p.List "signals").IsEmpty then
                    "can"
                yield! p.List "fields" |> List.map FieldPath.service |> List.distinct
            ]
        Start = start
    }
