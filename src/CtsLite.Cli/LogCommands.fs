namespace CtsLite.Cli

open System
open System.Buffers
open System.Globalization
open System.IO
open System.Text
open System.Text.Json
open Argu
open CtsLite.Can
open CtsLite.Capnp
open CtsLite.Logs

/// `cts log …`: reading logs locally.
[<RequireQualifiedAccess>]
module LogCommands =

    /// The options every `cts log` command takes (inherited from `cts log`).
    type Common = {
        Strict: bool
        Schema: string option
        Decompressor: Decompressor
    }

    let private fail (ctx: CommandContext) (message: string) =
        ctx.Err.WriteLine($"error: {message}")
        ExitCode.ClientError

    let private loadSchema (path: string option) : Result<Schema, string> =
        match path with
        | None -> Ok(Schema.cereal ())
        | Some p -> Schema.loadFile p

    /// Resolves input, schema and layout, then runs `body`.
    let private withLog
        (ctx: CommandContext)
        (input: string)
        (schemaPath: string option)
        (body: string list -> Schema -> EventLayout -> int)
        : int =
        match Route.resolve input with
        | Error e -> fail ctx e
        | Ok files ->
            match loadSchema schemaPath with
            | Error e -> fail ctx e
            | Ok schema ->
                match EventLayout.ofSchema schema with
                | Error e -> fail ctx $"schema: {e}"
                | Ok layout -> body files schema layout

    let private options (common: Common) = {
        ReaderOptions.Default with
            Strict = common.Strict
            Decompressor = common.Decompressor
    }

    let private finish (ctx: CommandContext) (result: Result<string list, DecodeError>) =
        match result with
        | Error e -> fail ctx (DecodeError.describe e)
        | Ok warnings ->
            for w in warnings do
                ctx.Err.WriteLine($"warning: {w}")

            ExitCode.Ok

    /// `cts log info` for people: the totals, then events per service and frames per bus.
    let private printInfo (ctx: CommandContext) (input: string) (info: LogInfo) =
        let span =
            match info.FirstLogMonoTime, info.LastLogMonoTime with
            | Some first, Some last when last >= first ->
                " over " + Ui.duration (TimeSpan.FromMilliseconds(float (last - first) / 1e6))
            | _ -> ""

        ctx.Out.WriteLine input
        ctx.Out.WriteLine $"{info.Events} events{span}"
        ctx.Out.WriteLine $"{info.CanFrames} CAN frames, {info.SendcanFrames} sendcan frames"

        info.CarFingerprint |> Option.iter (fun car -> ctx.Out.WriteLine $"car: {car}")

        ctx.Out.WriteLine()

        Ui.table ctx [ "SERVICE"; "EVENTS" ] [
            for KeyValue(name, n) in info.EventCounts -> [ Ui.Plain name; Ui.Plain(string n) ]
        ]

        if info.CanFramesPerSrc.Count > 0 then
            ctx.Out.WriteLine()

            Ui.table ctx [ "CAN SRC"; "FRAMES"; "ADDRESSES" ] [
                for KeyValue(src, n) in info.CanFramesPerSrc |> Seq.sortBy _.Key ->
                    let addresses =
                        match info.CanDistinctAddressesPerSrc.TryGetValue src with
                        | true, a -> string a
                        | false, _ -> ""

                    let name =
                        if src >= 128 then
                            $"{src} (TX echo of {src - 128})"
                        else
                            string src

                    [ Ui.Plain name; Ui.Plain(string n); Ui.Plain addresses ]
            ]

    /// `cts log info`.
    let info (ctx: CommandContext) (common: Common) (args: ParseResults<LogInfoArgs>) : int =
        let input = args |> Results.pick (fun (LogInfoArgs.Input i) -> Some i)

        withLog ctx input common.Schema (fun files schema layout ->
            match LogInfo.compute schema layout (options common) files with
            | Error e -> fail ctx (DecodeError.describe e)
            | Ok info ->
                if ctx.Json then
                    ctx.Out.WriteLine(CtsLite.Tools.LogSummary.infoJsonText info)
                else
                    printInfo ctx input info

                for warning in info.Warnings do
                    ctx.Err.WriteLine($"warning: {warning}")

                ExitCode.Ok)

    /// `cts log dump`.
    let dump (ctx: CommandContext) (common: Common) (args: ParseResults<LogDumpArgs>) : int =
        let input =
            args
            |> Results.pick (function
                | LogDumpArgs.Input x -> Some x
                | _ -> None)

        let services =
            args
            |> Results.choose (function
                | LogDumpArgs.Service x -> Some x
                | _ -> None)

        let limit =
            args
            |> Results.tryPick (function
                | LogDumpArgs.Limit x -> Some x
                | _ -> None)
            |> Option.defaultValue Int32.MaxValue

        withLog ctx input common.Schema (fun files schema layout ->
            let unknown =
                services |> List.filter (fun s -> (Event.discriminantOf layout s).IsNone)

            match unknown, limit with
            | _ :: _, _ -> fail ctx $"""unknown service(s): {String.Join(", ", unknown)}"""
            | [], l when l < 0 -> fail ctx "--limit must not be negative"
            | [], _ ->
                let wanted = services |> List.choose (Event.discriminantOf layout) |> Set.ofList
                // 4 MiB in memory: a real event's JSON is far smaller; a bigger one goes to disk.
                use writer = new EventBuffer(4 <<< 20)
                let mutable written = 0
                ctx.Out.Flush()

                let visit (reader: LogReader) =
                    if written < limit then
                        let m = reader.Message

                        if wanted.IsEmpty || wanted.Contains(Event.which m layout reader.Event) then
                            writer.Reset()
                            Json.writeStruct schema m layout.Event reader.Event writer
                            writer.WriteTo ctx.OutStream
                            ctx.OutStream.WriteByte 10uy
                            written <- written + 1

                let result = Logs.iter (options common) files visit
                ctx.OutStream.Flush()
                finish ctx result)

    let private parseAddress (text: string) : uint32 option =
        let t = text.Trim()

        let digits, style =
            if t.StartsWith("0x", StringComparison.OrdinalIgnoreCase) then
                t.Substring 2, NumberStyles.AllowHexSpecifier
            else
                t, NumberStyles.None

        match UInt32.TryParse(digits, style, CultureInfo.InvariantCulture) with
        | true, v -> Some v
        | false, _ -> None

    /// `cts log can`.
    let can (ctx: CommandContext) (common: Common) (args: ParseResults<LogCanArgs>) : int =
        let input =
            args
            |> Results.pick (function
                | LogCanArgs.Input x -> Some x
                | _ -> None)

        let buses =
            args
            |> Results.choose (function
                | LogCanArgs.Bus x -> Some x
                | _ -> None)

        let addressTexts =
            args
            |> Results.choose (function
                | LogCanArgs.Address x -> Some x
                | _ -> None)

        withLog ctx input common.Schema (fun files _ layout ->
            let addresses = addressTexts |> List.map parseAddress

            match buses |> List.tryFind (fun b -> b < 0 || b > 255), List.tryFindIndex Option.isNone addresses with
            | Some b, _ -> fail ctx $"--bus {b}: expected a src byte 0..255"
            | _, Some i -> fail ctx $"--address {addressTexts[i]}: expected a CAN id such as 0x146"
            | None, None ->
                let busFilter = Array.zeroCreate<bool> 256

                for b in buses do
                    busFilter[b] <- true

                let addressSet = addresses |> List.choose id |> Set.ofList
                let out = ctx.Out
                out.WriteLine "log_mono_time_ns,kind,src,address,data_hex"
                let line = Array.zeroCreate<char> 256

                let visit (reader: LogReader) =
                    let m = reader.Message
                    let e = reader.Event
                    let mutable f = CanCursor(m, layout, Event.canBatch m layout e)

                    while f.MoveNext() do

                        if
                            (buses.IsEmpty || busFilter[int f.Src])
                            && (addressSet.IsEmpty || addressSet.Contains f.Address)
                        then
                            let span = line.AsSpan()
                            let mutable n = 0

                            f.LogMonoTime.TryFormat(span, &n, ReadOnlySpan.Empty, CultureInfo.InvariantCulture)
                            |> ignore

                            let kind =
                                match f.Service with
                                | CanService.Sendcan -> ",sendcan,"
                                | CanService.Can -> ",can,"

                            kind.AsSpan().CopyTo(span.Slice n)
                            n <- n + kind.Length
                            let mutable k = 0

                            (int f.Src).TryFormat(span.Slice n, &k, ReadOnlySpan.Empty, CultureInfo.InvariantCulture)
                            |> ignore

                            n <- n + k
                            ",0x".AsSpan().CopyTo(span.Slice n)
                            n <- n + 3

                            f.Address.TryFormat(span.Slice n, &k, "X3".AsSpan(), CultureInfo.InvariantCulture)
                            |> ignore

                            n <- n + k
                            span[n] <- ','
                            n <- n + 1
                            let payload = f.Payload

                            if n + 2 * payload.Length < span.Length then
                                Convert.TryToHexString(payload, span.Slice n, &k) |> ignore
                                n <- n + k
                                out.Write(ReadOnlySpan<char>(line, 0, n))
                            else
                                out.Write(ReadOnlySpan<char>(line, 0, n))
                                out.Write(Convert.ToHexString payload)

                            out.Write '\n'

                let result = Logs.iter (options common) files visit
                out.Flush()
                finish ctx result)
