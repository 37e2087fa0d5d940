namespace CtsLite.Tools

open System
open System.Globalization
open System.IO
open System.Security.Cryptography
open System.Text
open System.Text.Json
open System.Text.Json.Nodes

/// Formatting shared by every artifact: invariant numbers, `MM:SS.mmm` times, CSV cells.
[<RequireQualifiedAccess>]
module internal Format =

    let private invariant = CultureInfo.InvariantCulture

    /// A number with `places` digits after the point (invariant culture, `-0` printed as `0`).
    let decimals (places: int) (value: float) : string =
        let text = value.ToString("F" + string places, invariant)

        if text.StartsWith '-' && text.TrimStart('-', '0', '.') = "" then
            text.Substring 1
        else
            text

    /// Seconds as `MM:SS.mmm` (minutes not capped; negative times get a leading `-`).
    let mmss (seconds: float) : string =
        let sign = if seconds < 0.0 then "-" else ""
        let ms = int64 (Math.Round(abs seconds * 1000.0, MidpointRounding.AwayFromZero))
        let minutes = ms / 60000L
        let rest = ms % 60000L
        $"{sign}%02d{minutes}:%02d{rest / 1000L}.%03d{rest % 1000L}"

    /// `0x%03X`.
    let address (address: uint32) : string = $"0x{address:X3}"

    /// Upper-case hex without separators.
    let hex (payload: ReadOnlySpan<byte>) : string = Convert.ToHexString payload

    /// One CSV cell, quoted when it contains a comma, a quote or a line break.
    let csvCell (text: string) : string =
        if text.IndexOfAny([| ','; '"'; '\n'; '\r' |]) >= 0 then
            "\"" + text.Replace("\"", "\"\"") + "\""
        else
            text

    /// One CSV line (without the line break).
    let csvLine (cells: string seq) : string =
        String.Join(",", cells |> Seq.map csvCell)

