namespace CtsLite.Logs

open System

/// What a file a user gives holds, judged by its first bytes (never by its name): the kinds an
/// upload or a tool input may be.
[<RequireQualifiedAccess>]
type FileKind =
    /// An openpilot log: zstd, bzip2 or raw Cap'n Proto stream framing.
    | Rlog
    /// A DBC file.
    | Dbc
    /// Comma-separated text (rlog-to-csv output, a list of times).
    | Csv

/// Classifying files by content.
[<RequireQualifiedAccess>]
module FileKind =

    /// `rlog`, `dbc` or `csv`, as the API names them.
    let name (kind: FileKind) : string =
        match kind with
        | FileKind.Rlog -> "rlog"
        | FileKind.Dbc -> "dbc"
        | FileKind.Csv -> "csv"

    /// The kind of a file from its first bytes (512 are enough), or None for anything else.
    let classify (head: ReadOnlySpan<byte>) : FileKind option =
        let isText =
            head.Length > 0
            && (let mutable ok = true

                for b in head do
                    if not (b = 9uy || b = 10uy || b = 13uy || b >= 32uy) then
                        ok <- false

                ok)

        // The log reader's own magic-byte detection (zstd frames, skippable frames, bzip2).
        if Compression.detect head "" <> Compression.Raw then
            Some FileKind.Rlog
        elif isText then
            let text = Text.Encoding.UTF8.GetString head

            if
                text.Contains "BO_ "
                || text.TrimStart().StartsWith "VERSION"
                || text.TrimStart().StartsWith "NS_"
                || text.TrimStart().StartsWith "CM_"
            then
                Some FileKind.Dbc
            else
                let first = text.Split('\n')[0]

                if first.Contains ',' then Some FileKind.Csv else None
        elif
            head.Length >= 8
            && Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian head < 512u
            && (let words = Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(head.Slice 4)
                words > 0u && words < (1u <<< 24))
        then
            // Cap'n Proto stream framing: segment count − 1, then the first segment's size in words.
            Some FileKind.Rlog
        else
            None
