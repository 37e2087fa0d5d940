namespace CtsLite.Capnp

open System.Buffers

/// Schema-driven JSON exactly as `capnp convert --short binary:json` (capnp 0.9) prints it:
/// fields outside the union in ordinal order, then the active union member; null pointers left out,
/// except the active union member, which prints its default (`""`, `[]`, a default struct); 64-bit
/// integers as strings; Data as arrays of numbers; floats widened to double and printed `%.15g`, or
/// `%.17g` when that is needed to read back the same double, without a `+` in the exponent; NaN and
/// infinities as strings; unknown union members left out; unknown enum values as numbers.
[<RequireQualifiedAccess>]
module Json =

    /// A double as capnp's JSON prints it (without quotes for finite values).
    val formatDouble: value: float -> string

    /// Writes the struct `s` of type `node` as one line of JSON (no newline). Throws
    /// `DecodeException` when the message is damaged on the way.
    val writeStruct: schema: Schema -> m: Message -> node: StructNode -> s: StructRef -> w: IBufferWriter<byte> -> unit

    /// The message's root struct of type `node` as JSON, or the decode error met on the way.
    val messageToJson:
        schema: Schema ->
        m: Message ->
        node: StructNode ->
        source: string ->
        w: IBufferWriter<byte> ->
            Result<unit, DecodeError>
