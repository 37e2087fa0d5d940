namespace CtsLite.Tools

open System
open CtsLite.Capnp
open CtsLite.Logs

/// Reading a tool's log input with progress and cancellation.
[<RequireQualifiedAccess>]
module internal LogInput =

    /// How often (in events) a run looks at its cancellation token and reports progress.
    [<Literal>]
    let private CheckEvery = 4096

    /// The files of the input (file, segment folder or route address).
    let files (ctx: ToolContext) : Result<string list, ToolError> =
        match ctx.Input with
        | ToolInput.Path input -> Route.resolve input |> Result.mapError ToolError.InputUnavailable
        | ToolInput.Files [] -> Error(ToolError.InputUnavailable "no files given")
        | ToolInput.Files files ->
            match files |> List.tryFind (fun f -> not (IO.File.Exists f)) with
            | Some missing -> Error(ToolError.InputUnavailable $"{missing}: no such file")
            | None -> Ok files

    /// The embedded schema's event layout.
    let layout () : EventLayout =
        match EventLayout.ofSchema (Schema.cereal ()) with
        | Ok layout -> layout
        | Error e -> failwith $"the embedded schema has no event layout: {e}"

    /// Calls `visit` for every event of `files` in order until it returns false, reporting progress between `fromPct`
    /// and `toPct`. Damage ends a file with a warning (the events before it are kept); a file that
    /// cannot be opened fails the run; cancellation stops it within a few thousand events.
    let iter
        (ctx: ToolContext)
        (files: string list)
        (fromPct: float)
        (toPct: float)
        (visit: LogReader -> bool)
        : Result<string list, ToolError> =
        let options = ReaderOptions.Default
        let warnings = ResizeArray<string>()
        let total = float (max 1 files.Length)
        let mutable failure = None
        let mutable index = 0
        let mutable go = true

        try
            for file in files do
                if failure.IsNone && go then
                    ctx.Cancellation.ThrowIfCancellationRequested()

                    match LogReader.Open(file, options) with
                    | Error reason -> failure <- Some(ToolError.InputUnavailable reason)
                    | Ok reader ->
                        use reader = reader
                        let mutable n = 0

                        FileReading.guard reader (fun () ->
                            while go && reader.Next() do
                                go <- visit reader
                                n <- n + 1

                                if n % CheckEvery = 0 then
                                    ctx.Cancellation.ThrowIfCancellationRequested()
                                    let done' = (float index + reader.InputFraction) / total
                                    ctx.Progress(fromPct + (toPct - fromPct) * done'))

                        match reader.Damage with
                        // Damage before the first event: not a log at all, so nothing to keep.
                        | Some e when n = 0 -> failure <- Some(ToolError.InputDamaged e)
                        | _ ->
                            match FileReading.settle options reader warnings with
                            | Some e -> failure <- Some(ToolError.InputDamaged e)
                            | None -> ()

                    index <- index + 1

            for w in warnings do
                ctx.Log ToolLogLevel.Warning w

            match failure with
            | Some f -> Error f
            | None ->
                ctx.Progress toPct
                Ok(List.ofSeq warnings)
        with :? OperationCanceledException when ctx.Cancellation.IsCancellationRequested ->
            Error ToolError.Canceled
