namespace CtsLite.Logs

open System
open System.Buffers
open System.Collections
open System.Collections.Generic
open System.Text
open CtsLite.Can
open CtsLite.Capnp

/// The event under the cursor of a `LogEvents` enumeration. It reads the current message, so use
/// it before moving on (copy what you keep: `ToJson`, `Field` values).
[<Sealed>]
type EventView internal (schema: Schema, layout: EventLayout) =
    let mutable reader: LogReader = Unchecked.defaultof<_>

    member internal _.Attach(r: LogReader) = reader <- r

    /// The file the event came from.
    member _.Source = reader.Source

    /// The service (union member) name, or `unknown(<n>)`.
    member _.Service =
        Event.whichName layout (Event.which reader.Message layout reader.Event)

    /// logMonoTime in nanoseconds.
    member _.LogMonoTime = Event.logMonoTime reader.Message layout reader.Event
    /// The `valid` flag.
    member _.Valid = Event.valid reader.Message layout reader.Event

    /// A field by path relative to the event, e.g. `carState.vEgo` or `pandaStates[0].controlsAllowed`.
    member _.Field(path: string) : Result<FieldValue, DecodeError> =
        FieldPath.read schema reader.Message layout.Event reader.Event path

    /// The event as `capnp convert --short binary:json` prints it.
    member _.ToJson() : Result<string, DecodeError> =
        let w = ArrayBufferWriter<byte>()

        Json.messageToJson schema reader.Message layout.Event reader.Source w
        |> Result.map (fun () -> Encoding.UTF8.GetString w.WrittenSpan)

    /// The CAN frames of a `can`/`sendcan` event, copied out (empty for other events). A corrupt
    /// frame list ends the file as damage (see `LogEvents.Warnings`/`Error`), not an exception.
    member _.CanFrames() : CanFrame list =
        let frames = ResizeArray<CanFrame>()

        FileReading.guard reader (fun () ->
            let m = reader.Message
            let mutable cursor = CanCursor(m, layout, Event.canBatch m layout reader.Event)

            while cursor.MoveNext() do
                frames.Add {
                    TimeNs = int64 cursor.LogMonoTime
                    Service = cursor.Service
                    Bus = int cursor.Src
                    Address = cursor.Address
                    Payload = cursor.Payload.ToArray()
                })

        List.ofSeq frames

/// The events of one or more files as one lazy sequence, optionally only some services. After the
/// enumeration, `Warnings` holds tolerated damage and `Error` the damage that stopped it in strict mode.
[<Sealed>]
type LogEvents
    internal (files: string list, schema: Schema, layout: EventLayout, options: ReaderOptions, services: Set<int>) =
    let warnings = ResizeArray<string>()
    let mutable error: DecodeError option = None

    /// Damage met and tolerated, one line each.
    member _.Warnings: IReadOnlyList<string> = warnings
    /// The damage that ended the enumeration in strict mode (or an unreadable file).
    member _.Error = error

    interface IEnumerable<EventView> with
        member _.GetEnumerator() : IEnumerator<EventView> =
            warnings.Clear()
            error <- None

            let events = seq {
                let view = EventView(schema, layout)
                use source = new LogSource(files, LogSourceOptions.Of options)

                while source.Next() do
                    let reader = source.Reader

                    if
                        services.IsEmpty
                        || services.Contains(Event.which reader.Message layout reader.Event)
                    then
                        view.Attach reader
                        yield view

                warnings.AddRange source.Warnings
                error <- source.Error
            }

            events.GetEnumerator()

    interface IEnumerable with
        member this.GetEnumerator() : IEnumerator =
            (this :> IEnumerable<EventView>).GetEnumerator() :> IEnumerator

/// The entry point for reading logs: a file, a segment folder or a route address.
[<RequireQualifiedAccess>]
module Log =

    /// Events of `input` (file, segment folder or route), only of `services` when any are named,
    /// decoded with `schema` (the embedded cereal schema when `None`).
    let events
        (options: ReaderOptions)
        (schema: Schema option)
        (services: string list)
        (input: string)
        : Result<LogEvents, string> =
        let schema = schema |> Option.defaultWith Schema.cereal

        match Route.resolve input, EventLayout.ofSchema schema with
        | Error e, _ -> Error e
        | _, Error e -> Error $"schema: {e}"
        | Ok files, Ok layout ->
            let unknown =
                services |> List.filter (fun s -> (Event.discriminantOf layout s).IsNone)

            match unknown with
            | [] ->
                let wanted = services |> List.choose (Event.discriminantOf layout) |> Set.ofList
                Ok(LogEvents(files, schema, layout, options, wanted))
            | names -> Error $"""unknown service(s): {String.Join(", ", names)}"""

    /// Every CAN frame (`can` and `sendcan`) of `input`, copied out, in log order.
    let canFrames (options: ReaderOptions) (input: string) : Result<CanFrame list, string> =
        events options None [ "can"; "sendcan" ] input
        |> Result.bind (fun events ->
            let frames = [
                for e in events do
                    yield! e.CanFrames()
            ]

            match events.Error with
            | Some e -> Error(DecodeError.describe e)
            | None -> Ok frames)
