namespace CtsLite.Monitors

open System
open System.Collections.Generic
open System.Text.Json.Nodes
open CtsLite.Can
open CtsLite.Capnp
open CtsLite.Logs
open CtsLite.Tools

/// `hybrid_rx_trace`: which CAN message made panda safety flag RX invalid. The last time each
/// expected (bus, address) was seen is kept as frames pass; when a panda's `safetyRxChecksInvalid`
/// flips, the ages of all of them at that moment are recorded with the flip.
[<RequireQualifiedAccess>]
module internal HybridRxTrace =

    let private spec = ParameterSpec.create

    /// The Subaru hybrid receive checks (the origin's `hybrid_rx_trace.py`): address/bus.
    let defaultExpected = [ "0x119/0"; "0x139/0"; "0x13A/0"; "0x168/1"; "0x226/1"; "0x321/2" ]

    let descriptor: ToolDescriptor = {
        Id = "hybrid_rx_trace"
        Name = "Hybrid RX trace"
        Description =
            "Trace which CAN message makes panda safety flag RX invalid: each panda's safety state, and at every safetyRxChecksInvalid flip the last-seen age of every expected (address, bus)"
        Category = ToolCategory.Monitor
        Parameters = [
            spec
                "expected"
                ParameterType.List
                (Some(ParameterValue.List defaultExpected))
                "Expected messages as address/bus, e.g. 0x13A/0 (the panda's RX checks)"
            {
                spec
                    "max_flips"
                    ParameterType.Int
                    (Some(ParameterValue.Int 100L))
                    "Flips kept per panda (the latest ones); the count covers all" with
                    Min = Some 1.0
                    Max = Some 10000.0
            }
            spec
                "dbc"
                ParameterType.File
                (Some(ParameterValue.File ToolSupport.SubaruDbc))
                "DBC for message names: an upload id or a path (default: the built-in Subaru global DBC)"
        ]
        InputTypes = [ "zmq"; "rlog"; "qlog"; "route" ]
        OutputTypes = [ "json" ]
    }

    /// `0x13A/0` as (address, bus).
    let parseExpected (text: string) : CanKey option =
        match text.Split '/' with
        | [| address; bus |] ->
            match CanId.parse address, Int32.TryParse(bus.Trim()) with
            | Some a, (true, b) when b >= 0 && b <= 255 -> Some { Address = a; Bus = b }
            | _ -> None
        | _ -> None

    let private check (p: ToolParameters) : ParameterError list = [
        for e in p.List "expected" do
            if (parseExpected e).IsNone then
                {
                    Parameter = "expected"
                    Detail = $"'{e}' is not address/bus such as 0x13A/0"
                }
    ]

    type private PandaTrace() =
        member val State: JsonObject = null with get, set
        member val RxChecksInvalid: bool option = None with get, set
        member val Flips = 0L with get, set
        member val Recent = Queue<JsonObject>()

    type private State(ctx: MonitorContext, dbc: Database, expected: CanKey array, maxFlips: int) =
        let layout = ctx.Layout
        let index = Dictionary<uint64, int>()
        let lastSeen = Array.create expected.Length Int64.MinValue
        let pandas = Array.init PandaState.MaxPandas (fun _ -> PandaTrace())
        let pandaReader = PandaState.PandaReader ctx
        let mutable now = Int64.MinValue

        do
            for i in 0 .. expected.Length - 1 do
                index[(uint64 expected[i].Address <<< 8) ||| uint64 expected[i].Bus] <- i

        let nameOf (address: uint32) : JsonNode =
            match dbc.TryMessage address with
            | Some m -> JsonValue.Create m.Name
            | None -> null

        let ages () =
            let list = JsonArray()

            for i in 0 .. expected.Length - 1 do
                let o = JsonObject()
                o["bus"] <- JsonValue.Create expected[i].Bus
                o["address"] <- JsonValue.Create(MonitorSupport.addressText expected[i].Address)
                o["name"] <- nameOf expected[i].Address

                o["age_s"] <-
                    if lastSeen[i] = Int64.MinValue then
                        null
                    else
                        JsonValue.Create(MonitorSupport.seconds (now - lastSeen[i]))

                list.Add o

            list

        interface IMonitorState with
            member _.Step(m: Message, e: StructRef) =
                let ns = int64 (Event.logMonoTime m layout e)
                now <- max now ns

                if Event.which m layout e = layout.CanDiscriminant then
                    let mutable f = CanCursor(m, layout, Event.canBatch m layout e)

                    while f.MoveNext() do
                        match index.TryGetValue((uint64 f.Address <<< 8) ||| uint64 f.Src) with
                        | true, i -> lastSeen[i] <- ns
                        | false, _ -> ()
                else
                    match pandaReader.Read(m, e) with
                    | None -> ()
                    | Some found ->
                        found
                        |> List.iteri (fun i state ->
                            let p = pandas[i]
                            p.State <- state

                            let invalid =
                                match state["safety_rx_checks_invalid"] with
                                | null -> None
                                | v -> Some(v.GetValue<bool>())

                            match p.RxChecksInvalid, invalid with
                            | Some before, Some after when before <> after ->
                                p.Flips <- p.Flips + 1L
                                let flip = JsonObject()
                                flip["log_time_s"] <- JsonValue.Create(MonitorSupport.seconds ns)
                                flip["rx_checks_invalid"] <- JsonValue.Create after
                                flip["safety_rx_invalid"] <- state["safety_rx_invalid"].DeepClone()
                                flip["ages"] <- ages ()
                                p.Recent.Enqueue flip

                                if p.Recent.Count > maxFlips then
                                    p.Recent.Dequeue() |> ignore
                            | _ -> ()

                            p.RxChecksInvalid <- invalid)

            member _.Snapshot() =
                let list = JsonArray()

                for i in 0 .. pandas.Length - 1 do
                    let p = pandas[i]

                    if not (isNull p.State) then
                        let o = p.State.DeepClone().AsObject()
                        o.Insert(0, "index", JsonValue.Create i)
                        o["flips"] <- JsonValue.Create p.Flips
                        let recent = JsonArray()

                        for f in p.Recent do
                            recent.Add(f.DeepClone())

                        o["recent_flips"] <- recent
                        list.Add o

                let data = JsonObject()
                data["pandas"] <- list
                data["expected"] <- ages ()

                data["log_time_s"] <-
                    if now = Int64.MinValue then
                        null
                    else
                        JsonValue.Create(MonitorSupport.seconds now)

                data

    let monitor: Monitor = {
        Descriptor = descriptor
        Check = check
        Services = fun _ -> [ "can"; "pandaStates" ]
        Start =
            fun ctx ->
                let p = ctx.Parameters

                match ToolSupport.loadDbcWith ctx.ResolveFile "dbc" (p.StrOf "dbc") with
                | Error e -> Error e
                | Ok dbc ->
                    let expected =
                        p.List "expected" |> List.choose parseExpected |> List.distinct |> Array.ofList

                    let maxFlips = p.Int "max_flips" |> Option.defaultValue 100L |> int
                    Ok(State(ctx, dbc, expected, maxFlips) :> IMonitorState)
    }
