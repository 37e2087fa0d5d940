namespace CtsLite.Tools

open System
open System.Collections.Generic
open CtsLite.Can
open CtsLite.Logs

/// Every `can` frame of the input in a compact columnar store (about 20 bytes per frame plus its
/// payload), so window and bit statistics can look back and forward in time.
/// Renting the frame store's arrays: a run stores a few MB of frames, and renting keeps repeated
/// runs (a service, a benchmark) from churning the large-object heap.
module internal Pool =
    let rent<'T> (n: int) : 'T array = Buffers.ArrayPool<'T>.Shared.Rent n
    let give<'T> (a: 'T array) = Buffers.ArrayPool<'T>.Shared.Return a

    let grow<'T> (a: byref<'T array>) (n: int) =
        let larger = rent<'T> n
        Array.Copy(a, larger, a.Length)
        give a
        a <- larger

type internal FrameStore() =
    let mutable times = Pool.rent<int64>(1 <<< 18)
    let mutable keys = Pool.rent<int>(1 <<< 18)
    let mutable offsets = Pool.rent<int>(1 <<< 18)
    let mutable lengths = Pool.rent<byte>(1 <<< 18)
    let mutable words = Pool.rent<uint64>(1 <<< 18)
    let mutable bytes = Pool.rent<byte>(1 <<< 21)
    let mutable count = 0
    let mutable used = 0
    let keyIndex = Dictionary<uint64, int>()
    let shortKeys = Pool.rent<int>(2048 * 256)
    let keyList = ResizeArray<CanKey>()
    // Per key, kept while reading (the reading thread waits on decompression anyway): its frame
    // count, its latest time, and whether its frames arrived in time order.
    let mutable keyFrames = Array.zeroCreate<int> 256
    let mutable keyLast = Array.zeroCreate<int64> 256
    let mutable keyInOrder = Array.zeroCreate<bool> 256
    do Array.Clear shortKeys

    interface IDisposable with
        member _.Dispose() =
            Pool.give times
            Pool.give keys
            Pool.give offsets
            Pool.give lengths
            Pool.give words
            Pool.give bytes
            Pool.give shortKeys

    member _.Count = count
    /// The (address, bus) of each key index, in order of first appearance.
    member _.Keys: IReadOnlyList<CanKey> = keyList
    member _.Time(i: int) = times[i]
    member _.Key(i: int) = keys[i]

    member _.Payload(i: int) =
        ReadOnlySpan<byte>(bytes, offsets[i], int lengths[i])

    /// The payload's length in bytes.
    member _.Length(i: int) = int lengths[i]

    /// The payload's first 8 bytes as one little-endian number (zero-padded), so bit `g` of the
    /// payload (global LSB numbering) is bit `g` of the word; whole for payloads of ≤ 8 bytes.
    member _.Word(i: int) = words[i]

    member _.PayloadArray(i: int) =
        Array.sub bytes offsets[i] (int lengths[i])

    /// The key index of (address, bus), added when new. Standard 11-bit ids go through a direct
    /// table (key + 1, 0 = new), the rest through a dictionary.
    member _.KeyOf(address: uint32, bus: int) : int =
        let add () =
            let i = keyList.Count
            keyIndex[(uint64 address <<< 8) ||| uint64 bus] <- i
            keyList.Add { Address = address; Bus = bus }

            if i = keyFrames.Length then
                Array.Resize(&keyFrames, 2 * i)
                Array.Resize(&keyLast, 2 * i)
                Array.Resize(&keyInOrder, 2 * i)

            keyLast[i] <- Int64.MinValue
            keyInOrder[i] <- true
            i

        if address < 2048u then
            let slot = (int address <<< 8) ||| bus

            match shortKeys[slot] with
            | 0 ->
                let i = add ()
                shortKeys[slot] <- i + 1
                i
            | k -> k - 1
        else
            match keyIndex.TryGetValue((uint64 address <<< 8) ||| uint64 bus) with
            | true, i -> i
            | false, _ -> add ()

    member _.Add(ns: int64, key: int, payload: ReadOnlySpan<byte>) : int =
        if
            count = times.Length
            || count = keys.Length
            || count = offsets.Length
            || count = lengths.Length
            || count = words.Length
        then
            let n = count * 2
            Pool.grow &times n
            Pool.grow &keys n
            Pool.grow &offsets n
            Pool.grow &lengths n
            Pool.grow &words n

        if used + payload.Length > bytes.Length then
            Pool.grow &bytes (max (bytes.Length * 2) (used + payload.Length))

        let len = min payload.Length 255
        payload.Slice(0, len).CopyTo(Span<byte>(bytes, used, len))

        words[count] <- PayloadWord.ofSpan (payload.Slice(0, len))

        times[count] <- ns
        keys[count] <- key
        keyFrames[key] <- keyFrames[key] + 1

        if ns < keyLast[key] then
            keyInOrder[key] <- false
        else
            keyLast[key] <- ns

        offsets[count] <- used
        lengths[count] <- byte len
        used <- used + len
        count <- count + 1
        count - 1

    /// Forgets the first `n` frames (the oldest, when frames arrive in time order), moving the rest
    /// to the front: a look-back ring that drops its old half now and then stays contiguous, so
    /// the queries below work on it unchanged. Key indices are kept.
    member _.DropFirst(n: int) =
        let n = min n count

        if n > 0 then
            for i in 0 .. n - 1 do
                keyFrames[keys[i]] <- keyFrames[keys[i]] - 1

            let remaining = count - n
            let firstByte = if n < count then offsets[n] else used
            Array.Copy(times, n, times, 0, remaining)
            Array.Copy(keys, n, keys, 0, remaining)
            Array.Copy(offsets, n, offsets, 0, remaining)
            Array.Copy(lengths, n, lengths, 0, remaining)
            Array.Copy(words, n, words, 0, remaining)
            Array.Copy(bytes, firstByte, bytes, 0, used - firstByte)

            for i in 0 .. remaining - 1 do
                offsets[i] <- offsets[i] - firstByte

            count <- remaining
            used <- used - firstByte

    /// The frame indices of each key, in time order (log order within one time).
    member _.ByKey() : int array array =
        let result = Array.init keyList.Count (fun k -> Array.zeroCreate<int> keyFrames[k])
        let fill = Array.zeroCreate<int> keyList.Count

        for i in 0 .. count - 1 do
            let k = keys[i]
            result[k][fill[k]] <- i
            fill[k] <- fill[k] + 1

        for k in 0 .. result.Length - 1 do
            if not keyInOrder[k] then
                // Stable: frames of one time keep their log order.
                result[k] <- result[k] |> Array.sortBy (fun i -> times[i])

        result