/// Writing artifact files: complete or not at all (a temporary name renamed at the end).
[<RequireQualifiedAccess>]
module internal Artifacts =

    let private compact = JsonSerializerOptions(WriteIndented = false)
    let private indented = JsonSerializerOptions(WriteIndented = true)

    /// Writes a file through `write`, under a temporary name that is renamed to `name` only when
    /// `write` succeeds: a failed or cancelled run leaves no half-written artifact.
    let writeResult (dir: string) (name: string) (write: TextWriter -> Result<'a, 'e>) : Result<'a, 'e> =
        let path = Path.Combine(dir, name)
        let temp = Path.Combine(dir, $".{name}.{Guid.NewGuid():N}.tmp")
        // A tool may be handed a folder that does not exist yet (a library caller's choice).
        Directory.CreateDirectory dir |> ignore

        let mutable moved = false

        try
            let result =
                // The temporary name is new: CreateNew spares the truncation (a journal write on
                // ext4) that Create does, about half the cost of a small file.
                use file =
                    new FileStream(temp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 <<< 14)

                use writer = new StreamWriter(file, UTF8Encoding(false))
                writer.NewLine <- "\n"
                write writer

            if Result.isOk result then
                File.Move(temp, path, true)
                moved <- true

            result
        finally
            // Deleting a file that is not there is no error: no need to look first.
            if not moved then
                File.Delete temp

    /// Writes a whole file (see `writeResult`).
    let writeWith (dir: string) (name: string) (write: TextWriter -> unit) : unit =
        writeResult dir name (fun w -> Ok(write w)) |> ignore

    /// A JSON node as indented text.
    let jsonText (node: JsonNode) : string = node.ToJsonString indented

    /// A JSON node as compact text.
    let jsonCompact (node: JsonNode) : string = node.ToJsonString compact

    /// Writes indented JSON.
    let writeJson (dir: string) (name: string) (node: JsonNode) : unit =
        writeWith dir name (fun w -> w.Write(jsonText node))

    /// Writes a CSV artifact: `# key: value` lines, `# meta_json: {...}`, the header, the rows, and
    /// the sidecar `<name>.analysis_meta.json` holding the same metadata.
    let writeCsv
        (dir: string)
        (name: string)
        (meta: (string * JsonNode) list)
        (header: string list)
        (rows: string list seq)
        : unit =
        let metaObject = JsonObject()

        for key, value in meta do
            metaObject[key] <- (if isNull value then null else value.DeepClone())

        writeWith dir name (fun w ->
            for key, value in meta do
                let text =
                    match value with
                    | null -> ""
                    | :? JsonValue as v when v.GetValueKind() = JsonValueKind.String -> v.GetValue<string>()
                    | v -> jsonCompact v

                w.WriteLine $"# {key}: {text}"

            w.WriteLine $"# meta_json: {jsonCompact metaObject}"
            w.WriteLine(Format.csvLine header)

            for row in rows do
                w.WriteLine(Format.csvLine row))

        writeWith dir $"{Path.GetFileNameWithoutExtension name}.analysis_meta.json" (fun w ->
            w.Write(jsonText metaObject))

    /// The SHA-256 of a file as lower-case hex, streamed.
    let sha256Hex (path: string) : string =
        // Large reads straight into a pooled buffer: with the default 4 KiB reads the system
        // calls cost more than the hashing.
        use stream =
            new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.SequentialScan)

        use hash = IncrementalHash.CreateHash HashAlgorithmName.SHA256
        let buffer = Buffers.ArrayPool<byte>.Shared.Rent(1 <<< 20)

        try
            let mutable n = stream.Read(buffer, 0, buffer.Length)

            while n > 0 do
                hash.AppendData(buffer, 0, n)
                n <- stream.Read(buffer, 0, buffer.Length)

            Convert.ToHexString(hash.GetHashAndReset()).ToLowerInvariant()
        finally
            Buffers.ArrayPool<byte>.Shared.Return buffer

    /// The SHA-256 of a file as `sha256:<hex>`, as artifact headers name their input.
    let sha256 (path: string) : string = "sha256:" + sha256Hex path

    /// The HTTP content type of an artifact by its extension.
    let contentType (file: string) : string =
        match Path.GetExtension(file).ToLowerInvariant() with
        | ".csv" -> "text/csv; charset=utf-8"
        | ".json" -> "application/json"
        | ".jsonl" -> "application/jsonl"
        | ".html" -> "text/html; charset=utf-8"
        | ".png" -> "image/png"
        | _ -> "application/octet-stream"

    /// A JSON array of strings.
    let strings (items: string seq) : JsonNode =
        JsonArray(items |> Seq.map (fun s -> JsonValue.Create s :> JsonNode) |> Array.ofSeq) :> JsonNode

    /// A JSON string value.
    let str (s: string) : JsonNode = JsonValue.Create s :> JsonNode

    /// A JSON number value.
    let num (f: float) : JsonNode = JsonValue.Create f :> JsonNode

    /// A JSON integer value.
    let int (i: int64) : JsonNode = JsonValue.Create i :> JsonNode

    /// A JSON boolean value.
    let bool (b: bool) : JsonNode = JsonValue.Create b :> JsonNode

    /// A JSON object from pairs (null values kept as null).
    let obj (pairs: (string * JsonNode) seq) : JsonNode =
        let o = JsonObject()

        for k, v in pairs do
            o[k] <- (if isNull v || isNull v.Parent then v else v.DeepClone())

        o :> JsonNode

    /// A JSON array.
    let arr (items: JsonNode seq) : JsonNode =
        JsonArray(
            items
            |> Seq.map (fun v -> if isNull v || isNull v.Parent then v else v.DeepClone())
            |> Array.ofSeq
        )
        :> JsonNode

    /// Escapes text for HTML element content and attribute values.
    let html (text: string) : string = Net.WebUtility.HtmlEncode text

    /// Validated parameters as a JSON object (`Parameters.toJson`'s encoding).
    let parameters (p: ToolParameters) : JsonNode = JsonNode.Parse(Parameters.toJson p)
