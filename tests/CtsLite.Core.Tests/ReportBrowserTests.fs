/// The analyzer's HTML report in a real browser (Debian's headless Chromium): it loads without
/// console errors and the rendered chart shows the planted Set presses.
module CtsLite.Core.Tests.ReportBrowserTests

open System
open System.Diagnostics
open System.IO
open System.IO.Compression
open System.Threading
open Expecto
open CtsLite.Tools
open CtsLite.Tests

/// Decodes a non-interlaced 8-bit RGB/RGBA PNG (what Chromium writes) into rows of RGB triples.
let decodePng (bytes: byte array) : int * int * (int -> int -> struct (byte * byte * byte)) =
    let be (i: int) =
        (int bytes[i] <<< 24)
        ||| (int bytes[i + 1] <<< 16)
        ||| (int bytes[i + 2] <<< 8)
        ||| int bytes[i + 3]

    let mutable pos = 8
    let mutable width, height, colorType = 0, 0, 0
    use idat = new MemoryStream()

    while pos < bytes.Length do
        let length = be pos
        let kind = Text.Encoding.ASCII.GetString(bytes, pos + 4, 4)

        match kind with
        | "IHDR" ->
            width <- be (pos + 8)
            height <- be (pos + 12)
            Expect.equal bytes[pos + 16] 8uy "8-bit samples"
            colorType <- int bytes[pos + 17]
            Expect.equal bytes[pos + 20] 0uy "not interlaced"
        | "IDAT" -> idat.Write(bytes, pos + 8, length)
        | _ -> ()

        pos <- pos + 12 + length

    let channels =
        match colorType with
        | 2 -> 3
        | 6 -> 4
        | other -> failtestf "PNG colour type %d" other

    idat.Position <- 0L
    use z = new ZLibStream(idat, CompressionMode.Decompress)
    use raw = new MemoryStream()
    z.CopyTo raw
    let data = raw.ToArray()
    let stride = width * channels
    let pixels = Array.zeroCreate<byte>(height * stride)

    for y in 0 .. height - 1 do
        let filter = data[y * (stride + 1)]
        let src = y * (stride + 1) + 1
        let dst = y * stride

        for x in 0 .. stride - 1 do
            let a = if x >= channels then int pixels[dst + x - channels] else 0
            let b = if y > 0 then int pixels[dst - stride + x] else 0

            let c =
                if x >= channels && y > 0 then
                    int pixels[dst - stride + x - channels]
                else
                    0

            let predictor =
                match filter with
                | 0uy -> 0
                | 1uy -> a
                | 2uy -> b
                | 3uy -> (a + b) / 2
                | 4uy ->
                    let p = a + b - c
                    let pa, pb, pc = abs (p - a), abs (p - b), abs (p - c)

                    if pa <= pb && pa <= pc then a
                    elif pb <= pc then b
                    else c
                | f -> failtestf "PNG filter %d" f

            pixels[dst + x] <- byte ((int data[src + x] + predictor) &&& 0xFF)

    width,
    height,
    fun x y ->
        let i = y * stride + x * channels
        struct (pixels[i], pixels[i + 1], pixels[i + 2])

let private chromium (args: string list) : int * string * string =
    let psi =
        ProcessStartInfo("chromium", RedirectStandardOutput = true, RedirectStandardError = true)

    for a in
        [
            "--headless"
            "--no-sandbox"
            "--disable-gpu"
            "--disable-quic"
            "--no-first-run"
            "--disable-background-networking"
            "--disable-component-update"
            "--disable-sync"
            "--hide-scrollbars"
            "--enable-logging=stderr"
            "--v=0"
            "--user-data-dir=" + TestEnv.tempDir "chromium-profile"
        ]
        @ args do
        psi.ArgumentList.Add a

    use p =
        try
            Process.Start psi
        with :? ComponentModel.Win32Exception ->
            failtest
                "chromium is not installed: the test command installs Debian's chromium (dotnet fsi build.fsx test)"

    let out = p.StandardOutput.ReadToEndAsync()
    let err = p.StandardError.ReadToEndAsync()

    if not (p.WaitForExit 120_000) then
        p.Kill true
        failtest "chromium did not finish within 2 minutes"

    p.ExitCode, out.Result, err.Result

let all =
    testList "HTML report in Chromium" [
        test "loads without console errors; the screenshot shows the three Set presses on the chart" {
            let log =
                Path.Combine(TestEnv.sharedDir (), "data", "rlogs", "synthetic", "default.rlog.zst")

            let result, dir, _ = ToolTests.runTool CruiseTool.tool log [] CancellationToken.None

            Expect.isOk result "analysis"
            let url = Uri(Path.Combine(dir, "analysis_report.html")).AbsoluteUri
            let png = Path.Combine(dir, "report.png")

            let code, _, err =
                chromium [ "--window-size=1280,2600"; $"--screenshot={png}"; url ]

            Expect.equal code 0 err

            let console =
                err.Split('\n')
                |> Array.filter (fun l -> l.Contains "CONSOLE" || l.Contains "Uncaught")

            Expect.isEmpty console "no console messages"
            printfn "report screenshot: %s" png

            let width, height, pixel = decodePng (File.ReadAllBytes png)
            Expect.equal width 1280 "screenshot width"

            // Columns with a long vertical run of the Set-press colour (#c51b7d): the chart's lines.
            let isSetColour x y =
                let struct (r, g, b) = pixel x y
                abs (int r - 197) <= 6 && abs (int g - 27) <= 6 && abs (int b - 125) <= 6

            let lineColumns =
                [ 0 .. width - 1 ]
                |> List.filter (fun x ->
                    let mutable n = 0

                    for y in 0 .. height - 1 do
                        if isSetColour x y then
                            n <- n + 1

                    n >= 150)

            let clusters =
                lineColumns
                |> List.fold
                    (fun acc x ->
                        match acc with
                        | (first, last) :: rest when x - last <= 2 -> (first, x) :: rest
                        | _ -> (x, x) :: acc)
                    []
                |> List.rev

            Expect.equal clusters.Length 3 $"three Set-press lines drawn (columns {lineColumns})"

            // Their spacing follows the press times (+28.007, +30.007, +46.508 s on a 60 s axis).
            let centres = clusters |> List.map (fun (a, b) -> float (a + b) / 2.0)
            let ratio = (centres[2] - centres[0]) / (centres[1] - centres[0])
            Expect.floatClose { absolute = 0.8; relative = 0.1 } ratio ((46.508 - 28.007) / (30.007 - 28.007)) "spacing"

            let code, dom, err = chromium [ "--dump-dom"; url ]
            Expect.equal code 0 err
            Expect.stringContains dom "data-time=\"28.007\"" "first press in the rendered DOM"
            Expect.stringContains dom "data-min=\"55.00\" data-max=\"56.00\"" "the requested band"
        }
    ]
