namespace CtsLite.Can

open System
open FsToolkit.ErrorHandling

/// A decoded signal value.
[<Struct>]
type SignalValue = {
    /// The raw integer (sign-extended for signed signals; the IEEE bits for float signals).
    Raw: int64
    /// raw × factor + offset (or the float itself for float signals).
    Physical: float
}

/// Reading and writing signals in payloads of 0..64 bytes. Bit N of a payload is byte N/8, mask
/// 1 << (N % 8); Intel signals start at their LSB and run upwards, Motorola signals start at their
/// MSB and run downwards within a byte, then on to the next byte ("sawtooth" numbering).
[<RequireQualifiedAccess; CompilationRepresentation(CompilationRepresentationFlags.ModuleSuffix)>]
module Signal =

    let inline private bit (payload: ReadOnlySpan<byte>) (n: int) =
        (payload[n >>> 3] >>> (n &&& 7)) &&& 1uy

    /// The next bit position when walking a Motorola signal from its MSB.
    let inline private motorolaNext (pos: int) =
        if pos &&& 7 = 0 then pos + 15 else pos - 1

    /// Whether every bit of the signal lies inside a payload of `length` bytes.
    let fits (signal: Signal) (length: int) : bool =
        let bits = length * 8

        match signal.ByteOrder with
        | ByteOrder.LittleEndian -> signal.StartBit + signal.Length <= bits
        | ByteOrder.BigEndian ->
            let mutable pos = signal.StartBit
            let mutable ok = pos < bits

            for _ in 2 .. signal.Length do
                pos <- motorolaNext pos
                ok <- ok && pos < bits

            ok

    /// The raw bits of the signal, unsigned, read only from the signal's own bits.
    [<System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)>]
    let rawBits (signal: Signal) (payload: ReadOnlySpan<byte>) : uint64 =
        let mutable value = 0UL

        match signal.ByteOrder with
        | ByteOrder.LittleEndian ->
            // Byte-wise: gather the covered bytes, then shift and mask.
            let first = signal.StartBit >>> 3
            let last = (signal.StartBit + signal.Length - 1) >>> 3
            let shift = signal.StartBit &&& 7

            if last - first < 8 then
                let mutable acc = 0UL

                for b in last .. -1 .. first do
                    acc <- (acc <<< 8) ||| uint64 payload[b]

                value <- acc >>> shift
            else
                // 9 bytes (a 64-bit signal not byte-aligned): bit by bit.
                for i in 0 .. signal.Length - 1 do
                    value <- value ||| (uint64 (bit payload (signal.StartBit + i)) <<< i)
        | ByteOrder.BigEndian ->
            // In "MSB-first" numbering (bit 7 of byte 0 is 0) a Motorola signal is contiguous:
            // read the covered bytes as a big-endian integer, then shift and mask.
            let msb = (signal.StartBit >>> 3) * 8 + (7 - (signal.StartBit &&& 7))
            let lsb = msb + signal.Length - 1
            let first = msb >>> 3
            let last = lsb >>> 3

            if last - first < 8 then
                let mutable acc = 0UL

                for b in first..last do
                    acc <- (acc <<< 8) ||| uint64 payload[b]

                value <- acc >>> (7 - (lsb &&& 7))
            else
                let mutable pos = signal.StartBit

                for _ in 1 .. signal.Length do
                    value <- (value <<< 1) ||| uint64 (bit payload pos)
                    pos <- motorolaNext pos

        if signal.Length = 64 then
            value
        else
            value &&& ((1UL <<< signal.Length) - 1UL)

    /// Decodes the signal (the caller checks `fits` and multiplexing).
    let decode (signal: Signal) (payload: ReadOnlySpan<byte>) : SignalValue =
        let bits = rawBits signal payload

        match signal.ValueType with
        | SignalValueType.Float32 ->
            let f = float (BitConverter.UInt32BitsToSingle(uint32 bits))

            {
                Raw = int64 bits
                Physical = f * signal.Factor + signal.Offset
            }
        | SignalValueType.Float64 ->
            let f = BitConverter.UInt64BitsToDouble bits

            {
                Raw = int64 bits
                Physical = f * signal.Factor + signal.Offset
            }
        | SignalValueType.Integer ->
            let raw =
                if
                    signal.Signed
                    && signal.Length < 64
                    && (bits >>> (signal.Length - 1)) &&& 1UL = 1UL
                then
                    int64 bits - (1L <<< signal.Length)
                else
                    int64 bits

            {
                Raw = raw
                Physical = float raw * signal.Factor + signal.Offset
            }

    /// Writes `raw` (two's complement for signed signals) into the signal's bits; other bits stay.
    let encodeRaw (signal: Signal) (raw: int64) (payload: Span<byte>) : unit =
        let value = uint64 raw
        let mutable pos = signal.StartBit

        // Walk the signal's bits from its MSB (Motorola) or LSB (Intel), setting or clearing each.
        for k in 0 .. signal.Length - 1 do
            let i, n =
                match signal.ByteOrder with
                | ByteOrder.LittleEndian -> k, signal.StartBit + k
                | ByteOrder.BigEndian -> signal.Length - 1 - k, pos

            let mask = 1uy <<< (n &&& 7)

            payload[n >>> 3] <-
                if (value >>> i) &&& 1UL = 1UL then
                    payload[n >>> 3] ||| mask
                else
                    payload[n >>> 3] &&& ~~~mask

            pos <- motorolaNext pos

    /// The raw value for a physical value: round((physical − offset) ÷ factor), clamped to the
    /// signal's range of raw values (or the IEEE bits for float signals).
    let toRaw (signal: Signal) (physical: float) : int64 =
        match signal.ValueType with
        | SignalValueType.Float32 ->
            int64 (BitConverter.SingleToUInt32Bits(float32 ((physical - signal.Offset) / signal.Factor)))
        | SignalValueType.Float64 -> BitConverter.DoubleToInt64Bits((physical - signal.Offset) / signal.Factor)
        | SignalValueType.Integer ->
            let r =
                Math.Round((physical - signal.Offset) / signal.Factor, MidpointRounding.AwayFromZero)

            let lo, hi =
                if signal.Signed then
                    (if signal.Length = 64 then
                         float Int64.MinValue
                     else
                         -(2.0 ** float (signal.Length - 1))),
                    (if signal.Length = 64 then
                         float Int64.MaxValue
                     else
                         2.0 ** float (signal.Length - 1) - 1.0)
                else
                    0.0,
                    (if signal.Length >= 63 then
                         float Int64.MaxValue
                     else
                         2.0 ** float signal.Length - 1.0)

            int64 (max lo (min hi r))

    /// Encodes a physical value.
    let encode (signal: Signal) (physical: float) (payload: Span<byte>) : unit =
        encodeRaw signal (toRaw signal physical) payload

    /// The value table label of a raw value, if any.
    let label (signal: Signal) (raw: int64) : string option =
        match signal.Values.TryGetValue raw with
        | true, l -> Some l
        | false, _ -> None

    /// Whether a multiplexed signal is present given the message's other signals: its multiplexor
    /// (the message's `M` signal, or the one `SG_MUL_VAL_` names) must hold a matching value.
    let isPresent (message: DbcMessage) (signal: Signal) (payload: ReadOnlySpan<byte>) : bool =
        let selector =
            match signal.MultiplexorRanges with
            | Some(name, ranges) -> Some(name, ranges)
            | None ->
                match signal.Multiplexing with
                | Multiplexing.Multiplexed v
                | Multiplexing.MultiplexedMultiplexor v ->
                    message.Signals
                    |> List.tryFind (fun s ->
                        match s.Multiplexing with
                        | Multiplexing.Multiplexor -> true
                        | _ -> false)
                    |> Option.map (fun m -> m.Name, [ v, v ])
                | _ -> None

        match signal.Multiplexing, selector with
        | (Multiplexing.None | Multiplexing.Multiplexor), _ -> true
        | _, None -> false
        | _, Some(name, ranges) ->
            match message.Signals |> List.tryFind (fun s -> s.Name = name) with
            | None -> false
            | Some mux ->
                let v = rawBits mux payload
                ranges |> List.exists (fun (lo, hi) -> v >= lo && v <= hi)

