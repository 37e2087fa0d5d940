/// bzip2 decoded a block per core (`ParallelBzip2Stream`) against the sequential decoder.
module CtsLite.Core.Tests.Bzip2Tests

open System
open System.IO
open System.Security.Cryptography
open Expecto
open CtsLite.Capnp
open CtsLite.Logs
open CtsLite.Tests

let all =
    testList "bzip2 blocks" [
        test "bzip2 decoded a block per core gives the sequential decoder's bytes and errors" {
            // The bytes delivered and the error, if any.
            let through (blockwise: bool) (native: bool) (path: string) =
                use file = File.OpenRead path
                use copy = new MemoryStream()

                // The sequential decoder reads the stream header when it is made: inside the try.
                let error =
                    try
                        use stream: Stream =
                            if blockwise then
                                new ParallelBzip2Stream(file, 2, native)
                            else
                                new ICSharpCode.SharpZipLib.BZip2.BZip2InputStream(file, IsStreamOwner = false)

                        stream.CopyTo copy

                        match stream with
                        | :? ParallelBzip2Stream as p when p.FellBack -> Some "fell back on a whole stream"
                        | _ -> None
                    with e ->
                        Some $"{e.GetType().Name}: {e.Message}"

                copy.ToArray(), error

            // The same error, and before it the same bytes. How many come before the error is
            // the decoder's read pattern (SharpZipLib drops the part-read chunk of a failing
            // read), so the two may differ there, by less than a block.
            let agreeBy (native: bool) (file: string) =
                let blockwise, blockError = through true native file
                let sequential, sequentialError = through false false file
                let name = $"{Path.GetFileName file} (libbz2: {native})"
                Expect.equal blockError sequentialError $"{name}: the same error"

                match sequentialError with
                | None -> Expect.isTrue (blockwise.AsSpan().SequenceEqual(sequential)) $"{name}: the same bytes"
                | Some _ ->
                    let common = min blockwise.Length sequential.Length

                    Expect.isTrue
                        (blockwise.AsSpan(0, common).SequenceEqual(sequential.AsSpan(0, common)))
                        $"{name}: the same bytes before the damage"

                    Expect.isLessThan (abs (blockwise.Length - sequential.Length)) 1_000_000 $"{name}: within a block"

                blockError

            let dir = TestEnv.tempDir "bzip2"
            let whole = File.ReadAllBytes(TestEnv.comma2k19 "bz2")
            let flipped = Array.copy whole
            flipped[whole.Length / 2] <- flipped[whole.Length / 2] ^^^ 0xFFuy

            let damaged = [
                "cut", whole[.. whole.Length / 2]
                "header only", whole[..3]
                "empty", [||]
                "flipped", flipped
                "garbage after", Array.append whole (Array.create 64 0xEEuy)
                "garbage inside", Array.append whole[..3] (Array.create 64 0xEEuy)
                "two streams", Array.append whole whole
            ]

            let files = [
                TestEnv.comma2k19 "bz2"
                Path.Combine(
                    TestEnv.sharedDir (),
                    "data",
                    "rlogs",
                    "comma_demo_a2a0ccea32023010_2023-07-27--13-01-19--0.qlog.bz2"
                )
                for name, bytes in damaged do
                    let file = Path.Combine(dir, name.Replace(' ', '-') + ".bz2")
                    File.WriteAllBytes(file, bytes)
                    file
            ]

            // Every block by libbz2, and by SharpZipLib (where libbz2 does not load).
            let agree (file: string) =
                let native = agreeBy true file
                Expect.equal (agreeBy false file) native "both block decoders"
                native

            Expect.isSome Bz2Native.decoder.Value "libbz2 loads on this machine (Debian's libbz2-1.0)"

            for file in files do
                agree file |> ignore

            Expect.isNone (agree (TestEnv.comma2k19 "bz2")) "a whole log reads"
            Expect.isSome (agree (Path.Combine(dir, "flipped.bz2"))) "a flipped byte is damage"

            // A log of many blocks, as an hour's drive is.
            let many = Path.Combine(dir, "many.bz2")

            do
                use raw =
                    match Compression.openFile (TestEnv.comma2k19 "zst") ReaderOptions.Default with
                    | Ok(stream, _) -> stream
                    | Error e -> failtest e

                use out = File.Create many
                use bz = new ICSharpCode.SharpZipLib.BZip2.BZip2OutputStream(out, 1)
                raw.CopyTo bz

            Expect.isNone (agree many) "a stream of 100 KB blocks"
        }
    ]