/// Distinct payloads, exact, without clearing cost: an open-addressing set of (first 8 bytes,
/// length) whose slots count as empty unless stamped with the current generation, so `Reset`
/// is O(1) however many payloads the previous key had. Payloads over 8 bytes go to a string set.
type internal UniquePayloads() =
    let mutable words = Array.zeroCreate<uint64> 16
    let mutable lengths = Array.zeroCreate<byte> 16
    let mutable stamps = Array.zeroCreate<int> 16
    let mutable generation = 1
    let mutable count = 0
    let long = HashSet<string>()

    let slotOf (word: uint64) (length: int) (mask: int) =
        // Fibonacci hashing spreads counters and checksums that differ only in a few bits.
        int (((word ^^^ uint64 length) * 0x9E3779B97F4A7C15UL) >>> 40) &&& mask

    let insert (word: uint64) (length: byte) =
        let mask = words.Length - 1
        let mutable slot = slotOf word (int length) mask
        let mutable searching = true

        while searching do
            if stamps[slot] <> generation then
                stamps[slot] <- generation
                words[slot] <- word
                lengths[slot] <- length
                count <- count + 1
                searching <- false
            elif words[slot] = word && lengths[slot] = length then
                searching <- false
            else
                slot <- (slot + 1) &&& mask

    let grow () =
        let oldWords, oldLengths, oldStamps, oldGeneration =
            words, lengths, stamps, generation

        words <- Array.zeroCreate (oldWords.Length * 2)
        lengths <- Array.zeroCreate (oldWords.Length * 2)
        stamps <- Array.zeroCreate (oldWords.Length * 2)
        generation <- 1
        count <- 0

        for i in 0 .. oldWords.Length - 1 do
            if oldStamps[i] = oldGeneration then
                insert oldWords[i] oldLengths[i]

    member _.Add(store: FrameStore, i: int) =
        let length = store.Length i

        if length <= 8 then
            // At most half full, so probes stay short.
            if count * 2 >= words.Length then
                grow ()

            insert (store.Word i) (byte length)
        else
            long.Add(Convert.ToHexString(store.Payload i)) |> ignore

    member _.Count = count + long.Count

    /// Adds every payload of `other` (a union: the counts of distinct payloads over several windows).
    member this.AddAll(other: UniquePayloads) = other.CopyInto this

    member private _.CopyInto(target: UniquePayloads) =
        for i in 0 .. words.Length - 1 do
            if stamps[i] = generation then
                target.AddWord(words[i], lengths[i])

        for s in long do
            target.AddLong s

    member private _.AddWord(word: uint64, length: byte) =
        if count * 2 >= words.Length then
            grow ()

        insert word length

    member private _.AddLong(hex: string) = long.Add hex |> ignore

    member _.Clear() =
        generation <- generation + 1
        count <- 0

        if long.Count > 0 then
            long.Clear()

