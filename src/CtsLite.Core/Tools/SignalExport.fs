namespace CtsLite.Tools

open System
open System.Collections.Generic
open System.Globalization
open System.Text.Json.Nodes
open CtsLite.Can
open CtsLite.Capnp
open CtsLite.Logs
open FsToolkit.ErrorHandling

/// `signal-export`: DBC signals and log fields in one time-aligned table (zero-order hold).
[<RequireQualifiedAccess>]
module internal SignalExport =

    let private spec = ParameterSpec.create

    let descriptor: ToolDescriptor = {
        Id = "signal-export"
        Name = "Signal export"
        Description =
            "Any DBC signals (MESSAGE.SIGNAL) and log fields (carState.vEgo) in one time-aligned table: each column holds its latest value (zero-order hold) at a fixed rate or at one column's own timestamps; CSV or JSON lines."
        Category = ToolCategory.Exporter
        Parameters = [
            spec
                "dbc"
                ParameterType.File
                None
                "DBC for the signals: an upload id or a path (subaru_global_2017_generated.dbc is built in)"
            spec "signals" ParameterType.List None "DBC signals as MESSAGE.SIGNAL (message name or 0xID)"
            spec
                "fields"
                ParameterType.List
                None
                "Log fields by path, e.g. carState.vEgo or pandaStates[0].controlsAllowed"
            {
                spec "rate_hz" ParameterType.Float None "Output rate in Hz (default 10 when align_to is not given)" with
                    Min = Some 0.001
                    Max = Some 1000.0
            }
            spec "align_to" ParameterType.Str None "One of the signals or fields: rows at its own timestamps"
            {
                spec "format" ParameterType.Str (Some(ParameterValue.Str "csv")) "csv or jsonl" with
                    Choices = [ "csv"; "jsonl" ]
            }
            {
                spec
                    "bus"
                    ParameterType.Int
                    None
                    "Bus of the signals (default per message: most frames, receive buses first)" with
                    Min = Some 0.0
                    Max = Some 255.0
            }
        ]
        InputTypes = [ "rlog"; "qlog"; "route" ]
        OutputTypes = [ "csv"; "jsonl" ]
    }

    /// The most rows one export may write.
    [<Literal>]
    let MaxRows = 5_000_000L

    let private check (p: ToolParameters) : ParameterError list = [
        let signals = p.List "signals"
        let fields = p.List "fields"

        if signals.IsEmpty && fields.IsEmpty then
            {
                Parameter = "signals"
                Detail = "name at least one signal or field"
            }

        if not signals.IsEmpty && (p.Str "dbc").IsNone then
            {
                Parameter = "dbc"
                Detail = "is needed for signals"
            }

        for s in signals do
            if s.IndexOf '.' <= 0 || s.EndsWith "." then
                {
                    Parameter = "signals"
                    Detail = $"'{s}' is not MESSAGE.SIGNAL"
                }

        match p.Str "align_to", p.Float "rate_hz" with
        | Some _, Some _ -> {
            Parameter = "align_to"
            Detail = "give either align_to or rate_hz, not both"
          }
        | Some a, None when not (List.contains a signals || List.contains a fields) -> {
            Parameter = "align_to"
            Detail = $"'{a}' is not one of the signals or fields"
          }
        | _ -> ()
    ]

    /// Zero-order hold: for each grid time (ns, ascending), the latest sample at or before it.
    let hold (grid: int64 array) (samples: (int64 * Cell) array) : Cell array =
        let result = Array.create grid.Length Cell.Empty
        let mutable j = -1

        for i in 0 .. grid.Length - 1 do
            while j + 1 < samples.Length && fst samples[j + 1] <= grid[i] do
                j <- j + 1

            if j >= 0 then
                result[i] <- snd samples[j]

        result

    let private fieldCell (v: FieldValue) : Cell =
        match v with
        | FieldValue.Missing
        | FieldValue.Void -> Cell.Empty
        | FieldValue.Bool b -> Cell.I(if b then 1L else 0L)
        | FieldValue.Int i -> Cell.I i
        | FieldValue.UInt u ->
            if u <= uint64 Int64.MaxValue then
                Cell.I(int64 u)
            else
                Cell.F(float u)
        | FieldValue.Float f -> Cell.F f
        | FieldValue.Text t -> Cell.S t
        | FieldValue.Data d -> Cell.S(Convert.ToHexString d)
        | FieldValue.Enum(name, _) -> Cell.S name
        | FieldValue.Json j -> Cell.S j

    let private run (ctx: ToolContext) : Result<ToolOutput, ToolError> =
        let p = ctx.Parameters
        let signalNames = p.List "signals"
        let fieldPaths = p.List "fields"
        let schema = Schema.cereal ()
        let layout = LogInput.layout ()

        let dbc =
            match p.Str "dbc" with
            | None -> Ok None
            | Some d -> ToolSupport.loadDbc ctx "dbc" d |> Result.map Some

        let resolveSignal (db: Database) (name: string) =
            SignalRef.resolve db name |> Result.map (fun (m, s) -> name, m, s)

        let fieldServices =
            fieldPaths
            |> List.map (fun f -> f, FieldPath.service f, Event.discriminantOf layout (FieldPath.service f))

        match dbc, fieldServices |> List.tryFind (fun (_, _, d) -> d.IsNone) with
        | Error e, _ -> Error e
        | _, Some(f, service, _) -> Error(ToolError.parameter "fields" $"'{f}': no service '{service}' in the schema")
        | Ok db, None ->
            let signals =
                match db with
                | None -> Ok []
                | Some db -> signalNames |> List.traverseResultM (resolveSignal db)

            match signals, LogInput.files ctx with
            | Error e, _ -> Error(ToolError.parameter "signals" e)
            | _, Error e -> Error e
            | Ok signals, Ok files ->
                // Signal samples per (signal index, bus), so the bus can be chosen after the pass.
                let signalSamples = Dictionary<struct (int * int), ResizeArray<int64 * Cell>>()

                let fieldSamples =
                    fieldPaths |> List.map (fun _ -> ResizeArray<int64 * Cell>()) |> Array.ofList

                let byId =
                    signals |> List.indexed |> List.groupBy (fun (_, (_, m, _)) -> m.Id) |> dict

                let fieldList =
                    fieldServices |> List.map (fun (f, _, d) -> f, d.Value) |> Array.ofList

                let mutable fieldError = None
                let mutable first = None
                let mutable last = 0L

                let outcome =
                    LogInput.iter ctx files 0.0 80.0 (fun reader ->
                        let m = reader.Message
                        let e = reader.Event
                        let ns = int64 (Event.logMonoTime m layout e)

                        if first.IsNone then
                            first <- Some ns

                        last <- max last ns
                        let which = Event.which m layout e

                        if which = layout.CanDiscriminant && byId.Count > 0 then
                            let mutable c = CanCursor(m, layout, Event.canBatch m layout e)

                            while c.MoveNext() do
                                match byId.TryGetValue c.Address with
                                | true, wanted ->
                                    for i, (_, message, signal) in wanted do
                                        let payload = c.Payload

                                        if DecodePlan.present message signal payload then
                                            let key = struct (i, int c.Src)

                                            let list =
                                                match signalSamples.TryGetValue key with
                                                | true, l -> l
                                                | false, _ ->
                                                    let l = ResizeArray()
                                                    signalSamples[key] <- l
                                                    l

                                            list.Add((ns, Cell.F (Signal.decode signal payload).Physical))
                                | false, _ -> ()

                        for k in 0 .. fieldList.Length - 1 do
                            let path, d = fieldList[k]

                            if which = d && fieldError.IsNone then
                                match FieldPath.read schema m layout.Event e path with
                                | Ok v -> fieldSamples[k].Add((ns, fieldCell v))
                                | Error err -> fieldError <- Some(path, err)

                        fieldError.IsNone)

                match outcome, fieldError with
                | Error e, _ -> Error e
                | _, Some(path, e) -> Error(ToolError.parameter "fields" $"'{path}': {DecodeError.describe e}")
                | Ok warnings, None ->
                    let forcedBus = p.Int "bus" |> Option.map int

                    let signalColumns = [
                        for i, (name, _, _) in List.indexed signals ->
                            let perBus = [
                                for KeyValue(struct (j, bus), l) in signalSamples do
                                    if j = i then
                                        bus, l
                            ]

                            let bus =
                                match forcedBus with
                                | Some b -> Some b
                                | None -> perBus |> List.map (fun (b, l) -> b, int64 l.Count) |> ToolSupport.defaultBus

                            let samples =
                                perBus
                                |> List.tryFind (fun (b, _) -> Some b = bus)
                                |> Option.map (fun (_, l) -> l.ToArray())
                                |> Option.defaultValue [||]

                            name, samples
                    ]

                    let columns =
                        signalColumns
                        @ [ for k, path in List.indexed fieldPaths -> path, fieldSamples[k].ToArray() ]
                        |> List.map (fun (name, samples) -> name, Array.sortBy fst samples)

                    let firstNs = first |> Option.defaultValue 0L

                    let grid =
                        match p.Str "align_to" with
                        | Some a -> Ok(columns |> List.find (fst >> (=) a) |> snd |> Array.map fst |> Array.distinct)
                        | None ->
                            let rate = p.Float "rate_hz" |> Option.defaultValue 10.0
                            let rows = int64 (float (last - firstNs) / 1e9 * rate) + 1L

                            if rows > MaxRows then
                                Error(
                                    ToolError.parameter
                                        "rate_hz"
                                        $"{rate} gives {rows} rows (limit {MaxRows}); lower the rate"
                                )
                            elif first.IsNone then
                                Ok [||]
                            else
                                Ok(Array.init (int rows) (fun i -> firstNs + int64 (Math.Round(float i * 1e9 / rate))))

                    match grid with
                    | Error e -> Error e
                    | Ok grid ->
                        let held = columns |> List.map (fun (name, samples) -> name, hold grid samples)
                        let format = p.StrOf "format"
                        let name = if format = "jsonl" then "signals.jsonl" else "signals.csv"

                        Artifacts.writeWith ctx.OutputDir name (fun w ->
                            if format = "csv" then
                                w.WriteLine(Format.csvLine ([ "time_s"; "log_mono_time_ns" ] @ List.map fst held))

                            for i in 0 .. grid.Length - 1 do
                                let time = float (grid[i] - firstNs) / 1e9

                                if format = "csv" then
                                    w.WriteLine(
                                        Format.csvLine (
                                            [ time.ToString("F6", CultureInfo.InvariantCulture); string grid[i] ]
                                            @ [ for _, values in held -> CruiseArtifacts.text values[i] ]
                                        )
                                    )
                                else
                                    let row =
                                        Artifacts.obj [
                                            yield "time_s", Artifacts.num (Math.Round(time, 6))
                                            yield "log_mono_time_ns", Artifacts.int grid[i]
                                            for column, values in held -> column, CruiseArtifacts.json values[i]
                                        ]

                                    w.WriteLine(Artifacts.jsonCompact row))

                        let empty =
                            held
                            |> List.filter (fun (_, v) -> v |> Array.forall ((=) Cell.Empty))
                            |> List.map fst

                        let warnings = warnings @ [ for c in empty -> $"{c}: no sample in the input" ]

                        for w in warnings do
                            ctx.Log ToolLogLevel.Warning w

                        Ok {
                            Artifacts = [ name ]
                            Summary = $"{grid.Length} rows × {held.Length} column(s) written to {name}"
                            Facts = [ "rows", float grid.Length; "columns", float held.Length ]
                            Warnings = warnings
                        }

    /// The tool.
    let tool: Tool = {
        Descriptor = descriptor
        Check = check
        Run = run
    }
