namespace CtsLite.Logs

open System
open System.Collections.Concurrent
open System.IO
open System.Threading
open System.Threading.Tasks
open CtsLite.Capnp

/// How a log file is compressed.
[<RequireQualifiedAccess>]
type Compression =
    | Zstd
    | Bzip2
    | Raw

/// A forward-only stream of decompressed log bytes that knows how far through its compressed
/// input it is (for progress reports).
[<AbstractClass>]
type internal DecompressedStream() =
    inherit ForwardStream()

    /// How far through the compressed input the reading is, 0–1 (0 when its length is unknown).
    abstract InputFraction: float

    /// Decompressed bytes delivered so far.
    abstract Delivered: int64

    override this.Position
        with get () = this.Delivered
        and set _ = raise (NotSupportedException())

/// Counts decompressed bytes and enforces the size and ratio limits while streaming.
[<Sealed>]
type internal LimitedStream(inner: Stream, compressed: Stream, options: ReaderOptions) =
    inherit DecompressedStream()
    let mutable produced = 0L
    static let ratioFloor = 16L * 1024L * 1024L

    override _.Delivered = produced

    override _.InputFraction: float =
        if compressed.CanSeek && compressed.Length > 0L then
            float compressed.Position / float compressed.Length
        else
            0.0

    override _.Read(buffer: byte array, offset: int, count: int) : int =
        // Never read more than one byte past the limit, so everything before it is delivered.
        let count =
            int (min (int64 count) (max 1L (options.MaxDecompressedBytes - produced + 1L)))

        let n =
            try
                inner.Read(buffer, offset, count)
            with
            | :? ZstdSharp.ZstdException as e ->
                Throw.decode produced (DecodeReason.CorruptCompressedData $"zstd: {e.Message}")
            | :? ICSharpCode.SharpZipLib.SharpZipBaseException as e ->
                Throw.decode produced (DecodeReason.CorruptCompressedData $"bzip2: {e.Message}")
            | :? EndOfStreamException ->
                Throw.decode produced (DecodeReason.CorruptCompressedData "unexpected end of compressed data")
            | :? InvalidDataException as e -> Throw.decode produced (DecodeReason.CorruptCompressedData e.Message)

        produced <- produced + int64 n

        if produced > options.MaxDecompressedBytes then
            Throw.decode produced (DecodeReason.DecompressedSizeLimit options.MaxDecompressedBytes)

        if
            produced > ratioFloor
            && float produced > options.MaxCompressionRatio * float (max 1L compressed.Position)
        then
            Throw.decode produced (DecodeReason.CompressionRatioLimit options.MaxCompressionRatio)

        n

    override _.Dispose(disposing: bool) =
        if disposing then
            inner.Dispose()
            compressed.Dispose()

        base.Dispose disposing

