namespace CtsLite.Monitors

open System
open System.Text.Json.Nodes
open CtsLite.Capnp
open CtsLite.Logs
open CtsLite.Tools

/// `panda_state`: each panda's safety state as `pandaStates` reports it (10 Hz on a device), and
/// whether openpilot is engaged (`selfdriveState.enabled`, `controlsState.enabled` in older eras).
[<RequireQualifiedAccess>]
module internal PandaState =

    /// The fields of one panda, as (JSON name, field of PandaState).
    let private fields = [
        "safety_model", "safetyModel"
        "safety_param", "safetyParam"
        "alternative_experience", "alternativeExperience"
        "controls_allowed", "controlsAllowed"
        "safety_rx_invalid", "safetyRxInvalid"
        "safety_rx_checks_invalid", "safetyRxChecksInvalid"
        "ignition_line", "ignitionLine"
        "ignition_can", "ignitionCan"
    ]

    /// The most pandas one device has (a comma 3X has one, older setups up to three).
    [<Literal>]
    let MaxPandas = 4

    let descriptor: ToolDescriptor = {
        Id = "panda_state"
        Name = "Panda state"
        Description =
            "Each panda's safety model and parameter, alternative experience, controlsAllowed, RX-invalid count, RX-checks flag and ignition, and whether openpilot is engaged, at every update"
        Category = ToolCategory.Monitor
        Parameters = []
        InputTypes = [ "zmq"; "rlog"; "qlog"; "route" ]
        OutputTypes = [ "json" ]
    }

    /// A field value as JSON (enums by name, as `capnp convert` prints them).
    let internal json (v: FieldValue) : JsonNode =
        match v with
        | FieldValue.Bool b -> JsonValue.Create b
        | FieldValue.Int i -> JsonValue.Create i
        | FieldValue.UInt u -> JsonValue.Create u
        | FieldValue.Float f when Double.IsFinite f -> JsonValue.Create f
        | FieldValue.Text t -> JsonValue.Create t
        | FieldValue.Enum(name, _) -> JsonValue.Create name
        | _ -> null

    /// A field of the event by path (`Missing` when absent or damaged).
    let internal read (ctx: MonitorContext) (m: Message) (e: StructRef) (path: string) =
        match FieldPath.read ctx.Schema m ctx.Layout.Event e path with
        | Ok v -> v
        | Error _ -> FieldValue.Missing

    /// One panda's fields at `prefix` (`pandaStates[0]`), or None when there is none.
    let internal readPanda (ctx: MonitorContext) (m: Message) (e: StructRef) (prefix: string) : JsonObject option =
        match read ctx m e (prefix + ".safetyModel") with
        | FieldValue.Missing -> None
        | _ ->
            let o = JsonObject()

            for name, field in fields do
                o[name] <- json (read ctx m e (prefix + "." + field))

            Some o

    /// Reads the pandas of the events that carry them, the services looked up once.
    type internal PandaReader(ctx: MonitorContext) =
        let discriminant name =
            Event.discriminantOf ctx.Layout name |> Option.defaultValue -1

        let pandaStates = discriminant "pandaStates"
        let legacy = discriminant "pandaStateDEPRECATED"

        /// Every panda of a `pandaStates` event (or the single one of an older log's
        /// `pandaState`), in index order; None for other events.
        member _.Read(m: Message, e: StructRef) : JsonObject list option =
            let which = Event.which m ctx.Layout e

            if which = pandaStates then
                let rec from i =
                    if i >= MaxPandas then
                        []
                    else
                        match readPanda ctx m e $"pandaStates[{i}]" with
                        | Some o -> o :: from (i + 1)
                        | None -> []

                Some(from 0)
            elif which = legacy then
                Some(readPanda ctx m e "pandaStateDEPRECATED" |> Option.toList)
            else
                None

    type private State(ctx: MonitorContext) =
        let layout = ctx.Layout
        let pandas = Array.create<JsonObject> MaxPandas null
        let mutable updates = 0L
        let mutable enabled: JsonNode = null
        let mutable last = Int64.MinValue

        let discriminant name =
            Event.discriminantOf layout name |> Option.defaultValue -1

        let selfdrive = discriminant "selfdriveState"
        let controls = discriminant "controlsState"
        let read = read ctx
        let reader = PandaReader ctx

        interface IMonitorState with
            member _.Step(m: Message, e: StructRef) =
                let which = Event.which m layout e
                let ns = int64 (Event.logMonoTime m layout e)

                match reader.Read(m, e) with
                | Some found ->
                    // Fewer pandas than before (one unplugged): the rest are gone.
                    for i in 0 .. MaxPandas - 1 do
                        pandas[i] <- List.tryItem i found |> Option.toObj

                    updates <- updates + 1L
                    last <- ns
                | None ->

                    if which = selfdrive then
                        enabled <- json (read m e "selfdriveState.enabled")
                    elif which = controls then
                        match read m e "controlsState.enabled" with
                        | FieldValue.Missing -> ()
                        | v -> enabled <- json v

            member _.Snapshot() =
                let list = JsonArray()

                for i in 0 .. MaxPandas - 1 do
                    match pandas[i] with
                    | null -> ()
                    | o ->
                        let copy = o.DeepClone().AsObject()
                        copy.Insert(0, "index", JsonValue.Create i)
                        list.Add copy

                let data = JsonObject()
                data["pandas"] <- list
                data["enabled"] <- if isNull enabled then null else enabled.DeepClone()
                data["updates"] <- JsonValue.Create updates

                data["log_time_s"] <-
                    if last = Int64.MinValue then
                        null
                    else
                        JsonValue.Create(MonitorSupport.seconds last)

                data

    let monitor: Monitor = {
        Descriptor = descriptor
        Check = fun _ -> []
        Services = fun _ -> [ "pandaStates"; "selfdriveState"; "controlsState" ]
        Start = fun ctx -> Ok(State ctx :> IMonitorState)
    }