/// Queries over a `FrameStore`'s per-key frame lists: bit flips and payload changes inside a
/// window, window bounds by time, the most-flipped bits. Shared by the analyses that look at
/// frames around moments (the cruise analyzer's windows and candidates).
[<RequireQualifiedAccess>]
module internal FrameIndex =

    /// The `n` bits that flipped most (rises + falls), most first, ties to the lower bit; bits
    /// that never flipped are left out. A selection over ints: this runs for every key and window,
    /// and its result is kept for every window of the drive (an inline array, no list cells).
    let top (n: int) (rises: int array) (falls: int array) : struct (int * int) array =
        let taken = Array.zeroCreate<bool> rises.Length
        let found = ResizeArray<struct (int * int)>(n)
        let mutable go = true

        while go && found.Count < n do
            let mutable best = -1
            let mutable bestFlips = 0

            for bit in 0 .. rises.Length - 1 do
                let flips = rises[bit] + falls[bit]

                if not taken[bit] && flips > bestFlips then
                    best <- bit
                    bestFlips <- flips

            if best < 0 then
                go <- false
            else
                taken[best] <- true
                found.Add(struct (best, bestFlips))

        found.ToArray()

    /// Rises (0→1) and falls (1→0) of each bit over consecutive frames `indices[first..stop-1]`
    /// (payloads zero-padded), indexed by global LSB bit number, and how many frames differ from
    /// the one before (length or content).
    let bitChanges
        (store: FrameStore)
        (indices: ReadOnlySpan<int>)
        (first: int)
        (stop: int)
        : struct (int array * int array * int) =
        let mutable longest = 0

        for k in first .. stop - 1 do
            longest <- max longest (store.Length indices[k])

        let rises = Array.zeroCreate<int>(longest * 8)
        let falls = Array.zeroCreate<int>(longest * 8)
        let mutable changed = 0

        for k in first + 1 .. stop - 1 do
            let i = indices[k - 1]
            let j = indices[k]

            if store.Length i <= 8 && store.Length j <= 8 then
                // Only the bits that changed are visited.
                let after = store.Word j
                let mutable diff = store.Word i ^^^ after

                if diff <> 0UL || store.Length i <> store.Length j then
                    changed <- changed + 1

                while diff <> 0UL do
                    let g = Numerics.BitOperations.TrailingZeroCount diff

                    if (after >>> g) &&& 1UL = 1UL then
                        rises[g] <- rises[g] + 1
                    else
                        falls[g] <- falls[g] + 1

                    diff <- diff &&& (diff - 1UL)
            else
                let a = store.Payload i
                let b = store.Payload j
                let n = max a.Length b.Length

                if not (a.SequenceEqual b) then
                    changed <- changed + 1

                for byteIndex in 0 .. n - 1 do
                    let x = if byteIndex < a.Length then a[byteIndex] else 0uy
                    let y = if byteIndex < b.Length then b[byteIndex] else 0uy
                    let diff = x ^^^ y

                    if diff <> 0uy then
                        for bit in 0..7 do
                            if (diff >>> bit) &&& 1uy = 1uy then
                                let g = byteIndex * 8 + bit

                                if (y >>> bit) &&& 1uy = 1uy then
                                    rises[g] <- rises[g] + 1
                                else
                                    falls[g] <- falls[g] + 1

        struct (rises, falls, changed)


    /// The first position in `indices` (time-ordered frame indices) whose time is ≥ `ns`.
    let lowerBound (store: FrameStore) (indices: ReadOnlySpan<int>) (ns: int64) : int =
        let mutable lo = 0
        let mutable hi = indices.Length

        while lo < hi do
            let mid = (lo + hi) >>> 1

            if store.Time indices[mid] < ns then
                lo <- mid + 1
            else
                hi <- mid

        lo

    /// The first position in `indices` whose time is > `ns`.
    let upperBound (store: FrameStore) (indices: ReadOnlySpan<int>) (ns: int64) : int =
        let mutable lo = 0
        let mutable hi = indices.Length

        while lo < hi do
            let mid = (lo + hi) >>> 1

            if store.Time indices[mid] <= ns then
                lo <- mid + 1
            else
                hi <- mid

        lo