/// Signals as users name them: `MESSAGE.SIGNAL`, the message by name or by address (`0x146.Set`).
[<RequireQualifiedAccess>]
module SignalRef =

    /// The message and signal `name` names in `db`, or what is missing.
    let resolve (db: Database) (name: string) : Result<DbcMessage * Signal, string> =
        let dot = name.LastIndexOf '.'

        if dot <= 0 || dot = name.Length - 1 then
            Error $"'{name}' is not MESSAGE.SIGNAL"
        else
            let messageName, signalName = name.Substring(0, dot), name.Substring(dot + 1)

            let message =
                if messageName.StartsWith("0x", StringComparison.OrdinalIgnoreCase) then
                    match
                        UInt32.TryParse(
                            messageName.Substring 2,
                            Globalization.NumberStyles.HexNumber,
                            Globalization.CultureInfo.InvariantCulture
                        )
                    with
                    | true, id -> db.TryMessage id
                    | _ -> None
                else
                    db.TryMessageNamed messageName

            match message with
            | None -> Error $"the DBC has no message '{messageName}'"
            | Some m ->
                match m.Signals |> List.tryFind (fun s -> s.Name = signalName) with
                | None -> Error $"{m.Name} has no signal '{signalName}'"
                | Some s -> Ok(m, s)