/// Decompresses on its own thread, a few chunks ahead of the reader, so decompression and
/// parsing use two cores. Errors (including `DecodeException`) reach the reader at the point of
/// the stream where they happened, after every byte before it.
[<Sealed>]
type internal ReadAheadStream(inner: LimitedStream) =
    inherit DecompressedStream()
    // 64 KiB: the reader starts soon and what it parses is still in cache (256 KiB chunks were
    // measured slower on short logs).
    static let chunkSize = 1 <<< 16
    static let depth = 4
    // A ring of chunks: the worker fills slot w, the reader drains slot r; two semaphores count
    // full and free slots, so nothing is allocated per chunk.
    let chunks =
        Array.init depth (fun _ -> Buffers.ArrayPool<byte>.Shared.Rent chunkSize)

    let lengths = Array.zeroCreate<int> depth
    let errors: exn array = Array.zeroCreate depth
    let full = new SemaphoreSlim(0, depth)
    let empty = new SemaphoreSlim(depth, depth)
    let mutable stopping = false
    let mutable readSlot = 0
    let mutable current = -1
    let mutable currentPos = 0
    let mutable finished = false
    let mutable position = 0L

    let worker =
        Task.Factory.StartNew(
            (fun () ->
                let mutable slot = 0
                let mutable go = true

                while go do
                    empty.Wait()

                    if stopping then
                        go <- false
                    else
                        let buffer = chunks[slot]
                        let mutable n = 0
                        let mutable last = -1

                        try
                            while n < chunkSize && last <> 0 do
                                last <- inner.Read(buffer, n, chunkSize - n)
                                n <- n + last

                            errors[slot] <- null
                        with e ->
                            errors[slot] <- e
                            go <- false

                        // A short chunk (or an error) is the last one.
                        lengths[slot] <- n

                        if n < chunkSize then
                            go <- false

                        slot <- (slot + 1) % depth
                        full.Release() |> ignore),
            TaskCreationOptions.LongRunning
        )

    /// How far through the compressed input the decompression is.
    override _.InputFraction = inner.InputFraction

    override _.Delivered = position

    override _.Read(buffer: byte array, offset: int, count: int) : int =
        if finished || count = 0 then
            0
        else
            let mutable result = -1

            while result < 0 do
                if current < 0 then
                    full.Wait()
                    current <- readSlot
                    readSlot <- (readSlot + 1) % depth
                    currentPos <- 0

                let n = lengths[current]

                if currentPos < n then
                    let k = min count (n - currentPos)
                    Buffer.BlockCopy(chunks[current], currentPos, buffer, offset, k)
                    currentPos <- currentPos + k
                    position <- position + int64 k
                    result <- k
                else
                    // Drained. The bytes before an error were delivered; now the error. A full
                    // chunk hands its slot back; a short one was the last.
                    match errors[current] with
                    | null when n = chunkSize ->
                        empty.Release() |> ignore
                        current <- -1
                    | null ->
                        finished <- true
                        result <- 0
                    | e ->
                        finished <- true
                        raise e

            result

    override _.Dispose(disposing: bool) =
        if disposing then
            stopping <- true
            // Wakes a worker waiting for a free slot; one reading returns after its read.
            try
                empty.Release() |> ignore
            with :? SemaphoreFullException ->
                ()

            try
                worker.Wait()
            with :? AggregateException ->
                ()

            inner.Dispose()
            full.Dispose()
            empty.Dispose()

            for c in chunks do
                Buffers.ArrayPool<byte>.Shared.Return c

        base.Dispose disposing

/// A stream's first bytes, read to detect its compression, put back in front of the rest: a
/// network or pipe stream cannot seek back to its start.
[<Sealed>]
type internal PrefixedStream(head: byte array, rest: Stream) =
    inherit ForwardStream()
    let mutable at = 0
    let mutable delivered = 0L

    override _.Read(buffer: byte array, offset: int, count: int) =
        if at < head.Length then
            let n = min count (head.Length - at)
            Buffer.BlockCopy(head, at, buffer, offset, n)
            at <- at + n
            delivered <- delivered + int64 n
            n
        else
            let n = rest.Read(buffer, offset, count)
            delivered <- delivered + int64 n
            n

    override _.Position
        with get () = delivered
        and set _ = raise (NotSupportedException())

    override _.Dispose(disposing: bool) =
        if disposing then
            rest.Dispose()

        base.Dispose disposing

