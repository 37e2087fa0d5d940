namespace CtsLite.Can

open System
open System.Collections.Generic
open System.Globalization
open System.IO

/// Payload bits and their three naming conventions, which must never be mixed up.
/// Bit N is byte N/8, mask 1 << (N % 8) (the payload read as a little-endian integer).
[<RequireQualifiedAccess>]
module Bits =

    /// Bit `n` of the payload (false beyond its end).
    let get (payload: ReadOnlySpan<byte>) (n: int) : bool =
        n >= 0
        && (n >>> 3) < payload.Length
        && (payload[n >>> 3] >>> (n &&& 7)) &&& 1uy = 1uy

    /// Positions whose value differs; for the extra bytes of the longer payload every set bit counts.
    let changed (previous: byte array) (current: byte array) : int list =
        let longest = max previous.Length current.Length

        [
            for b in 0 .. longest - 1 do
                let x =
                    (if b < previous.Length then previous[b] else 0uy)
                    ^^^ (if b < current.Length then current[b] else 0uy)

                for i in 0..7 do
                    if (x >>> i) &&& 1uy = 1uy then
                        b * 8 + i
        ]

    /// can-bitwatch's `B<byte>b<msb>`: MSB-first inside the byte (bit 34 is `B4b5`).
    let bitwatchLabel (bit: int) : string = $"B{bit / 8}b{7 - bit % 8}"

    /// Parses `B<byte>b<msb>` into a bit number.
    let parseBitwatch (label: string) : int option =
        let t = label.Trim()
        let b = t.IndexOf 'b', t.LastIndexOf 'b'

        match t.Length > 3 && t[0] = 'B', b with
        | true, (_, i) when i > 1 ->
            match Int32.TryParse(t.AsSpan(1, i - 1)), Int32.TryParse(t.AsSpan(i + 1)) with
            | (true, byteIndex), (true, msb) when byteIndex >= 0 && byteIndex < 64 && msb >= 0 && msb <= 7 ->
                Some(byteIndex * 8 + 7 - msb)
            | _ -> None
        | _ -> None

    /// The analyzer's LSB label: `Byte{b} bit{lsb} (LSB)`.
    let lsbLabel (bit: int) : string = $"Byte{bit / 8} bit{bit % 8} (LSB)"

    /// The analyzer's MSB label: `MSB B{b}b{7 − lsb}`.
    let msbLabel (bit: int) : string = $"MSB B{bit / 8}b{7 - bit % 8}"

    /// A bit selector `0xADDR:bN` (global LSB index), `0xADDR:B<byte>b<msb>`, or the Python comma-tools' legacy
    /// `0xADDR:MSB Bnn`, where nn mirrors a 64-bit integer (bit 63 − nn).
    let parseSelector (selector: string) : Result<CanBit, string> =
        let fail () =
            Error $"'{selector}': expected 0xADDR:bN, 0xADDR:B<byte>b<msb> or (legacy) 0xADDR:MSB Bnn"

        match selector.Split(':', 2) with
        | [| addressText; bitText |] ->
            let a = addressText.Trim()

            let address =
                if a.StartsWith("0x", StringComparison.OrdinalIgnoreCase) then
                    match
                        UInt32.TryParse(a.Substring 2, NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture)
                    with
                    | true, v -> Some v
                    | false, _ -> None
                else
                    None

            let bitPart = bitText.Trim()

            let bit =
                if bitPart.StartsWith("MSB ", StringComparison.Ordinal) then
                    let rest = bitPart.Substring(4).Trim()

                    match rest.Length > 1 && rest[0] = 'B', Int32.TryParse(rest.AsSpan 1) with
                    | true, (true, nn) when nn >= 0 && nn <= 63 -> Some(63 - nn)
                    | _ -> None
                elif bitPart.StartsWith "B" then
                    parseBitwatch bitPart
                elif bitPart.StartsWith "b" then
                    match Int32.TryParse(bitPart.AsSpan 1) with
                    | true, n when n >= 0 && n < 512 -> Some n
                    | _ -> None
                else
                    None

            match address, bit with
            | Some a, Some b -> Ok { Address = a; Bit = b }
            | _ -> fail ()
        | _ -> fail ()

/// Change statistics of one (address, bus).
type ChangeStats = {
    Address: uint32
    Bus: int
    Messages: int
    /// Messages whose payload differed from the previous one (the Python comma-tools' `total_changes`).
    MessagesChanged: int
    /// Flips per bit position.
    FlipsPerBit: IReadOnlyDictionary<int, int>
    /// MessagesChanged ÷ Messages.
    ChangeRate: float
    /// The 10 bits with most flips (ties: lower bit first).
    MostActiveBits: (int * int) list
}

