namespace CtsLite.Tools

open System
open System.Collections.Generic
open System.Globalization
open CtsLite.Can
open CtsLite.Logs

/// `rlog-to-csv`: every CAN frame of a log as CSV, labelled pre / window / post.
[<RequireQualifiedAccess>]
module internal RlogToCsv =

    /// The artifact's name.
    [<Literal>]
    let OutputName = "can_frames.csv"

    /// The header, in order.
    let columns = [ "window"; "segment"; "timestamp"; "address"; "bus"; "data_hex" ]

    let descriptor: ToolDescriptor = {
        Id = "rlog-to-csv"
        Name = "rlog to CSV"
        Description =
            "Every CAN frame of a log or route as CSV (window,segment,timestamp,address,bus,data_hex), timestamps relative to the first CAN event, optionally labelled pre/window/post."
        Category = ToolCategory.Converter
        Parameters = [
            {
                Name = "window_start"
                Type = ParameterType.Float
                Default = None
                Description = "Window start in seconds after the first CAN event (with window_dur)"
                Choices = []
                Required = false
                Min = Some 0.0
                Max = None
            }
            {
                Name = "window_dur"
                Type = ParameterType.Float
                Default = None
                Description = "Window length in seconds (with window_start); the end is inclusive"
                Choices = []
                Required = false
                Min = Some 0.0
                Max = None
            }
            {
                Name = "include_sendcan"
                Type = ParameterType.Bool
                Default = Some(ParameterValue.Bool false)
                Description = "Also write sendcan frames (openpilot's own)"
                Choices = []
                Required = false
                Min = None
                Max = None
            }
            {
                Name = "buses"
                Type = ParameterType.List
                Default = None
                Description = "Only these buses (raw src bytes, e.g. 0,1,128)"
                Choices = []
                Required = false
                Min = None
                Max = None
            }
            {
                Name = "addresses"
                Type = ParameterType.List
                Default = None
                Description = "Only these CAN ids (0x13A or decimal)"
                Choices = []
                Required = false
                Min = None
                Max = None
            }
        ]
        InputTypes = [ "rlog"; "qlog"; "route" ]
        OutputTypes = [ "csv" ]
    }

    /// A bus: a raw src byte 0–255.
    let parseBus (text: string) : int option =
        match Int32.TryParse(text.Trim(), NumberStyles.None, CultureInfo.InvariantCulture) with
        | true, v when v <= 255 -> Some v
        | _ -> None

    let private check (p: ToolParameters) : ParameterError list = [
        match p.Float "window_start", p.Float "window_dur" with
        | Some _, None -> {
            Parameter = "window_dur"
            Detail = "is needed with window_start"
          }
        | None, Some _ -> {
            Parameter = "window_start"
            Detail = "is needed with window_dur"
          }
        | _ -> ()

        for b in p.List "buses" do
            if (parseBus b).IsNone then
                {
                    Parameter = "buses"
                    Detail = $"'{b}' is not a bus (0-255)"
                }

        for a in p.List "addresses" do
            if (CanId.parse a).IsNone then
                {
                    Parameter = "addresses"
                    Detail = $"'{a}' is not a CAN id (0x13A or decimal)"
                }
    ]

    /// The label of a frame `t` seconds after the first CAN event (empty without a window).
    let private segmentOf (window: (float * float) option) (t: float) : string =
        match window with
        | None -> ""
        | Some(start, dur) -> (WindowPart.ofTime start dur t).Label

    let private run (ctx: ToolContext) : Result<ToolOutput, ToolError> =
        let p = ctx.Parameters

        let window =
            match p.Float "window_start", p.Float "window_dur" with
            | Some s, Some d -> Some(s, d)
            | _ -> None

        let includeSendcan = p.BoolOf "include_sendcan"
        let buses = p.List "buses" |> List.choose parseBus |> HashSet
        let addresses = p.List "addresses" |> List.choose CanId.parse |> HashSet

        match LogInput.files ctx with
        | Error e -> Error e
        | Ok files ->
            let layout = LogInput.layout ()
            let mutable rows = 0L
            let mutable t0 = None
            let line = Text.StringBuilder()

            Artifacts.writeResult ctx.OutputDir OutputName (fun w ->
                w.WriteLine(Format.csvLine columns)

                LogInput.iter ctx files 0.0 100.0 (fun reader ->
                    let m = reader.Message
                    let e = reader.Event
                    let which = Event.which m layout e

                    if
                        which = layout.CanDiscriminant
                        || (includeSendcan && which = layout.SendcanDiscriminant)
                    then
                        let mono = Event.logMonoTime m layout e

                        let origin =
                            match t0 with
                            | Some t -> t
                            | None ->
                                t0 <- Some mono
                                mono

                        let t = float (int64 (mono - origin)) / 1e9
                        let segment = segmentOf window t
                        let stamp = t.ToString("F6", CultureInfo.InvariantCulture)
                        let mutable frames = CanCursor(m, layout, Event.canBatch m layout e)

                        while frames.MoveNext() do
                            if
                                (buses.Count = 0 || buses.Contains(int frames.Src))
                                && (addresses.Count = 0 || addresses.Contains frames.Address)
                            then
                                line.Clear() |> ignore

                                line
                                    .Append("1,")
                                    .Append(segment)
                                    .Append(',')
                                    .Append(stamp)
                                    .Append(",0x")
                                    .Append(frames.Address.ToString("X3"))
                                    .Append(',')
                                    .Append(int frames.Src)
                                    .Append(',')
                                    .Append(Convert.ToHexString frames.Payload)
                                |> ignore

                                w.WriteLine line
                                rows <- rows + 1L

                    true))
            |> Result.map (fun warnings ->
                ctx.Log ToolLogLevel.Info $"wrote {OutputName} with {rows} rows"

                {
                    Artifacts = [ OutputName ]
                    Summary = $"{rows} CAN frames written to {OutputName}"
                    Facts = [ "rows", float rows ]
                    Warnings = warnings
                })

    /// The tool.
    let tool: Tool = {
        Descriptor = descriptor
        Check = check
        Run = run
    }
