namespace CtsLite.Cli

open System
open System.IO
open System.Threading.Tasks
open Spectre.Console
open Spectre.Console.Rendering

/// What people read: tables, sizes, durations, colours and progress bars, through
/// Spectre.Console. Colour and terminal control only where `CommandContext` says a terminal is
/// there; anything else (a pipe, a file) gets plain aligned text.
[<RequireQualifiedAccess>]
module Ui =

    /// A console over `writer`, with colour or without. Off a terminal the width is wide enough
    /// that no table row wraps: a pipe gets one line per row.
    let private consoleOver (writer: TextWriter) (color: bool) (interactive: bool) : IAnsiConsole =
        let console =
            AnsiConsole.Create(
                AnsiConsoleSettings(
                    Ansi =
                        (if color || interactive then
                             AnsiSupport.Yes
                         else
                             AnsiSupport.No),
                    ColorSystem =
                        (if color then
                             ColorSystemSupport.Detect
                         else
                             ColorSystemSupport.NoColors),
                    Interactive =
                        (if interactive then
                             InteractionSupport.Yes
                         else
                             InteractionSupport.No),
                    Out = AnsiConsoleOutput writer
                )
            )

        if not interactive && not color then
            console.Profile.Width <- 1000

        console

    /// Standard output as a console.
    let out (ctx: CommandContext) : IAnsiConsole = consoleOver ctx.Out ctx.Color false

    /// The colour of a run's or session's state.
    let private stateStyle (state: string) : Style =
        match state with
        | "completed"
        | "ended"
        | "ok"
        | "healthy" -> Style(foreground = Color.Green)
        | "failed"
        | "error"
        | "unhealthy" -> Style(foreground = Color.Red)
        | "canceled"
        | "stopped"
        | "degraded" -> Style(foreground = Color.Yellow)
        | "running" -> Style(foreground = Color.Blue)
        | _ -> Style.Plain

    /// A cell: its text, coloured when the column holds states.
    type Cell =
        | Plain of string
        | State of string
        | Dim of string

    /// Writes an aligned table to standard output: a header row (none when every header is
    /// empty: a list of fields), then one row per entry, no borders (so that it reads the same
    /// on a terminal and through `grep` or `awk`).
    let table (ctx: CommandContext) (headers: string list) (rows: Cell list seq) : unit =
        let t =
            Table(Border = TableBorder.None, ShowHeaders = List.exists (fun h -> h <> "") headers)

        for h in headers do
            t.AddColumn(TableColumn(Text(h, Style(decoration = Decoration.Bold)), NoWrap = true))
            |> ignore

        for row in rows do
            let cells: IRenderable array =
                row
                |> List.map (fun c ->
                    match c with
                    | Plain s -> Text(s) :> IRenderable
                    | State s -> Text(s, stateStyle s)
                    | Dim s -> Text(s, Style(foreground = Color.Grey)))
                |> Array.ofList

            t.AddRow(cells) |> ignore

        // Spectre pads the first column with one space: the table starts at the margin.
        t.Columns[0].Padding <- Padding(0, 0, 1, 0)
        // Rendered apart, so that no line ends in the padding of its last cell.
        use text = new StringWriter()
        let console = consoleOver text ctx.Color false

        console.Profile.Width <-
            if ctx.Color then
                (try
                    max 80 Console.WindowWidth
                 with _ ->
                     120)
            else
                1000

        console.Write t

        for line in text.ToString().Split('\n') do
            let line = line.TrimEnd()

            if line <> "" then
                ctx.Out.WriteLine line

    /// A size people read: `812 B`, `14.2 KiB`, `3.1 MiB`.
    let size (bytes: int64) : string =
        if bytes < 1024L then
            $"{bytes} B"
        elif bytes < 1024L * 1024L then
            $"{float bytes / 1024.0:F1} KiB"
        elif bytes < 1024L * 1024L * 1024L then
            $"{float bytes / 1048576.0:F1} MiB"
        else
            $"{float bytes / 1073741824.0:F2} GiB"

    /// A duration people read: `420 ms`, `12.3 s`, `4m 05s`, `2h 10m`.
    let duration (d: TimeSpan) : string =
        if d.TotalSeconds < 1.0 then
            $"{d.TotalMilliseconds:F0} ms"
        elif d.TotalSeconds < 60.0 then
            $"{d.TotalSeconds:F1} s"
        elif d.TotalHours < 1.0 then
            $"{int d.TotalMinutes}m {d.Seconds:D2}s"
        else
            $"{int d.TotalHours}h {d.Minutes:D2}m"

    /// A time of the service, in this machine's time zone.
    let time (t: DateTimeOffset) : string =
        t.ToLocalTime().ToString "yyyy-MM-dd HH:mm:ss"

    /// One bar of a progress display: set its share done, or its byte count against its total.
    [<Sealed>]
    type Bar internal (task: ProgressTask option) =
        /// No bar: reports go nowhere.
        static member None = Bar(None)

        /// Sets the text before the bar.
        member _.Describe(text: string) =
            task |> Option.iter (fun t -> t.Description <- Markup.Escape text)

        /// Sets the share done, 0–100.
        member _.Percent(pct: float) =
            task |> Option.iter (fun t -> t.Value <- Math.Clamp(pct, 0.0, 100.0))

        /// Sets the bytes done against the bar's total.
        member _.Bytes(done': int64) =
            task |> Option.iter (fun t -> t.Value <- float done')

        /// Marks the bar finished.
        member _.Finish() =
            task
            |> Option.iter (fun t ->
                t.Value <- t.MaxValue
                t.StopTask())

    /// Progress bars on standard error while `work` runs: one per `Add`, and lines written
    /// through `Line` appear above them. Off a terminal (or with `--quiet`/`--json`) there are no
    /// bars and `Line` writes plain lines (unless `--quiet`).
    [<Sealed>]
    type Progress internal (ctx: CommandContext, live: ProgressContext option, console: IAnsiConsole option) =
        /// A new bar: `total` bytes, or None for a percentage.
        member _.Add(description: string, total: int64 option) : Bar =
            match live with
            | Some p ->
                let maxValue =
                    match total with
                    | Some n when n > 0L -> float n
                    | _ -> 100.0

                Bar(Some(p.AddTask(Markup.Escape description, true, maxValue)))
            | None -> Bar.None

        /// A line above the bars (a run's log line, a note); nothing with `--quiet`.
        member _.Line(text: string) =
            if not ctx.Quiet then
                match console with
                | Some c -> c.WriteLine(text, Style.Plain)
                | None -> ctx.Err.WriteLine text

    /// Runs `work` with a progress display (see `Progress`); the bars are cleared at the end.
    let withProgress (ctx: CommandContext) (work: Progress -> Task<'a>) : Task<'a> =
        if ctx.Live then
            let console = consoleOver ctx.Err ctx.ErrColor true

            let display =
                console
                    .Progress()
                    .AutoClear(true)
                    .HideCompleted(false)
                    .Columns(
                        [|
                            TaskDescriptionColumn() :> ProgressColumn
                            ProgressBarColumn()
                            PercentageColumn()
                            RemainingTimeColumn()
                        |]
                    )

            display.StartAsync(fun p -> work (Progress(ctx, Some p, Some console)))
        else
            work (Progress(ctx, None, None))

    /// A stream that reports how many bytes have passed through it (uploads, downloads).
    [<Sealed>]
    type CountingStream(inner: Stream, report: int64 -> unit) =
        inherit Stream()
        let mutable count = 0L

        member private _.Counted(n: int) =
            count <- count + int64 n
            report count
            n

        override _.CanRead = inner.CanRead
        override _.CanSeek = false
        override _.CanWrite = inner.CanWrite
        override _.Length = inner.Length

        override _.Position
            with get () = inner.Position
            and set _ = raise (NotSupportedException())

        override _.Flush() = inner.Flush()
        override _.Seek(_, _) = raise (NotSupportedException())
        override _.SetLength _ = raise (NotSupportedException())

        override this.Read(buffer: byte array, offset: int, length: int) =
            this.Counted(inner.Read(buffer, offset, length))

        override this.ReadAsync(buffer: Memory<byte>, cancel) =
            let pending = inner.ReadAsync(buffer, cancel)

            if pending.IsCompletedSuccessfully then
                ValueTask<int>(this.Counted pending.Result)
            else
                ValueTask<int>(
                    task {
                        let! n = pending
                        return this.Counted n
                    }
                )

        override this.Write(buffer: byte array, offset: int, length: int) =
            inner.Write(buffer, offset, length)
            this.Counted length |> ignore

        override this.WriteAsync(buffer: ReadOnlyMemory<byte>, cancel) =
            let pending = inner.WriteAsync(buffer, cancel)

            ValueTask(
                task {
                    do! pending
                    this.Counted buffer.Length |> ignore
                }
            )

        override _.Dispose(disposing: bool) =
            if disposing then
                inner.Dispose()

            base.Dispose disposing
