namespace CtsLite.Monitors

open System
open System.Text.Json
open System.Text.Json.Nodes
open CtsLite.Capnp
open CtsLite.Logs
open CtsLite.Tools

/// What a monitor needs to start: its validated parameters, the resolver of its `file`
/// parameters (a `dbc`), the schema and the event layout of the events it will be fed.
type MonitorContext = {
    Parameters: ToolParameters
    ResolveFile: string -> Result<string, string>
    Schema: Schema
    Layout: EventLayout
}

/// A running monitor: a state machine fed one event at a time and asked for its state now and
/// then. A step allocates nothing per CAN frame (a car sends thousands a second, a session runs
/// for hours); a snapshot may.
type IMonitorState =
    /// One event of a service the monitor reads, in arrival order.
    abstract Step: message: Message * event: StructRef -> unit
    /// The state now, as an update's `data`.
    abstract Snapshot: unit -> JsonObject

/// A monitor: its descriptor (the same capability shape as a tool's, category `monitor`), its
/// cross-parameter checks, the services it reads (a live source subscribes to those only) and
/// how it starts.
type Monitor = {
    Descriptor: ToolDescriptor
    Check: ToolParameters -> ParameterError list
    Services: ToolParameters -> string list
    Start: MonitorContext -> Result<IMonitorState, ToolError>
}

/// The kinds of message a session sends its watchers.
[<RequireQualifiedAccess>]
type MonitorMessageKind =
    /// The state when a watcher joins.
    | Snapshot
    /// The state, at most every `update_ms`.
    | Update
    /// The source's state changed (connected, silent, reconnecting, ended).
    | SourceStatus
    /// Nothing new, the session is alive.
    | Heartbeat
    /// The session ended; `data` is the final state.
    | End

/// One message of a session's stream: `{"type", "seq", "t", "data"}`, `t` in Unix seconds.
type MonitorMessage = {
    Kind: MonitorMessageKind
    Seq: int64
    T: float
    Data: JsonObject
}

/// Messages as the stream's JSON text.
[<RequireQualifiedAccess>]
module MonitorMessage =

    /// The `type` field of a kind.
    let kindName (kind: MonitorMessageKind) =
        match kind with
        | MonitorMessageKind.Snapshot -> "snapshot"
        | MonitorMessageKind.Update -> "update"
        | MonitorMessageKind.SourceStatus -> "source_status"
        | MonitorMessageKind.Heartbeat -> "heartbeat"
        | MonitorMessageKind.End -> "end"

    /// The message as one line of JSON.
    let toJson (m: MonitorMessage) : string =
        let o = JsonObject()
        o["type"] <- JsonValue.Create(kindName m.Kind)
        o["seq"] <- JsonValue.Create m.Seq
        o["t"] <- JsonValue.Create(Math.Round(m.T, 3))
        // A snapshot object may be sent to several watchers: each message holds its own copy.
        o["data"] <- m.Data.DeepClone()
        o.ToJsonString(JsonSerializerOptions(WriteIndented = false))

/// Small helpers the monitors share.
[<RequireQualifiedAccess>]
module internal MonitorSupport =

    /// `0x13A` (three hex digits at least, as cabana and the truth files write them).
    let addressText (address: uint32) = $"0x{address:X3}"

    /// Now, in Unix seconds (a message's `t`).
    let unixNow () =
        float (DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()) / 1000.0

    /// Seconds, rounded for display (ms).
    let seconds (ns: int64) = Math.Round(float ns / 1e9, 3)

    /// A JSON number or null.
    let number (v: float option) : JsonNode =
        match v with
        | Some x when Double.IsFinite x -> JsonValue.Create x
        | _ -> null
