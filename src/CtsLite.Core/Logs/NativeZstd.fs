namespace CtsLite.Logs

#nowarn "9" // Native pointers: the buffers handed to libzstd.

open System
open System.IO
open System.Runtime.InteropServices
open Microsoft.FSharp.NativeInterop

/// A stream read forward only, as every decoder stream here is: nothing to seek, write or measure.
[<AbstractClass>]
type internal ForwardStream() =
    inherit Stream()

    override _.CanRead = true
    override _.CanSeek = false
    override _.CanWrite = false
    override _.Length = raise (NotSupportedException())

    override _.Position
        with get () = raise (NotSupportedException())
        and set _ = raise (NotSupportedException())

    override _.Flush() = ()
    override _.Seek(_, _) = raise (NotSupportedException())
    override _.SetLength _ = raise (NotSupportedException())
    override _.Write(_, _, _) = raise (NotSupportedException())

/// libzstd's streaming buffers (`ZSTD_inBuffer`, `ZSTD_outBuffer`).
[<Struct; StructLayout(LayoutKind.Sequential)>]
type internal ZstdBuffer =
    val mutable Data: nativeint
    val mutable Size: unativeint
    val mutable Pos: unativeint

/// The few libzstd calls streaming decompression needs. `libzstd.so.1` is on Debian, Ubuntu and
/// most Linux systems (it is the library `zstd` itself uses).
module internal ZstdNative =

    [<Literal>]
    let Library = "libzstd.so.1"

    [<DllImport(Library, CallingConvention = CallingConvention.Cdecl)>]
    extern uint32 ZSTD_versionNumber()

    [<DllImport(Library, CallingConvention = CallingConvention.Cdecl)>]
    extern nativeint ZSTD_createDStream()

    [<DllImport(Library, CallingConvention = CallingConvention.Cdecl)>]
    extern unativeint ZSTD_freeDStream(nativeint stream)

    [<DllImport(Library, CallingConvention = CallingConvention.Cdecl)>]
    extern unativeint ZSTD_initDStream(nativeint stream)

    [<DllImport(Library, CallingConvention = CallingConvention.Cdecl)>]
    extern unativeint ZSTD_decompressStream(nativeint stream, ZstdBuffer& output, ZstdBuffer& input)

    [<DllImport(Library, CallingConvention = CallingConvention.Cdecl)>]
    extern uint32 ZSTD_isError(unativeint code)

    [<DllImport(Library, CallingConvention = CallingConvention.Cdecl)>]
    extern nativeint ZSTD_getErrorName(unativeint code)

    /// The library's version (e.g. 10504 for 1.5.4), or `None` when it cannot be loaded here.
    let version: Lazy<uint32 option> =
        lazy
            (try
                Some(ZSTD_versionNumber())
             with
             | :? DllNotFoundException
             | :? EntryPointNotFoundException
             | :? BadImageFormatException -> None)

    let errorName (code: unativeint) : string =
        Marshal.PtrToStringAnsi(ZSTD_getErrorName code)

/// zstd decompression by the native libzstd: the same frames, the same errors as the managed
/// decoder (truncation is `EndOfStreamException`, a corrupt frame an `InvalidDataException`
/// carrying libzstd's error name, which ZstdSharp's are ported from), at the native speed.
[<Sealed>]
type internal NativeZstdStream(compressed: Stream) =
    inherit ForwardStream()
    static let inputSize = 1 <<< 17

    let stream =
        match ZstdNative.ZSTD_createDStream() with
        | 0n -> raise (OutOfMemoryException "libzstd: ZSTD_createDStream failed")
        | s ->
            ZstdNative.ZSTD_initDStream s |> ignore
            s

    let input = NativeMemory.Alloc(unativeint inputSize) |> NativePtr.ofVoidPtr<byte>

    let mutable inBuffer =
        ZstdBuffer(Data = NativePtr.toNativeInt input, Size = 0un, Pos = 0un)
    // libzstd's last answer: 0 once a frame is decoded and flushed (and before any input).
    let mutable pending = 0un
    let mutable ended = false
    let mutable disposed = false

    override this.Read(buffer: byte array, offset: int, count: int) : int =
        this.Read(Span<byte>(buffer, offset, count))

    override _.Read(buffer: Span<byte>) : int =
        if buffer.Length = 0 || ended then
            0
        else
            use output = fixed buffer

            let mutable out =
                ZstdBuffer(Data = NativePtr.toNativeInt output, Size = unativeint buffer.Length, Pos = 0un)

            let mutable result = -1

            while result < 0 do
                let mutable atEnd = false

                if inBuffer.Pos = inBuffer.Size then
                    let n = compressed.Read(Span<byte>(NativePtr.toVoidPtr input, inputSize))
                    inBuffer.Size <- unativeint n
                    inBuffer.Pos <- 0un
                    atEnd <- n = 0

                if atEnd && pending = 0un then
                    // Every frame decoded and flushed, and no input left: the end.
                    ended <- true
                    result <- 0
                else
                    let code = ZstdNative.ZSTD_decompressStream(stream, &out, &inBuffer)

                    if ZstdNative.ZSTD_isError code <> 0u then
                        ended <- true
                        raise (InvalidDataException $"zstd: {ZstdNative.errorName code}")

                    pending <- code

                    if out.Pos > 0un then
                        result <- int out.Pos
                    elif atEnd then
                        // No input left, a frame unfinished and nothing more came out: cut short.
                        ended <- true
                        raise (EndOfStreamException "Premature end of stream")

            result

    override _.Dispose(disposing: bool) =
        if not disposed then
            disposed <- true
            ZstdNative.ZSTD_freeDStream stream |> ignore
            NativeMemory.Free(NativePtr.toVoidPtr input)

        base.Dispose disposing

    override this.Finalize() = this.Dispose false
