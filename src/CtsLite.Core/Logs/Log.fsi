namespace CtsLite.Logs

open System.Collections.Generic
open CtsLite.Can
open CtsLite.Capnp

/// The event under the cursor of a `LogEvents` enumeration. It reads the current message, so use
/// it before moving on (copy what you keep: `ToJson`, `Field` values).
[<Sealed>]
type EventView =
    internal new: schema: Schema * layout: EventLayout -> EventView
    member internal Attach: r: LogReader -> unit

    /// The file the event came from.
    member Source: string

    /// The service (union member) name, or `unknown(<n>)`.
    member Service: string

    /// logMonoTime in nanoseconds.
    member LogMonoTime: uint64

    /// The `valid` flag.
    member Valid: bool

    /// A field by path relative to the event, e.g. `carState.vEgo` or `pandaStates[0].controlsAllowed`.
    member Field: path: string -> Result<FieldValue, DecodeError>

    /// The event as `capnp convert --short binary:json` prints it.
    member ToJson: unit -> Result<string, DecodeError>

    /// The CAN frames of a `can`/`sendcan` event, copied out (empty for other events). A corrupt
    /// frame list ends the file as damage (see `LogEvents.Warnings`/`Error`), not an exception.
    member CanFrames: unit -> CanFrame list

/// The events of one or more files as one lazy sequence, optionally only some services. After the
/// enumeration, `Warnings` holds tolerated damage and `Error` the damage that stopped it in strict mode.
[<Sealed>]
type LogEvents =
    internal new:
        files: string list * schema: Schema * layout: EventLayout * options: ReaderOptions * services: Set<int> ->
            LogEvents

    /// Damage met and tolerated, one line each.
    member Warnings: IReadOnlyList<string>

    /// The damage that ended the enumeration in strict mode (or an unreadable file).
    member Error: DecodeError option

    interface IEnumerable<EventView>

/// The entry point for reading logs: a file, a segment folder or a route address.
[<RequireQualifiedAccess>]
module Log =

    /// Events of `input` (file, segment folder or route), only of `services` when any are named,
    /// decoded with `schema` (the embedded cereal schema when `None`).
    val events:
        options: ReaderOptions ->
        schema: Schema option ->
        services: string list ->
        input: string ->
            Result<LogEvents, string>

    /// Every CAN frame (`can` and `sendcan`) of `input`, copied out, in log order.
    val canFrames: options: ReaderOptions -> input: string -> Result<CanFrame list, string>
