namespace CtsLite.Tools

open System
open System.Text
open System.Text.Json.Nodes
open CtsLite.Capnp
open CtsLite.Logs

/// `log-summary`: the `cts log info` facts plus CAN rates per (address, bus), as JSON and HTML.
[<RequireQualifiedAccess>]
module LogSummary =

    /// The `cts log info` object.
    let infoJson (info: LogInfo) : JsonNode =
        let time (value: uint64 option) =
            value |> Option.map (fun v -> JsonValue.Create v :> JsonNode) |> Option.toObj

        Artifacts.obj [
            "events", Artifacts.int info.Events
            "event_counts", Artifacts.obj [ for KeyValue(name, n) in info.EventCounts -> name, Artifacts.int n ]
            "first_log_mono_time", time info.FirstLogMonoTime
            "last_log_mono_time", time info.LastLogMonoTime
            "can_frames", Artifacts.int info.CanFrames
            "sendcan_frames", Artifacts.int info.SendcanFrames
            "can_frames_per_src",
            Artifacts.obj [ for KeyValue(src, n) in info.CanFramesPerSrc -> string src, Artifacts.int n ]
            "can_distinct_addresses_per_src",
            Artifacts.obj [
                for KeyValue(src, n) in info.CanDistinctAddressesPerSrc -> string src, Artifacts.int (int64 n)
            ]
            "car_fingerprint", (info.CarFingerprint |> Option.map Artifacts.str |> Option.toObj)
            "warnings", Artifacts.strings info.Warnings
        ]

    /// The `cts log info --json` text: the object of `infoJson`, indented.
    let infoJsonText (info: LogInfo) : string = Artifacts.jsonText (infoJson info)

    let descriptor: ToolDescriptor = {
        Id = "log-summary"
        Name = "Log summary"
        Description =
            "What a log or route holds: events per service, time span, CAN frames per bus, and the rate of every CAN address per bus; as JSON and an HTML page."
        Category = ToolCategory.Exporter
        Parameters = []
        InputTypes = [ "rlog"; "qlog"; "route" ]
        OutputTypes = [ "json"; "html" ]
    }

    let private html (input: string) (info: LogInfo) (duration: float) (rates: (uint32 * int * int64 * float) list) =
        let h = Artifacts.html
        let sb = StringBuilder()
        let add (s: string) = sb.Append(s).Append('\n') |> ignore

        add "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        add $"<title>Log summary – {h input}</title>"

        add
            "<style>body{font-family:system-ui,sans-serif;margin:2rem;color:#1d2330}table{border-collapse:collapse;font-size:.9rem}th,td{border:1px solid #d6dae3;padding:.2rem .6rem;text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f1f3f7}</style></head><body>"

        add $"<h1>Log summary</h1><p><code>{h input}</code></p>"
        let fingerprint = info.CarFingerprint |> Option.defaultValue "unknown"

        add
            $"<ul><li>{info.Events} events over {Format.decimals 1 duration} s</li><li>{info.CanFrames} CAN frames, {info.SendcanFrames} sendcan frames</li><li>car: {h fingerprint}</li></ul>"

        for w in info.Warnings do
            add $"<p style=\"color:#a15c00\">warning: {h w}</p>"

        add "<h2>Events per service</h2><table><tr><th>Service</th><th>Events</th></tr>"

        for KeyValue(name, n) in info.EventCounts do
            add $"<tr><td>{h name}</td><td>{n}</td></tr>"

        add
            "</table><h2>CAN addresses</h2><table><tr><th>Address</th><th>Bus</th><th>Frames</th><th>Rate (Hz)</th></tr>"

        for address, bus, n, hz in rates do
            add $"<tr><td>{Format.address address}</td><td>{bus}</td><td>{n}</td><td>{Format.decimals 1 hz}</td></tr>"

        add "</table></body></html>"
        sb.ToString()

    let private run (ctx: ToolContext) : Result<ToolOutput, ToolError> =
        match LogInput.files ctx with
        | Error e -> Error e
        | Ok files ->
            let schema = Schema.cereal ()
            let builder = LogInfoBuilder(schema, LogInput.layout (), CountAddresses = true)

            LogInput.iter ctx files 0.0 95.0 (fun reader ->
                builder.Visit reader
                true)
            |> Result.map (fun warnings ->
                let info = builder.Build warnings

                let duration =
                    match info.FirstLogMonoTime, info.LastLogMonoTime with
                    | Some a, Some b -> float (b - a) / 1e9
                    | _ -> 0.0

                let rates =
                    builder.FramesPerAddress
                    |> Seq.map (fun kv ->
                        let struct (address, bus) = kv.Key
                        address, bus, kv.Value, (if duration > 0.0 then float kv.Value / duration else 0.0))
                    |> Seq.sortBy (fun (a, b, _, _) -> a, b)
                    |> List.ofSeq

                let json = infoJson info :?> JsonObject
                json["duration_s"] <- Artifacts.num duration

                json["can_rates"] <-
                    Artifacts.arr [
                        for address, bus, n, hz in rates ->
                            Artifacts.obj [
                                "address", Artifacts.str (Format.address address)
                                "bus", Artifacts.int (int64 bus)
                                "frames", Artifacts.int n
                                "hz", Artifacts.num (Math.Round(hz, 3))
                            ]
                    ]

                Artifacts.writeJson ctx.OutputDir "log_summary.json" json

                Artifacts.writeWith ctx.OutputDir "log_summary.html" (fun w ->
                    w.Write(html (ToolInput.describeWith ctx.ShowPath ctx.Input) info duration rates))

                {
                    Artifacts = [ "log_summary.json"; "log_summary.html" ]
                    Summary =
                        $"{info.Events} events, {info.CanFrames} CAN frames on {rates.Length} (address, bus) pairs over {Format.decimals 1 duration} s"
                    Facts = [
                        "events", float info.Events
                        "can_frames", float info.CanFrames
                        "address_bus_pairs", float rates.Length
                        "duration_s", Math.Round(duration, 3)
                    ]
                    Warnings = warnings
                })

    /// The tool.
    let tool: Tool = {
        Descriptor = descriptor
        Check = fun _ -> []
        Run = run
    }