/// Detecting and undoing the compression of log files.
[<RequireQualifiedAccess>]
module Compression =

    /// By magic bytes first (zstd `28 B5 2F FD` or a skippable frame, bzip2 `BZh1`–`BZh9`), by
    /// extension second; anything else is raw Cap'n Proto.
    let detect (head: ReadOnlySpan<byte>) (fileName: string) : Compression =
        let isZstd =
            head.Length >= 4
            && ((head[0] = 0x28uy && head[1] = 0xB5uy && head[2] = 0x2Fuy && head[3] = 0xFDuy)
                || (head[0] &&& 0xF0uy = 0x50uy
                    && head[1] = 0x2Auy
                    && head[2] = 0x4Duy
                    && head[3] = 0x18uy))

        let isBzip2 =
            head.Length >= 4
            && head[0] = byte 'B'
            && head[1] = byte 'Z'
            && head[2] = byte 'h'
            && head[3] >= byte '1'
            && head[3] <= byte '9'

        if isZstd then
            Compression.Zstd
        elif isBzip2 then
            Compression.Bzip2
        elif head.Length = 0 && fileName.EndsWith(".zst", StringComparison.OrdinalIgnoreCase) then
            Compression.Zstd
        elif head.Length = 0 && fileName.EndsWith(".bz2", StringComparison.OrdinalIgnoreCase) then
            Compression.Bzip2
        else
            Compression.Raw

    /// Whether the native zstd decoder loads on this machine (libzstd.so.1), with its version.
    let nativeZstd () : string option =
        ZstdNative.version.Value
        |> Option.map (fun v -> $"{v / 10000u}.{v / 100u % 100u}.{v % 100u}")

    /// Whether `options` read zstd with the native decoder here; an error when they insist on it
    /// and it does not load.
    let internal usesNativeZstd (options: ReaderOptions) : Result<bool, string> =
        match options.Decompressor with
        | Decompressor.Managed -> Ok false
        | Decompressor.Auto -> Ok(ZstdNative.version.Value.IsSome)
        | Decompressor.Native when ZstdNative.version.Value.IsSome -> Ok true
        | Decompressor.Native -> Error $"the native zstd decoder ({ZstdNative.Library}) does not load on this machine"

    /// Wraps `compressed` (positioned at its start) in the matching decompressor, with limits.
    let decompress (compressed: Stream) (kind: Compression) (options: ReaderOptions) : Stream =
        let inner: Stream =
            match kind with
            | Compression.Zstd when usesNativeZstd options = Ok true -> new NativeZstdStream(compressed)
            | Compression.Zstd -> new ZstdSharp.DecompressionStream(compressed, leaveOpen = true)
            // bzip2 blocks are independent: one per core (the file is read again, sequentially,
            // should anything go wrong, so errors are the sequential decoder's).
            | Compression.Bzip2 when Environment.ProcessorCount >= 2 && compressed.CanSeek ->
                new ParallelBzip2Stream(compressed, Environment.ProcessorCount, true)
            | Compression.Bzip2 -> new ICSharpCode.SharpZipLib.BZip2.BZip2InputStream(compressed, IsStreamOwner = false)
            | Compression.Raw -> compressed

        let limited = new LimitedStream(inner, compressed, options)

        // Raw input needs no decompression thread; with one core there is nothing to overlap.
        match kind with
        | Compression.Raw -> limited :> Stream
        | _ when Environment.ProcessorCount < 2 -> limited :> Stream
        | _ -> new ReadAheadStream(limited) :> Stream

    /// The compression of `stream` (a log's bytes from its start), from its first bytes, and the
    /// stream again from its start (the same stream when it can seek back, else one that gives
    /// the bytes read first and then the rest; disposing it disposes `stream`).
    let detectStream (stream: Stream) (name: string) (options: ReaderOptions) : Result<Stream * Compression, string> =
        match usesNativeZstd options with
        | Error e -> Error $"{name}: {e}"
        | Ok _ ->
            try
                let head = Array.zeroCreate<byte> 4
                let mutable n = 0
                let mutable ended = false

                while n < head.Length && not ended do
                    let got = stream.Read(head, n, head.Length - n)
                    if got = 0 then ended <- true else n <- n + got

                let kind = detect (ReadOnlySpan(head, 0, n)) name

                let rewound: Stream =
                    if stream.CanSeek then
                        stream.Seek(int64 -n, SeekOrigin.Current) |> ignore
                        stream
                    else
                        new PrefixedStream(Array.sub head 0 n, stream)

                Ok(rewound, kind)
            with
            | :? IOException as e -> Error $"{name}: {e.Message}"
            | :? NotSupportedException -> Error $"{name}: the stream cannot be read"
            | :? ObjectDisposedException -> Error $"{name}: the stream is closed"

    /// Opens a file for reading its decompressed bytes.
    let openFile (path: string) (options: ReaderOptions) : Result<Stream * Compression, string> =
        try
            match CtsLite.Io.regularFile path, usesNativeZstd options with
            | Error e, _ -> Error $"{path}: {e}"
            | _, Error e -> Error $"{path}: {e}"
            | Ok(), Ok _ ->
                let file =
                    new FileStream(
                        path,
                        FileMode.Open,
                        FileAccess.Read,
                        FileShare.Read,
                        1 <<< 16,
                        FileOptions.SequentialScan
                    )

                match detectStream file path options with
                | Ok(rewound, kind) -> Ok(decompress rewound kind options, kind)
                | Error e ->
                    file.Dispose()
                    Error e
        with
        | :? FileNotFoundException
        | :? DirectoryNotFoundException -> Error $"{path}: no such file"
        | :? UnauthorizedAccessException -> Error $"{path}: permission denied"
        | :? IOException as e -> Error $"{path}: {e.Message}"
