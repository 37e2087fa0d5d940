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

/// A payload's first 8 bytes as one little-endian number, zero-padded: bit g of the payload (LSB
/// numbering) is bit g of the word. The form in which the bit statistics and the monitors compare
/// payloads without copying them.
[<RequireQualifiedAccess>]
module internal PayloadWord =

    /// The word of `payload`.
    let ofSpan (payload: System.ReadOnlySpan<byte>) : uint64 =
        if payload.Length >= 8 then
            System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian payload
        else
            let mutable w = 0UL

            for j in 0 .. payload.Length - 1 do
                w <- w ||| (uint64 payload[j] <<< (8 * j))

            w

/// CAN ids as users write them in parameters.
[<RequireQualifiedAccess>]
module internal CanId =

    /// `0x13A` or decimal, at most 29 bits (an extended id).
    let parse (text: string) : uint32 option =
        let t = text.Trim()
        let invariant = System.Globalization.CultureInfo.InvariantCulture

        if t.StartsWith("0x", System.StringComparison.OrdinalIgnoreCase) then
            match System.UInt32.TryParse(t.Substring 2, System.Globalization.NumberStyles.HexNumber, invariant) with
            | true, v when v <= 0x1FFFFFFFu -> Some v
            | _ -> None
        else
            match System.UInt32.TryParse(t, System.Globalization.NumberStyles.None, invariant) with
            | true, v when v <= 0x1FFFFFFFu -> Some v
            | _ -> None
