namespace CtsLite.Logs

open System
open System.IO
open System.Text.RegularExpressions

/// Which log of each segment to read.
[<RequireQualifiedAccess>]
type LogSelector =
    /// `/q`: qlog only.
    | Qlog
    /// `/r`: rlog only.
    | Rlog
    /// `/a` (the default): rlog, else qlog.
    | Auto

/// A route address: `<parent folder>/<dongle>|<YYYY-MM-DD--HH-MM-SS>[/start:end][/q|r|a]`.
type RouteAddress = {
    Parent: string
    Dongle: string
    Time: string
    /// Python-style slice bounds (end exclusive); negative counts from the end.
    Start: int option
    End: int option
    Selector: LogSelector
}

/// Finding the files of routes and segments.
[<RequireQualifiedAccess>]
module Route =

    let private routeName =
        Regex(@"^(?<dongle>[0-9a-fA-F]{16})[|_](?<time>\d{4}-\d{2}-\d{2}--\d{2}-\d{2}-\d{2})$")

    let private segmentName =
        Regex(@"^(?<dongle>[0-9a-fA-F]{16})[|_](?<time>\d{4}-\d{2}-\d{2}--\d{2}-\d{2}-\d{2})--(?<n>\d+)$")

    let private slice = Regex(@"^(?<start>-?\d+)?:(?<end>-?\d+)?$|^(?<single>-?\d+)$")

    /// Parses an address; `None` when it is not one.
    let tryParse (address: string) : RouteAddress option =
        let parts = address.TrimEnd('/').Split('/') |> List.ofArray |> List.rev

        let selector, parts =
            match parts with
            | "q" :: rest -> LogSelector.Qlog, rest
            | "r" :: rest -> LogSelector.Rlog, rest
            | "a" :: rest -> LogSelector.Auto, rest
            | _ -> LogSelector.Auto, parts

        let bounds, parts =
            match parts with
            | s :: rest when slice.IsMatch s ->
                let m = slice.Match s

                let value (g: string) =
                    if m.Groups[g].Success then
                        Some(int m.Groups[g].Value)
                    else
                        None

                match value "single" with
                | Some i -> (Some i, Some(if i = -1 then Int32.MaxValue else i + 1)), rest
                | None -> (value "start", value "end"), rest
            | _ -> (None, None), parts

        match parts with
        | name :: parentRev when routeName.IsMatch name ->
            let m = routeName.Match name

            Some {
                Parent = String.Join("/", List.rev parentRev) |> fun p -> if p = "" then "." else p
                Dongle = m.Groups["dongle"].Value
                Time = m.Groups["time"].Value
                Start = fst bounds
                End = snd bounds
                Selector = selector
            }
        | _ -> None

    let private pick (folder: string) (selector: LogSelector) : string option =
        let find (prefix: string) =
            Directory.EnumerateFiles folder
            |> Seq.filter (fun f ->
                let n = Path.GetFileName f
                n = prefix || n.StartsWith(prefix + ".", StringComparison.Ordinal))
            |> Seq.sort
            |> Seq.tryHead

        match selector with
        | LogSelector.Qlog -> find "qlog"
        | LogSelector.Rlog -> find "rlog"
        | LogSelector.Auto -> find "rlog" |> Option.orElse (find "qlog")

    /// The log files of a route, in segment order, sliced and selected; an error names what is missing.
    let files (route: RouteAddress) : Result<string list, string> =
        if not (Directory.Exists route.Parent) then
            Error $"{route.Parent}: no such folder"
        else
            let segments =
                Directory.EnumerateDirectories route.Parent
                |> Seq.choose (fun d ->
                    let m = segmentName.Match(Path.GetFileName d)

                    if
                        m.Success
                        && m.Groups["dongle"].Value.Equals(route.Dongle, StringComparison.OrdinalIgnoreCase)
                        && m.Groups["time"].Value = route.Time
                    then
                        Some(int m.Groups["n"].Value, d)
                    else
                        None)
                |> Seq.sortBy fst
                |> Array.ofSeq

            let count = segments.Length

            let index (bound: int option) (fallback: int) =
                match bound with
                | None -> fallback
                | Some i when i < 0 -> max 0 (count + i)
                | Some i -> min count i

            // Python slices index the sorted list of segments present.
            let chosen = segments[index route.Start 0 .. index route.End count - 1]

            if count = 0 then
                Error $"{route.Parent}: no segments of route {route.Dongle}|{route.Time}"
            else
                let missing, found =
                    chosen
                    |> Array.map (fun (n, d) -> n, pick d route.Selector)
                    |> Array.partition (fun (_, f) -> f.IsNone)

                match missing with
                | [||] -> Ok(found |> Array.choose snd |> List.ofArray)
                | _ ->
                    let names = missing |> Array.map (fun (n, _) -> string n) |> String.concat ", "
                    Error $"segments {names} of {route.Dongle}|{route.Time} have no matching log"

    /// Resolves an input: a log file, a segment folder (its rlog, else qlog) or a route address.
    let resolve (input: string) : Result<string list, string> =
        if File.Exists input then
            CtsLite.Io.regularFile input
            |> Result.map (fun () -> [ input ])
            |> Result.mapError (fun e -> $"{input}: {e}")
        elif
            Directory.Exists input
            && segmentName.IsMatch(Path.GetFileName(input.TrimEnd '/'))
        then
            match pick input LogSelector.Auto with
            | Some f -> Ok [ f ]
            | None -> Error $"{input}: no rlog or qlog in this segment folder"
        else
            match tryParse input with
            | Some route -> files route
            // A name with no route address in it is a file or folder that is not there.
            | None when not (Directory.Exists input) && not (input.Contains '|') ->
                Error $"{input}: no such file or folder"
            | None ->
                Error $"{input}: not a log file, segment folder or route (<folder>/<dongle>|<time>[/start:end][/q|r|a])"
