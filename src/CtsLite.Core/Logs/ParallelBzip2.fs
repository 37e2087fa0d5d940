namespace CtsLite.Logs

open System
open System.Collections.Generic
open System.IO
open System.Runtime.InteropServices
open System.Threading
open System.Threading.Tasks

/// The independent blocks of a bzip2 stream. Each block starts with a 48-bit magic at any bit
/// offset and carries its own CRC, so one can be cut out, wrapped as a one-block stream of its own
/// (header, block, end-of-stream magic, and as the stream's CRC the block's, which is what a
/// one-block stream's combined CRC is) and decoded alone.
module internal Bzip2Blocks =

    [<Literal>]
    let BlockMagic = 0x314159265359UL

    [<Literal>]
    let EndMagic = 0x177245385090UL

    let private mask48 = (1UL <<< 48) - 1UL

    /// The 48 bits from bit `bit` of `data[0 .. length)` (most significant first; zeros past the end).
    let bitsAt (data: byte array) (length: int) (bit: int64) : uint64 =
        let first = int (bit >>> 3)
        let mutable v = 0UL

        for i in 0..7 do
            let b = if first + i < length then uint64 data[first + i] else 0UL
            v <- (v <<< 8) ||| b

        (v >>> (16 - int (bit &&& 7L))) &&& mask48

    /// For each bit shift 0–7 of a magic, the four whole bytes it always covers, and where they
    /// sit from the byte holding its first bit.
    let private patterns (magic: uint64) = [|
        for s in 0..7 ->
            let skip = if s = 0 then 0 else 1

            let bytes =
                Array.init 4 (fun j -> byte ((magic >>> (40 - 8 * (j + skip) + s)) &&& 0xFFUL))

            s, skip, bytes
    |]

    let private blockPatterns = patterns BlockMagic
    let private endPatterns = patterns EndMagic

    /// Bit offsets in `[fromByte * 8, ..)` of `data[0 .. length)` where a block or the end magic
    /// starts, in order, with whether it is the end; every candidate is checked on all 48 bits.
    let scan (data: byte array) (length: int) (fromByte: int) : (int64 * bool) list =
        let found = SortedSet<int64 * bool>()

        for isEnd, table in [ false, blockPatterns; true, endPatterns ] do
            let magic = if isEnd then EndMagic else BlockMagic

            for s, skip, bytes in table do
                let mutable at = fromByte + skip

                while at < length do
                    let i = ReadOnlySpan(data, at, length - at).IndexOf(ReadOnlySpan bytes)

                    if i < 0 then
                        at <- length
                    else
                        let byteOfFirstBit = at + i - skip
                        let bit = int64 byteOfFirstBit * 8L + int64 s

                        // The magic must lie wholly inside the data to be checked.
                        if byteOfFirstBit >= fromByte && bit + 48L <= int64 length * 8L then
                            if bitsAt data length bit = magic then
                                found.Add((bit, isEnd)) |> ignore

                        at <- at + i + 1

        List.ofSeq found

    /// Appends bits to a growing byte array, most significant first.
    type private BitWriter(capacity: int) =
        let mutable bytes = Array.zeroCreate<byte>(max 16 capacity)
        let mutable bits = 0L

        member _.Write(value: uint64, count: int) =
            for i in count - 1 .. -1 .. 0 do
                let byteIndex = int (bits >>> 3)

                if byteIndex >= bytes.Length then
                    Array.Resize(&bytes, bytes.Length * 2)

                if (value >>> i) &&& 1UL = 1UL then
                    bytes[byteIndex] <- bytes[byteIndex] ||| (0x80uy >>> int (bits &&& 7L))

                bits <- bits + 1L

        /// Copies bits `[from, until)` of `data`; the writer must be at a byte boundary.
        member this.Copy(data: byte array, length: int, from: int64, until: int64) =
            let count = until - from
            let whole = int (count >>> 3)
            let start = int (from >>> 3)
            let shift = int (from &&& 7L)
            let at = int (bits >>> 3)

            if at + whole + 8 > bytes.Length then
                Array.Resize(&bytes, at + whole + 16)

            let get i = if i < length then int data[i] else 0

            if shift = 0 then
                Buffer.BlockCopy(data, start, bytes, at, whole)
            else
                for i in 0 .. whole - 1 do
                    bytes[at + i] <-
                        byte (((get (start + i) <<< shift) ||| (get (start + i + 1) >>> (8 - shift))) &&& 0xFF)

            bits <- bits + int64 whole * 8L
            let rest = int (count &&& 7L)

            if rest > 0 then
                this.Write(bitsAt data length (from + int64 whole * 8L) >>> (48 - rest), rest)

        member _.Bytes = bytes
        member _.Length = int ((bits + 7L) >>> 3)

    /// Bits `[from, until)` of `data` (one block, from its magic) as a one-block bzip2 stream.
    let wrap (level: byte) (data: byte array) (length: int) (from: int64) (until: int64) : byte array * int =
        let w = BitWriter(int ((until - from) / 8L) + 32)
        w.Write(0x425A68UL, 24) // "BZh"
        w.Write(uint64 level, 8)
        w.Copy(data, length, from, until)
        w.Write(EndMagic, 48)
        // The block's CRC, the 32 bits after its magic, is the combined CRC of a one-block stream.
        w.Write(bitsAt data length (from + 48L) >>> 16, 32)
        w.Bytes, w.Length