/// Which signals to decode for each address, and the rule that says whether a signal is in a
/// frame (its bits fit the payload, and a multiplexed signal's multiplexor holds its value): one
/// plan for `cts dbc decode` and `signal-export`.
[<Sealed>]
type DecodePlan internal (byAddress: Collections.Generic.IReadOnlyDictionary<uint32, DbcMessage * Signal list>) =

    /// The message and the signals wanted at `address`, if any.
    member _.TryFind(address: uint32) : (DbcMessage * Signal list) option =
        match byAddress.TryGetValue address with
        | true, entry -> Some entry
        | false, _ -> None

/// Building decode plans.
[<RequireQualifiedAccess>]
module DecodePlan =

    /// Every signal of every message when `names` is empty, else the named `MESSAGE.SIGNAL`s;
    /// the first name that does not resolve is the error.
    let create (db: Database) (names: string list) : Result<DecodePlan, string> =
        let entries =
            match names with
            | [] -> Ok(db.Messages |> List.map (fun m -> m.Id, (m, m.Signals)))
            | _ ->
                names
                |> List.traverseResultM (fun n -> SignalRef.resolve db n |> Result.mapError (fun e -> $"{n}: {e}"))
                |> Result.map (fun pairs ->
                    pairs
                    |> List.groupBy (fun (m, _) -> m.Id)
                    |> List.map (fun (id, pairs) -> id, (fst pairs.Head, pairs |> List.map snd)))

        entries
        |> Result.map (fun e -> DecodePlan(dict e |> Collections.Generic.Dictionary))

    /// Whether `signal` is in this frame of `message`.
    let present (message: DbcMessage) (signal: Signal) (payload: ReadOnlySpan<byte>) : bool =
        Signal.fits signal payload.Length && Signal.isPresent message signal payload

/// Checksums and counters as opendbc defines them, for integrity counts.
[<RequireQualifiedAccess>]
module Checksum =

    /// Subaru: byte 0 = (address low byte + address high byte + bytes 1..n−1) & 0xFF.
    let subaru (address: uint32) (payload: ReadOnlySpan<byte>) : byte =
        let mutable sum = int (address &&& 0xFFu) + int ((address >>> 8) &&& 0xFFu)

        for i in 1 .. payload.Length - 1 do
            sum <- sum + int payload[i]

        byte (sum &&& 0xFF)

    /// Toyota: last byte = (length + address low byte + address high byte + bytes 0..n−2) & 0xFF.
    let toyota (address: uint32) (payload: ReadOnlySpan<byte>) : byte =
        let mutable sum =
            payload.Length + int (address &&& 0xFFu) + int ((address >>> 8) &&& 0xFFu)

        for i in 0 .. payload.Length - 2 do
            sum <- sum + int payload[i]

        byte (sum &&& 0xFF)

    /// Whether a Subaru frame's checksum (byte 0) is right.
    let subaruValid (address: uint32) (payload: ReadOnlySpan<byte>) : bool =
        payload.Length > 0 && payload[0] = subaru address payload

    /// Whether a Toyota frame's checksum (last byte) is right.
    let toyotaValid (address: uint32) (payload: ReadOnlySpan<byte>) : bool =
        payload.Length > 0 && payload[payload.Length - 1] = toyota address payload

    /// Whether `next` follows `previous` for a counter of `bits` bits (wrapping).
    let counterFollows (bits: int) (previous: uint64) (next: uint64) : bool =
        let modulo = 1UL <<< bits
        (previous + 1UL) % modulo = next
