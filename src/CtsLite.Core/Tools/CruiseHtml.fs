namespace CtsLite.Tools

open System
open System.Text
open CtsLite.Can

/// The cruise-control analyzer's self-contained HTML report (inline CSS and SVG, no scripts,
/// no external assets).
[<RequireQualifiedAccess>]
module internal CruiseHtml =

    let private h = Artifacts.html
    let private f (d: int) (v: float) = Format.decimals d v

    let private style =
        """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem;color:#1d2330;max-width:1200px}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d6dae3;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}th,td{border:1px solid #d6dae3;padding:.25rem .6rem;text-align:right}
th{background:#f1f3f7}td:first-child,th:first-child{text-align:left}
.meta{color:#5a6275;font-size:.9rem}.ok{color:#17753a;font-weight:600}.warn{color:#a15c00;font-weight:600}
ul.warnings li{color:#a15c00}.legend span{display:inline-block;margin-right:1.2rem;font-size:.85rem}
.sw{display:inline-block;width:.9rem;height:.9rem;vertical-align:middle;margin-right:.3rem;border:1px solid #999}
pre{background:#f6f7f9;padding:1rem;overflow:auto;font-size:.8rem}
"""

    /// The speed chart: speed line, requested band, target events, marker windows, Set presses.
    let chart (settings: CruiseSettings) (a: CruiseAnalysis) : string =
        let width, height = 1100.0, 380.0
        let left, right, top, bottom = 60.0, 20.0, 20.0, 45.0
        let plotW = width - left - right
        let plotH = height - top - bottom
        let sb = StringBuilder()
        let add (s: string) = sb.Append(s).Append('\n') |> ignore

        let t0 = 0.0
        let t1 = max 1e-3 (float (a.LastNs - a.FirstNs) / 1e9)

        let speeds = a.Speeds |> Array.map (fun struct (_, mph) -> mph)

        let vMin =
            (if speeds.Length = 0 then
                 settings.SpeedMin
             else
                 Array.min speeds)
            |> min settings.SpeedMin
            |> fun v -> Math.Floor(v / 5.0) * 5.0

        let vMax =
            (if speeds.Length = 0 then
                 settings.SpeedMax
             else
                 Array.max speeds)
            |> max settings.SpeedMax
            |> fun v -> Math.Ceiling(v / 5.0) * 5.0
            |> fun v -> if v <= vMin then vMin + 5.0 else v

        let x (rel: float) = left + (rel - t0) / (t1 - t0) * plotW

        let y (mph: float) =
            top + (1.0 - (mph - vMin) / (vMax - vMin)) * plotH

        add
            $"""<svg xmlns="http://www.w3.org/2000/svg" id="speed-chart" viewBox="0 0 {f 0 width} {f 0 height}" width="100%%" role="img" aria-label="Vehicle speed over time with the target band, target-speed events, marker windows and Set presses">"""

        add
            $"""<rect x="{f 1 left}" y="{f 1 top}" width="{f 1 plotW}" height="{f 1 plotH}" fill="#fff" stroke="#c9ced8"/>"""

        for w in a.MarkerWindows do
            let x0 = x w.WindowStart.Rel
            let x1 = x (min t1 w.WindowEnd.Rel)

            add
                $"""<rect class="marker-window" data-start="{f 3 w.Start.Rel}" x="{f 1 x0}" y="{f 1 top}" width="{f 1 (max 1.0 (x1 - x0))}" height="{f 1 plotH}" fill="#5b8def" fill-opacity="0.15"><title>marker window {f 2 w.WindowStart.Rel}–{f 2 w.WindowEnd.Rel} s{(if w.Partial then " (partial)" else "")}</title></rect>"""

        for e in a.TargetSpeedEvents do
            let x0 = x e.Start.Rel
            let x1 = x e.End.Rel

            add
                $"""<rect class="target-event" data-start="{f 3 e.Start.Rel}" x="{f 1 x0}" y="{f 1 top}" width="{f 1 (max 1.0 (x1 - x0))}" height="{f 1 plotH}" fill="#2ca25f" fill-opacity="0.18"><title>target speed {f 2 e.Start.Rel}–{f 2 e.End.Rel} s</title></rect>"""

        let bandTop = y settings.SpeedMax
        let bandBottom = y settings.SpeedMin

        add
            $"""<rect class="band" data-min="{f 2 settings.SpeedMin}" data-max="{f 2 settings.SpeedMax}" x="{f 1 left}" y="{f 1 bandTop}" width="{f 1 plotW}" height="{f 1 (max 1.0 (bandBottom - bandTop))}" fill="#e34a33" fill-opacity="0.18" stroke="#e34a33" stroke-dasharray="4 3"/>"""

        // Axes and grid.
        let mutable v = vMin

        while v <= vMax + 1e-9 do
            add
                $"""<line x1="{f 1 left}" x2="{f 1 (left + plotW)}" y1="{f 1 (y v)}" y2="{f 1 (y v)}" stroke="#eceff4"/><text x="{f 1 (left - 8.0)}" y="{f 1 (y v + 4.0)}" font-size="11" text-anchor="end">{f 0 v}</text>"""

            v <- v + 5.0

        let step =
            [ 1.0; 2.0; 5.0; 10.0; 15.0; 30.0; 60.0; 120.0; 300.0; 600.0; 1800.0; 3600.0 ]
            |> List.tryFind (fun s -> t1 / s <= 12.0)
            |> Option.defaultValue 7200.0

        let mutable t = 0.0

        while t <= t1 + 1e-9 do
            add
                $"""<text x="{f 1 (x t)}" y="{f 1 (top + plotH + 16.0)}" font-size="11" text-anchor="middle">{Format.mmss t |> fun s -> s.Substring(0, s.Length - 4)}</text>"""

            t <- t + step

        add
            $"""<text x="{f 1 (left + plotW / 2.0)}" y="{f 1 (height - 6.0)}" font-size="12" text-anchor="middle">time after the log's first event (mm:ss)</text>"""

        add
            $"""<text transform="translate(14 {f 1 (top + plotH / 2.0)}) rotate(-90)" font-size="12" text-anchor="middle">speed (mph)</text>"""

        // The speed line, thinned to at most ~2 points per pixel.
        if a.Speeds.Length > 0 then
            let every = max 1 (a.Speeds.Length / int (plotW * 2.0))
            let points = StringBuilder()

            for i in 0..every .. a.Speeds.Length - 1 do
                let struct (s, mph) = a.Speeds[i]

                points.Append(f 1 (x s.Rel)).Append(',').Append(f 1 (y mph)).Append(' ')
                |> ignore

            add $"""<polyline class="speed" fill="none" stroke="#2b59c3" stroke-width="1.4" points="{points}"/>"""

        for p in a.SetPresses do
            let px = x p.Time.Rel

            let speed =
                p.SpeedMph |> Option.map (fun s -> $" at {f 1 s} mph") |> Option.defaultValue ""

            add
                $"""<g class="set-press" data-time="{f 3 p.Time.Rel}"><line x1="{f 1 px}" x2="{f 1 px}" y1="{f 1 top}" y2="{f 1 (top + plotH)}" stroke="#c51b7d" stroke-width="2"/><text x="{f 1 (px + 3.0)}" y="{f 1 (top + 12.0)}" font-size="11" fill="#c51b7d">Set</text><title>Set press at {Format.mmss p.Time.Rel}{speed}</title></g>"""

        add "</svg>"
        sb.ToString()

    /// The whole report.
    let report
        (settings: CruiseSettings)
        (a: CruiseAnalysis)
        (inputName: string)
        (parameters: (string * string) list)
        (dataFiles: string list)
        (warnings: string list)
        (configJson: string)
        : string =
        let sb = StringBuilder()
        let add (s: string) = sb.Append(s).Append('\n') |> ignore
        let duration = float (a.LastNs - a.FirstNs) / 1e9

        add "<!DOCTYPE html>"
        add """<html lang="en"><head><meta charset="utf-8">"""
        add """<meta name="viewport" content="width=device-width, initial-scale=1">"""
        add $"""<title>Cruise control analysis – {h inputName}</title>"""
        add $"<style>{style}</style></head><body>"
        add "<h1>Subaru cruise control analysis</h1>"

        add
            $"""<p class="meta">Input <code>{h inputName}</code> ({a.Files.Length} file(s), {f 1 duration} s, {a.Events} events, {a.CanFrames} CAN frames, {a.Speeds.Length} speed samples) · generated {DateTime.UtcNow:``yyyy-MM-dd HH:mm:ss``} UTC · CtsLite {h CtsLite.Product.version}</p>"""

        add "<p class=\"meta\">Settings: "

        add (String.Join(" · ", parameters |> List.map (fun (k, v) -> $"<code>{h k}={h v}</code>")))

        add "</p>"

        add "<h2>Warnings</h2>"

        match warnings with
        | [] -> add "<p>None.</p>"
        | ws ->
            add "<ul class=\"warnings\">"

            for w in ws do
                add $"<li>{h w}</li>"

            add "</ul>"

        add "<h2>Key findings</h2><ul>"

        match a.SetPresses with
        | [] ->
            add
                "<li class=\"warn\">No Set button press found in Cruise_Buttons (0x146). Check the bus and that the drive has a Set press.</li>"
        | presses ->
            let inBand =
                presses
                |> List.filter (fun p ->
                    p.SpeedMph
                    |> Option.exists (fun s -> s >= settings.SpeedMin && s <= settings.SpeedMax))

            let bit =
                presses.Head.Bit
                |> Option.map (fun b -> $", bit {b} ({Bits.msbLabel b})")
                |> Option.defaultValue ""

            add
                $"""<li class="ok">Set button found: {presses.Length} press(es) on 0x146 bus {presses.Head.Bus}{bit}; {inBand.Length} inside the {f 1 settings.SpeedMin}–{f 1 settings.SpeedMax} mph band.</li>"""

        add $"<li>{a.ResumePresses.Length} Resume press(es), {a.MainPresses.Length} Main press(es).</li>"

        add
            $"<li>{a.CruiseActivations.Length} cruise activation(s), {a.CruiseDeactivations.Length} deactivation(s).</li>"

        add
            $"<li>{a.TargetSpeedEvents.Length} target-speed event(s) in {f 1 settings.SpeedMin}–{f 1 settings.SpeedMax} mph; {a.MarkerWindows.Length} marker window(s).</li>"

        add
            $"<li>Integrity: {a.Integrity.BadChecksumCount} frame(s) with a bad checksum of {a.Integrity.FramesChecksumChecked} checked (still used); {a.Integrity.CounterDiscontinuities} counter discontinuities.</li>"

        add "</ul>"

        add "<h2>Speed timeline</h2>"

        add
            """<p class="legend"><span><i class="sw" style="background:#2b59c3"></i>speed</span><span><i class="sw" style="background:#f4b6ab"></i>target band</span><span><i class="sw" style="background:#bfe3cc"></i>target-speed event</span><span><i class="sw" style="background:#d5e1fb"></i>marker window</span><span><i class="sw" style="background:#c51b7d"></i>Set press</span></p>"""

        add (chart settings a)

        add "<h2>Set presses</h2>"

        match a.SetPresses with
        | [] -> add "<p>None.</p>"
        | presses ->
            add "<table><tr><th>Time (mm:ss)</th><th>logMonoTime (s)</th><th>Speed (mph)</th><th>Bus</th></tr>"

            for p in presses do
                let speed = p.SpeedMph |> Option.map (f 2) |> Option.defaultValue ""

                add
                    $"<tr><td>{Format.mmss p.Time.Rel}</td><td>{f 3 p.Time.Abs}</td><td>{speed}</td><td>{p.Bus}</td></tr>"

            add "</table>"

        add "<h2>Target-speed events</h2>"

        match a.TargetSpeedEvents with
        | [] -> add "<p>None.</p>"
        | events ->
            add
                "<table><tr><th>#</th><th>Start</th><th>End</th><th>Duration (s)</th><th>Samples</th><th>Ends at</th></tr>"

            events
            |> List.iteri (fun i e ->
                let reason =
                    if e.EndsAtLastSample then
                        "last sample"
                    else
                        "first out-of-band sample"

                add
                    $"<tr><td>{i + 1}</td><td>{Format.mmss e.Start.Rel}</td><td>{Format.mmss e.End.Rel}</td><td>{f 3 (e.End.Rel - e.Start.Rel)}</td><td>{e.Samples}</td><td>{reason}</td></tr>")

            add "</table>"

        add "<h2>Marker windows</h2>"

        match a.MarkerWindows with
        | [] -> add "<p>None.</p>"
        | windows ->
            add
                "<table><tr><th>Window</th><th>Left on</th><th>Right on</th><th>Window start</th><th>Window end</th><th>Duration (s)</th><th>Status</th><th>Most changed</th></tr>"

            List.zip windows a.WindowActivity
            |> List.iteri (fun i (w, activity) ->
                let most =
                    activity
                    |> List.truncate 3
                    |> List.map (fun x -> $"{Format.address x.Address}/{x.Bus} ({x.Changes})")
                    |> fun l -> String.Join(", ", l)

                let stop = if w.Partial then "" else Format.mmss w.Stop.Rel
                let status = if w.Partial then "Partial" else "Complete"

                add
                    $"<tr><td>{i + 1}</td><td>{Format.mmss w.Start.Rel}</td><td>{stop}</td><td>{Format.mmss w.WindowStart.Rel}</td><td>{Format.mmss w.WindowEnd.Rel}</td><td>{f 2 (w.WindowEnd.Rel - w.WindowStart.Rel)}</td><td>{status}</td><td>{h most}</td></tr>")

            add "</table>"

        add "<h2>Address activity around the windows</h2>"

        match a.SegmentCounts with
        | [] -> add "<p>No marker windows, so no activity comparison.</p>"
        | counts ->
            add
                "<table><tr><th>Address</th><th>Bus</th><th>Pre</th><th>Window</th><th>Post</th><th>Delta</th><th>Unique in window</th></tr>"

            for c in
                counts
                |> List.sortBy (fun c -> -c.Delta, -c.Window, c.Address)
                |> List.truncate 15 do
                add
                    $"<tr><td>{Format.address c.Address}</td><td>{c.Bus}</td><td>{c.Pre}</td><td>{c.Window}</td><td>{c.Post}</td><td>{c.Delta}</td><td>{c.UniqueWindow}</td></tr>"

            add "</table>"

        add "<h2>Candidate bits</h2>"

        match a.Candidates with
        | [] -> add "<p>None.</p>"
        | cs ->
            add
                "<table><tr><th>Address</th><th>Bus</th><th>Bit</th><th>Label</th><th>Toggles</th><th>Rises</th><th>Falls</th><th>Score</th></tr>"

            for c in cs |> List.sortBy (fun c -> -c.Score, c.Address, c.Bit) |> List.truncate 25 do
                add
                    $"<tr><td>{Format.address c.Address}</td><td>{c.Bus}</td><td>{c.Bit}</td><td>{h (Bits.msbLabel c.Bit)}</td><td>{c.Toggles}</td><td>{c.Rises}</td><td>{c.Falls}</td><td>{f 3 c.Score}</td></tr>"

            add "</table>"

        add "<h2>Data files</h2><ul>"

        for file in dataFiles do
            add $"""<li><a href="{h (Uri.EscapeDataString file)}">{h file}</a></li>"""

        add "</ul>"
        add "<h2>Configuration snapshot</h2>"
        add $"<pre>{h configJson}</pre>"
        add "</body></html>"
        sb.ToString()
