namespace CtsLite.Tools

open System
open CtsLite.Capnp
open CtsLite.Logs

/// Reading a tool's log input with progress and cancellation.
[<RequireQualifiedAccess>]
module internal LogInput =

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

    /// Calls `visit` for every event of `files` in order until it returns false, reporting progress
    /// between `fromPct` and `toPct`, by `LogSource`'s damage rule (tolerated damage is logged as a
    /// warning and returned); cancellation stops it within a few thousand events.
    let iter
        (ctx: ToolContext)
        (files: string list)
        (fromPct: float)
        (toPct: float)
        (visit: LogReader -> bool)
        : Result<string list, ToolError> =
        let options = {
            Reader = ReaderOptions.Default
            Progress = fun f -> ctx.Progress(fromPct + (toPct - fromPct) * f)
            Cancellation = ctx.Cancellation
        }

        try
            use source = new LogSource(files, options)

            // An input with no event at all is already an error of the source (its rule 3).
            match source.Iter visit with
            | Ok reading ->
                for w in reading.Warnings do
                    ctx.Log ToolLogLevel.Warning w

                ctx.Progress toPct
                Ok reading.Warnings
            | Error {
                        Reason = DecodeReason.Unreadable reason
                    } -> Error(ToolError.InputUnavailable reason)
            | Error e -> Error(ToolError.InputDamaged e)
        with :? OperationCanceledException when ctx.Cancellation.IsCancellationRequested ->
            Error ToolError.Canceled