/// libbz2's one-call decoder (`BZ2_bzBuffToBuffDecompress`), where the library loads: a block
/// decoded by it costs the managed heap nothing but its output.
module internal Bz2Native =

    [<UnmanagedFunctionPointer(CallingConvention.Cdecl)>]
    type BuffToBuff = delegate of nativeint * nativeint * nativeint * uint32 * int * int -> int

    let private names = [
        "libbz2.so.1.0"
        "libbz2.so.1"
        "libbz2.so"
        "libbz2.1.dylib"
        "libbz2.dylib"
    ]

    /// The decoder, or `None` where no libbz2 loads.
    let decoder: Lazy<BuffToBuff option> =
        lazy
            (names
             |> List.tryPick (fun name ->
                 match NativeLibrary.TryLoad name with
                 | true, handle ->
                     match NativeLibrary.TryGetExport(handle, "BZ2_bzBuffToBuffDecompress") with
                     | true, f -> Some(Marshal.GetDelegateForFunctionPointer<BuffToBuff> f)
                     | false, _ -> None
                 | false, _ -> None))

    [<Literal>]
    let private OutputFull = -8

    /// One whole bzip2 stream (a wrapped block) decoded into an array of the shared pool: the
    /// array and the bytes in it. Errors are `InvalidDataException`s (the reading then goes sequential).
    let decode (f: BuffToBuff) (source: byte array) (sourceLength: int) (hint: int) : byte array * int =
        // A block that does not fit is decoded again into twice the room: start from the
        // largest block seen so far.
        let mutable capacity = max (1 <<< 20) hint
        let mutable result = None

        while result.IsNone do
            let output = Buffers.ArrayPool<byte>.Shared.Rent capacity
            // libbz2 reads the room and writes the length through this cell.
            let cell = [| uint32 output.Length |]
            let src = GCHandle.Alloc(source, GCHandleType.Pinned)
            let dst = GCHandle.Alloc(output, GCHandleType.Pinned)
            let len = GCHandle.Alloc(cell, GCHandleType.Pinned)

            let code =
                try
                    f.Invoke(
                        dst.AddrOfPinnedObject(),
                        len.AddrOfPinnedObject(),
                        src.AddrOfPinnedObject(),
                        uint32 sourceLength,
                        0,
                        0
                    )
                finally
                    src.Free()
                    dst.Free()
                    len.Free()

            if code = 0 then
                result <- Some(output, int cell[0])
            else
                Buffers.ArrayPool<byte>.Shared.Return output

                // 64 MiB is more than a 900 k block can expand to.
                if code = OutputFull && capacity < (64 <<< 20) then
                    capacity <- capacity * 2
                else
                    raise (InvalidDataException $"bzip2: libbz2 error {code}")

        result.Value