/// An edge of a watched bit.
type BitEdge = {
    Time: float
    Address: uint32
    Bus: int
    Bit: int
    /// True for 0→1.
    Rising: bool
}

/// The discovery analyses of the Python comma-tools' `bit_analysis`, per (address, bus): buses are never mixed.
[<RequireQualifiedAccess>]
module BitAnalysis =

    let private byKey (frames: CanFrame seq) =
        frames
        |> Seq.groupBy (fun f -> f.Key)
        |> Seq.map (fun (key, fs) -> key, Array.ofSeq fs)
        |> Seq.sortBy (fun (key, _) -> key.Address, key.Bus)
        |> List.ofSeq

    /// Change statistics for every (address, bus) with at least 2 messages.
    let changeStats (frames: CanFrame seq) : ChangeStats list = [
        for key, fs in byKey frames do
            if fs.Length >= 2 then
                let flips = Dictionary<int, int>()
                let mutable changedMessages = 0

                for i in 1 .. fs.Length - 1 do
                    match Bits.changed fs[i - 1].Payload fs[i].Payload with
                    | [] -> ()
                    | bits ->
                        changedMessages <- changedMessages + 1

                        for b in bits do
                            flips[b] <-
                                (match flips.TryGetValue b with
                                 | true, n -> n + 1
                                 | _ -> 1)

                {
                    Address = key.Address
                    Bus = key.Bus
                    Messages = fs.Length
                    MessagesChanged = changedMessages
                    FlipsPerBit = flips
                    ChangeRate = float changedMessages / float fs.Length
                    MostActiveBits =
                        flips
                        |> Seq.map (fun kv -> kv.Key, kv.Value)
                        |> Seq.sortBy (fun (bit, n) -> -n, bit)
                        |> Seq.truncate 10
                        |> List.ofSeq
                }
    ]

    /// Toggle times of every bit, per (address, bus), from consecutive frames.
    let toggles (frames: CanFrame seq) : Map<CanKey, Map<int, float list>> =
        byKey frames
        |> List.map (fun (key, fs) ->
            let times = Dictionary<int, ResizeArray<float>>()

            for i in 1 .. fs.Length - 1 do
                for b in Bits.changed fs[i - 1].Payload fs[i].Payload do
                    match times.TryGetValue b with
                    | true, l -> l.Add fs[i].Seconds
                    | false, _ -> times[b] <- ResizeArray [ fs[i].Seconds ]

            key, (times |> Seq.map (fun kv -> kv.Key, List.ofSeq kv.Value) |> Map.ofSeq))
        |> Map.ofList

    /// Edges of watched bits in time order; the first frame of each (address, bus) only initializes.
    let edges (watched: CanBit list) (frames: CanFrame seq) : BitEdge list =
        let wanted =
            watched
            |> List.groupBy (fun w -> w.Address)
            |> List.map (fun (a, bits) -> a, bits |> List.map (fun w -> w.Bit))
            |> dict

        let last = Dictionary<struct (uint32 * int * int), bool>()

        [
            for f in frames |> Seq.sortBy (fun f -> f.TimeNs) do
                match wanted.TryGetValue f.Address with
                | true, bits ->
                    for bit in bits do
                        let v = Bits.get (ReadOnlySpan f.Payload) bit
                        let key = struct (f.Address, f.Bus, bit)

                        match last.TryGetValue key with
                        | true, previous when previous <> v ->
                            yield {
                                Time = f.Seconds
                                Address = f.Address
                                Bus = f.Bus
                                Bit = bit
                                Rising = v
                            }
                        | _ -> ()

                        last[key] <- v
                | false, _ -> ()
        ]

    /// Bits that toggled, and toggled only inside [start, stop] (inclusive), per (address, bus),
    /// with their toggle counts, in order of first toggle.
    let activeOnlyInWindow (start: float) (stop: float) (frames: CanFrame seq) : (CanKey * (int * int) list) list = [
        for KeyValue(key, bits) in toggles frames do
            let inside =
                bits
                |> Map.toList
                |> List.filter (fun (_, times) ->
                    not times.IsEmpty && times |> List.forall (fun t -> t >= start && t <= stop))
                |> List.sortBy (fun (bit, times) -> List.head times, bit)
                |> List.map (fun (bit, times) -> bit, times.Length)

            if not inside.IsEmpty then
                key, inside
    ]
