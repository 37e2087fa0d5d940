namespace CtsLite.Cli

open System
open System.IO
open System.Net.Http
open System.Text.Json
open Argu
open CtsLite

/// Exit codes: 0 ok, 1 client error (usage, too old, any 4xx answer), 2 service error (5xx) or
/// unreachable, 3 run failed, 4 run canceled, 130 interrupted.
[<RequireQualifiedAccess>]
module ExitCode =
    /// Success.
    [<Literal>]
    let Ok = 0

    /// The command line or the client was at fault.
    [<Literal>]
    let ClientError = 1

    /// The service was unreachable, unhealthy or answered with an error.
    [<Literal>]
    let ServiceError = 2

/// What a command needs from its surroundings.
type CommandContext = {
    Url: string
    Json: bool
    /// `--quiet`: results and errors only.
    Quiet: bool
    /// Colour and terminal control on standard output (a terminal, no `--no-color`/`NO_COLOR`).
    Color: bool
    /// Colour on standard error (a terminal, no `--no-color`/`NO_COLOR`).
    ErrColor: bool
    /// Progress bars and live views on standard error (a terminal, neither `--quiet` nor `--json`).
    Live: bool
    /// Made on first use: local commands never pay for the HTTP stack.
    Http: Lazy<HttpClient>
    Out: TextWriter
    /// The same standard output as bytes, for exact output (flush `Out` before writing).
    OutStream: Stream
    Err: TextWriter
}

/// Ctrl+C and SIGTERM.
[<RequireQualifiedAccess>]
module Signals =

    /// Calls `action` on each Ctrl+C or SIGTERM instead of ending the process, until disposed:
    /// the command ends itself, having said goodbye to the service (a canceled run, a stopped
    /// stream) and flushed what it printed.
    let onInterrupt (action: unit -> unit) : IDisposable =
        let onCancel =
            ConsoleCancelEventHandler(fun _ e ->
                e.Cancel <- true
                action ())

        Console.CancelKeyPress.AddHandler onCancel

        let term =
            Runtime.InteropServices.PosixSignalRegistration.Create(
                Runtime.InteropServices.PosixSignal.SIGTERM,
                fun context ->
                    context.Cancel <- true
                    action ()
            )

        {
            new IDisposable with
                member _.Dispose() =
                    term.Dispose()
                    Console.CancelKeyPress.RemoveHandler onCancel
        }

/// `-p key=value` as the tools and monitors take it.
[<RequireQualifiedAccess>]
module Params =

    /// One `-p key=value`; the value as text, coerced by the descriptor's type.
    let parse (text: string) : Result<string * CtsLite.Tools.ParameterInput, string> =
        match text.IndexOf '=' with
        | i when i > 0 -> Ok(text.Substring(0, i).Trim(), CtsLite.Tools.ParameterInput.Text(text.Substring(i + 1)))
        | _ -> Error $"-p '{text}': expected key=value"
