namespace CtsLite.Capnp

open System
open System.Runtime.CompilerServices

/// Which decompressor undoes zstd: the system's native libzstd (the speed of `zstd -dc`) or the
/// managed port that runs everywhere.
[<RequireQualifiedAccess>]
type Decompressor =
    /// Native where `libzstd.so.1` loads, managed elsewhere.
    | Auto
    /// Native only: a file cannot be opened where the library is missing.
    | Native
    /// Managed only (ZstdSharp; bzip2 is always SharpZipLib).
    | Managed

/// Limits that keep hostile or damaged input from costing unbounded time or memory, and the
/// decompressor to use.
type ReaderOptions = {
    /// Words a single message may make the reader visit (capnp's default: 8 Mi words = 64 MiB).
    TraversalLimitWords: int64
    /// Pointers followed from the root, at most.
    NestingLimit: int
    /// Segments in one message, at most.
    MaxSegments: int
    /// Words in one message (all segments), at most; checked before anything is allocated.
    MaxMessageWords: int64
    /// Decompressed bytes of one file, at most.
    MaxDecompressedBytes: int64
    /// Decompressed ÷ compressed bytes, at most (checked once 16 MiB are out).
    MaxCompressionRatio: float
    /// Turns damage (truncation, corruption, trailing garbage) into an error instead of a warning.
    Strict: bool
    /// The zstd decompressor (both give the same bytes and the same errors).
    Decompressor: Decompressor
} with

    /// capnp's defaults for traversal and nesting; 512 segments; 64 MiB messages; 16 GiB per file;
    /// a ratio of 1000 (real logs compress 5–20×); the native zstd decoder where it loads.
    static member Default = {
        TraversalLimitWords = 8L * 1024L * 1024L
        NestingLimit = 64
        MaxSegments = 512
        MaxMessageWords = 8L * 1024L * 1024L
        MaxDecompressedBytes = 16L * 1024L * 1024L * 1024L
        MaxCompressionRatio = 1000.0
        Strict = false
        Decompressor = Decompressor.Auto
    }

/// Why bytes could not be decoded.
[<RequireQualifiedAccess>]
type DecodeReason =
    | Truncated of needed: int64 * available: int64
    | SegmentTable of detail: string
    | MessageTooLarge of words: int64 * limit: int64
    | PointerOutOfBounds
    | BadFarPointer of detail: string
    | UnexpectedPointer of expected: string * found: string
    | CapabilityPointer
    | TraversalLimit of limitWords: int64
    | NestingLimit of limit: int
    | TextNotTerminated
    | DecompressedSizeLimit of limitBytes: int64
    | CompressionRatioLimit of limit: float
    | CorruptCompressedData of detail: string
    | Schema of detail: string
    /// The file could not be opened or read at all (missing, permissions).
    | Unreadable of detail: string
    /// Not one event could be read: an empty file, or one that ends before its first message.
    | NoEvents
    /// A CAN frame whose payload is longer than any CAN frame's (64 bytes, CAN FD).
    | CanPayloadTooLong of length: int

/// A decoding failure: where (source name and byte offset in the decompressed stream) and why.
type DecodeError = {
    Source: string
    Offset: int64
    Reason: DecodeReason
}

/// Describing decode errors.
[<RequireQualifiedAccess>]
module DecodeError =

    /// The reason in words.
    let reason (r: DecodeReason) : string =
        match r with
        | DecodeReason.Truncated(needed, available) -> $"truncated: {needed} bytes needed, {available} available"
        | DecodeReason.SegmentTable detail -> $"bad segment table: {detail}"
        | DecodeReason.MessageTooLarge(words, limit) -> $"message of {words} words exceeds the limit of {limit}"
        | DecodeReason.PointerOutOfBounds -> "pointer out of bounds"
        | DecodeReason.BadFarPointer detail -> $"bad far pointer: {detail}"
        | DecodeReason.UnexpectedPointer(expected, found) -> $"expected a {expected} pointer, found a {found} pointer"
        | DecodeReason.CapabilityPointer -> "capability pointer in a log message"
        | DecodeReason.TraversalLimit limit ->
            $"traversal limit of {limit} words exceeded (pointer cycle or amplification?)"
        | DecodeReason.NestingLimit limit -> $"nesting limit of {limit} exceeded"
        | DecodeReason.TextNotTerminated -> "text is not NUL-terminated"
        | DecodeReason.DecompressedSizeLimit limit -> $"decompressed size exceeds the limit of {limit} bytes"
        | DecodeReason.CompressionRatioLimit limit -> $"compression ratio exceeds {limit} (decompression bomb?)"
        | DecodeReason.CorruptCompressedData detail -> $"corrupt compressed data: {detail}"
        | DecodeReason.Schema detail -> $"schema: {detail}"
        | DecodeReason.Unreadable detail -> $"cannot read: {detail}"
        | DecodeReason.NoEvents -> "no event could be read (an empty file, or one that ends before its first message)"
        | DecodeReason.CanPayloadTooLong length ->
            $"a CAN frame with a payload of {length} bytes (CAN FD carries at most 64)"

    /// `source: byte N: reason` (`byte N: reason` for bytes without a name).
    let describe (e: DecodeError) : string =
        if String.IsNullOrEmpty e.Source then
            $"byte {e.Offset}: {reason e.Reason}"
        else
            $"{e.Source}: byte {e.Offset}: {reason e.Reason}"

/// Thrown where bytes cannot be decoded and no `Result` can be returned: the allocation-free
/// readers (`StructRef`, `ListRef`, `CanCursor`, `Event.*`) used directly over a message. The
/// entry points that name a file (`LogReader`, `Log`, `Framing`, `Json`) catch it and report a
/// `DecodeError` instead, with the file as `Source`; here `Source` is empty.
type DecodeException(error: DecodeError) =
    inherit Exception(DecodeError.describe error)

    /// Where (byte offset in the decompressed stream) and why.
    member _.Error: DecodeError = error

/// Matching `DecodeException` at the boundaries that turn it into a `DecodeError`.
[<AutoOpen>]
module internal DecodeExceptionPattern =

    /// The offset and reason of a `DecodeException`.
    let (|Decode|_|) (e: exn) : (int64 * DecodeReason) option =
        match e with
        | :? DecodeException as d -> Some(d.Error.Offset, d.Error.Reason)
        | _ -> None

/// The one cold path for throwing, so the hot readers stay small.
module internal Throw =

    [<MethodImpl(MethodImplOptions.NoInlining)>]
    let decode (offset: int64) (reason: DecodeReason) : 'a =
        raise (
            DecodeException {
                Source = ""
                Offset = offset
                Reason = reason
            }
        )