/// Rises (0→1) and falls (1→0) of each bit over a stream of payloads, one frame at a time: the
/// counts `FrameIndex.bitChanges` gives over the same payloads in the same order, without keeping
/// them (a drive's candidate bits in memory that does not grow with its length).
type internal BitFlips() =
    let mutable rises = Array.zeroCreate<int> 64
    let mutable falls = Array.zeroCreate<int> 64
    let previous = Array.zeroCreate<byte> 256
    let mutable previousLength = -1
    let mutable previousWord = 0UL

    let count (g: int) (rising: bool) =
        if rising then
            rises[g] <- rises[g] + 1
        else
            falls[g] <- falls[g] + 1

    member _.Add(payload: ReadOnlySpan<byte>) =
        let length = min payload.Length previous.Length

        if length * 8 > rises.Length then
            Array.Resize(&rises, length * 8)
            Array.Resize(&falls, length * 8)

        let word = PayloadWord.ofSpan (payload.Slice(0, length))

        if previousLength >= 0 then
            if previousLength <= 8 && length <= 8 then
                let mutable diff = previousWord ^^^ word

                while diff <> 0UL do
                    let g = Numerics.BitOperations.TrailingZeroCount diff
                    count g ((word >>> g) &&& 1UL = 1UL)
                    diff <- diff &&& (diff - 1UL)
            else
                for byteIndex in 0 .. max length previousLength - 1 do
                    let x =
                        if byteIndex < previousLength then
                            previous[byteIndex]
                        else
                            0uy

                    let y = if byteIndex < length then payload[byteIndex] else 0uy
                    let diff = x ^^^ y

                    if diff <> 0uy then
                        for bit in 0..7 do
                            if (diff >>> bit) &&& 1uy = 1uy then
                                count (byteIndex * 8 + bit) ((y >>> bit) &&& 1uy = 1uy)

        payload.Slice(0, length).CopyTo(Span<byte>(previous, 0, length))
        previousLength <- length
        previousWord <- word

    member _.Rises = rises
    member _.Falls = falls