/// bzip2 decoded a block per core, in order (each by libbz2 when `native` and it loads, else by
/// SharpZipLib). `compressed` must be seekable: on any failure (damage,
/// or a block magic that was really compressed data) the stream decodes sequentially from the
/// start of the file, skipping what was delivered, so every byte and every error is the
/// sequential decoder's.
[<Sealed>]
type internal ParallelBzip2Stream(compressed: Stream, workers: int, native: bool) =
    inherit ForwardStream()
    let mutable buffer = Array.zeroCreate<byte>(1 <<< 20)
    let mutable length = 0
    /// Bit offset in `buffer` of the next block to dispatch (-1 before the header is read).
    let mutable blockStart = -1L
    let mutable level = 0uy
    /// Bytes of the buffer already searched for magics.
    let mutable scanned = 0
    /// Magics found and not yet passed (bit offsets in the buffer), in order.
    let candidates = List<int64 * bool>()
    let mutable inputEnded = false
    let mutable streamEnded = false
    let pending = Queue<Task<byte array * int * bool>>()
    let mutable current: byte array = null
    let mutable currentPooled = false
    let mutable currentLength = 0
    let mutable currentPos = 0
    let mutable delivered = 0L
    let mutable fallback: Stream = null
    /// The largest block output so far: where the next block's output room starts.
    let mutable largest = 0

    let decode (block: byte array, blockLength: int) =
        match Bz2Native.decoder.Value with
        | Some f when native ->
            let bytes, n = Bz2Native.decode f block blockLength (Volatile.Read &largest)
            // Racing workers may both raise it; either value is a fine hint.
            if n > Volatile.Read &largest then
                Volatile.Write(&largest, n)

            bytes, n, true
        | _ ->
            use input = new MemoryStream(block, 0, blockLength)
            use bz = new ICSharpCode.SharpZipLib.BZip2.BZip2InputStream(input)
            let output = new MemoryStream(blockLength * 8)
            bz.CopyTo output
            output.GetBuffer(), int output.Length, false

    /// Reads more compressed input into the buffer, dropping what is before the next block.
    let fill () =
        let keep = if blockStart < 0L then 0 else int (blockStart >>> 3)

        if keep > 0 then
            Buffer.BlockCopy(buffer, keep, buffer, 0, length - keep)
            length <- length - keep
            blockStart <- blockStart - int64 keep * 8L
            scanned <- max 0 (scanned - keep)

            for i in 0 .. candidates.Count - 1 do
                let bit, isEnd = candidates[i]
                candidates[i] <- (bit - int64 keep * 8L, isEnd)

        if length = buffer.Length then
            Array.Resize(&buffer, buffer.Length * 2)

        let n = compressed.Read(buffer, length, buffer.Length - length)

        if n = 0 then inputEnded <- true else length <- length + n

        // Each byte is searched once; a magic across the old end is found from 8 bytes back.
        let last =
            if candidates.Count = 0 then
                -1L
            else
                fst candidates[candidates.Count - 1]

        for bit, isEnd in Bzip2Blocks.scan buffer length (max 0 (scanned - 8)) do
            if bit > last then
                candidates.Add((bit, isEnd))

        scanned <- length

    /// Dispatches blocks until `workers` are in flight or the stream's end is reached.
    let dispatch () =
        while not streamEnded && pending.Count < workers do
            if blockStart < 0L then
                // The header and the first magic after it.
                while length < 10 && not inputEnded do
                    fill ()

                if length < 10 then
                    // Too short for a header and a block: the sequential decoder says why.
                    raise (InvalidDataException "bzip2: header")

                level <- buffer[3]
                blockStart <- 32L

                match Bzip2Blocks.bitsAt buffer length 32L with
                | Bzip2Blocks.BlockMagic -> ()
                | Bzip2Blocks.EndMagic -> streamEnded <- true
                // Not a bzip2 block: the sequential decoder says what is wrong.
                | _ -> raise (InvalidDataException "bzip2: no block after the header")
            else
                // The next magic after the current block's own.
                while candidates.Count > 0 && fst candidates[0] <= blockStart do
                    candidates.RemoveAt 0

                let next = if candidates.Count > 0 then Some candidates[0] else None

                match next with
                | Some(bit, isEnd) ->
                    let block = Bzip2Blocks.wrap level buffer length blockStart bit
                    pending.Enqueue(Task.Run(fun () -> decode block))

                    if isEnd then streamEnded <- true else blockStart <- bit
                | None when inputEnded ->
                    // A block cut short (no magic after it): the sequential decoder says where.
                    raise (EndOfStreamException "bzip2: a block without an end")
                | None -> fill ()

    /// Lets the blocks in flight finish (their outcome no longer matters).
    let drain () =
        for t in pending do
            try
                t.Wait()
            with _ ->
                ()

        pending.Clear()

    /// From here on, the sequential decoder from the start of the file, past what was delivered.
    let fallBack () =
        drain ()
        compressed.Position <- 0L

        let sequential =
            new ICSharpCode.SharpZipLib.BZip2.BZip2InputStream(compressed, IsStreamOwner = false)

        let skip = Array.zeroCreate<byte> 65536
        let mutable left = delivered

        while left > 0L do
            match sequential.Read(skip, 0, int (min left 65536L)) with
            | 0 -> left <- 0L
            | n -> left <- left - int64 n

        fallback <- sequential

    /// Whether the reading went on sequentially (after damage, or a false block boundary).
    member _.FellBack = not (isNull fallback)

    override _.Position
        with get () = delivered
        and set _ = raise (NotSupportedException())

    override _.Read(target: byte array, offset: int, count: int) : int =
        if count = 0 then
            0
        else
            let mutable result = -1

            while result < 0 do
                if not (isNull fallback) then
                    let n = fallback.Read(target, offset, count)
                    delivered <- delivered + int64 n
                    result <- n
                elif not (isNull current) && currentPos < currentLength then
                    let n = min count (currentLength - currentPos)
                    Buffer.BlockCopy(current, currentPos, target, offset, n)
                    currentPos <- currentPos + n
                    delivered <- delivered + int64 n
                    result <- n
                else
                    let next =
                        try
                            dispatch ()

                            if pending.Count = 0 then
                                None
                            else
                                Some(pending.Dequeue().Result)
                        with _ ->
                            fallBack ()
                            None

                    match next with
                    | Some(bytes, n, pooled) ->
                        if currentPooled then
                            Buffers.ArrayPool<byte>.Shared.Return current

                        current <- bytes
                        currentPooled <- pooled
                        currentLength <- n
                        currentPos <- 0
                        // Keep the workers busy while this block is read.
                        try
                            dispatch ()
                        with _ ->
                            ()
                    // Fallen back: the next round reads sequentially.
                    | None when not (isNull fallback) -> ()
                    | None -> result <- 0

            result

    override _.Dispose(disposing: bool) =
        if disposing then
            drain ()

            if currentPooled then
                Buffers.ArrayPool<byte>.Shared.Return current
                currentPooled <- false

            if not (isNull fallback) then
                fallback.Dispose()

        base.Dispose disposing
