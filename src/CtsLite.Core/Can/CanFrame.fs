namespace CtsLite.Can

/// Which of a log's two CAN streams a frame belongs to.
[<Struct; RequireQualifiedAccess>]
type CanService =
    /// `can`: what the panda received (with its TX echoes, src 128+bus).
    | Can
    /// `sendcan`: what openpilot asked the panda to send.
    | Sendcan

    /// The service's name in the log (`can` or `sendcan`).
    member s.Name =
        match s with
        | Can -> "can"
        | Sendcan -> "sendcan"

/// One (address, bus) pair: the key of every per-message statistic, since buses are never mixed.
/// `Bus` is the raw src byte for logs (128+ are TX echoes), the interface number for candump.
[<Struct>]
type CanKey = { Address: uint32; Bus: int }

/// One payload bit of one message (bit N is byte N/8, mask 1 << (N % 8)), on whatever bus.
[<Struct>]
type CanBit = { Address: uint32; Bit: int }

/// A CAN frame copied out of whatever it was read from: a log, a candump capture or a CSV.
/// The zero-copy view of a log's frames is `CanCursor`; this is what is kept and passed around.
type CanFrame = {
    /// Nanoseconds, exact: logMonoTime for logs, the capture time for candump, the CSV's timestamp.
    TimeNs: int64
    Service: CanService
    /// The raw src byte for logs (0–2 receive buses, 128+bus TX echoes, 192+bus rejected TX);
    /// the interface's number for candump.
    Bus: int
    Address: uint32
    Payload: byte array
} with

    /// `TimeNs` in seconds.
    member f.Seconds: float = float f.TimeNs / 1e9

    /// The frame's (address, bus).
    member f.Key: CanKey = { Address = f.Address; Bus = f.Bus }
