namespace CtsLite.Cli

open System
open System.Buffers
open System.IO

/// The JSON of one event on its way to the output: in memory up to `limit` bytes, in a temporary
/// file (deleted on close) beyond. A hostile event — 100,000 CAN payloads pointing at one blob,
/// traversed up to the 64 MiB limit and printed as number arrays — is hundreds of MB of text; it
/// costs disk for a moment, not memory, and is still written whole or, when damage stops it, not
/// at all.
[<Sealed>]
type internal EventBuffer(limit: int) =
    let memory = ArrayBufferWriter<byte>(1 <<< 16)
    let mutable file: FileStream = null

    /// Moves what is in memory to the file when `more` bytes would take memory past the limit.
    member private _.Make(more: int) =
        if memory.WrittenCount > 0 && memory.WrittenCount + more > limit then
            if isNull file then
                file <-
                    new FileStream(
                        Path.Combine(Path.GetTempPath(), $"cts-event-{Guid.NewGuid():N}.json"),
                        FileMode.CreateNew,
                        FileAccess.ReadWrite,
                        FileShare.None,
                        1 <<< 16,
                        FileOptions.DeleteOnClose
                    )

            file.Write memory.WrittenSpan
            memory.ResetWrittenCount()

    /// Empties the buffer for the next event.
    member _.Reset() =
        memory.ResetWrittenCount()

        if not (isNull file) then
            file.SetLength 0L

    /// Writes what the buffer holds to `output`.
    member _.WriteTo(output: Stream) =
        if not (isNull file) && file.Length > 0L then
            file.Position <- 0L
            file.CopyTo output
            file.SetLength 0L

        output.Write memory.WrittenSpan

    interface IBufferWriter<byte> with
        member _.Advance(count: int) = memory.Advance count

        member this.GetMemory(sizeHint: int) =
            this.Make(max sizeHint 1)
            memory.GetMemory sizeHint

        member this.GetSpan(sizeHint: int) =
            this.Make(max sizeHint 1)
            memory.GetSpan sizeHint

    interface IDisposable with
        member _.Dispose() =
            if not (isNull file) then
                file.Dispose()
