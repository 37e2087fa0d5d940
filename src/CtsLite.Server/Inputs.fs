namespace CtsLite.Server

open System
open System.IO
open System.Collections.Generic
open System.Threading.Tasks
open CtsLite
open CtsLite.Logs
open CtsLite.Tools
open FsToolkit.ErrorHandling

/// Paths that requests name (run inputs, file parameters), confined to the configured input roots.
[<RequireQualifiedAccess>]
module InputPaths =

    /// The path with every symbolic link along it resolved, also links met inside a link's
    /// target (a link into a folder that is itself reached through a link); components that do
    /// not exist are kept. At most 40 links are followed.
    let realPath (path: string) : string =
        let mutable hops = 0

        let rec walk (path: string) : string =
            let full = Path.GetFullPath path
            let root = Path.GetPathRoot full

            let parts =
                full.Substring(root.Length).Split('/', StringSplitOptions.RemoveEmptyEntries)

            let mutable current = root

            for part in parts do
                let next = Path.Combine(current, part)

                let info: FileSystemInfo =
                    if Directory.Exists next then
                        DirectoryInfo next
                    else
                        FileInfo next

                match info.LinkTarget with
                | null -> current <- next
                | _ when hops > 40 -> current <- next
                | _ ->
                    hops <- hops + 1

                    match info.ResolveLinkTarget true with
                    | null -> current <- next
                    // The target's own folders may be links too.
                    | target -> current <- walk target.FullName

            current

        walk path

    let private inside (root: string) (path: string) =
        path = root || path.StartsWith(root + "/", StringComparison.Ordinal)

    /// The file, folder or route the value names, when it lies under one of `roots`: a relative
    /// value is taken relative to each root in turn. `..` segments, NUL bytes, and paths (or links)
    /// leading out of the roots are refused, with the reason.
    let resolve (roots: string list) (value: string) : Result<string, string> =
        if String.IsNullOrWhiteSpace value then
            Error "the path is empty"
        elif value.IndexOf '\000' >= 0 then
            Error "the path contains a NUL byte"
        elif value.Split('/') |> Array.contains ".." then
            Error "the path contains '..'"
        elif roots.IsEmpty then
            Error
                "this service has no input_roots configured, so it reads no paths (set input_roots, or upload the file)"
        else
            let realRoots = roots |> List.map realPath

            let candidates =
                if Path.IsPathRooted value then
                    [ value ]
                else
                    roots |> List.map (fun r -> Path.Combine(r, value))

            // An absolute path outside every root is refused before anything is looked up, with
            // the same answer whether or not it exists: the answer tells nothing of the disk.
            let lexicallyInside (path: string) =
                let full = Path.GetFullPath path

                (roots @ realRoots)
                |> List.exists (fun r -> inside (Path.GetFullPath(r).TrimEnd('/')) full)

            // A candidate is usable when it is a file, or a segment folder or route with logs.
            let usable (candidate: string) =
                File.Exists candidate || Result.isOk (Route.resolve candidate)

            let within (path: string) =
                realRoots |> List.exists (fun r -> inside r (realPath path))

            match candidates |> List.tryFind usable with
            | _ when Path.IsPathRooted value && not (lexicallyInside value) ->
                Error $"'{value}' is outside the input roots"
            | None -> Error $"'{value}' does not exist under the input roots"
            | Some candidate ->
                // A route address names no file itself: its parent folder is what must be inside.
                let anchor =
                    if File.Exists candidate || Directory.Exists candidate then
                        candidate
                    else
                        match Route.tryParse candidate with
                        | Some r -> r.Parent
                        | None -> candidate

                // The files a folder or route stands for (a segment may be a link) must be inside too.
                let files =
                    match Route.resolve candidate with
                    | Ok files -> files
                    | Error _ -> [ candidate ]

                if not (within anchor) then
                    Error $"'{value}' is outside the input roots"
                elif not (List.forall within files) then
                    Error $"'{value}' leads outside the input roots"
                else
                    // A FIFO or device would block the run's read, or never end: refused here.
                    let refusal (file: string) =
                        match Io.regularFile file with
                        | Error reason -> Some reason
                        | Ok() -> None

                    match List.tryPick refusal files with
                    | Some reason -> Error $"'{value}' is {reason}"
                    | None -> Ok candidate

/// How paths of this machine are shown to clients: never as they are here. An upload is
/// `upload <id>`, a path under an input root is relative to that root (as a client names it), a
/// path in the data folder is relative to it, and any other path is its file name. Built once
/// per service (it resolves the folders' links): `Mask` runs on every log line of every run.
[<Sealed>]
type ServerPaths(config: ServiceConfig) =
    let withReal (dirs: string list) =
        dirs
        |> List.collect (fun d ->
            let full = Path.GetFullPath(d).TrimEnd('/')
            [ full; InputPaths.realPath full ])
        |> List.distinct

    // The folders a path is shown relative to, most specific first, each with what replaces it.
    let prefixes =
        (withReal config.InputRoots |> List.map (fun r -> r, "<input root>"))
        @ (withReal [ config.DataDir ] |> List.map (fun d -> d, "<data dir>"))
        |> List.sortByDescending (fun (d, _) -> d.Length)

    let uploads =
        let dir = Path.Combine(Path.GetFullPath config.DataDir, "uploads")

        Text.RegularExpressions.Regex(
            "(?:"
            + String.Join(
                "|",
                [ dir; InputPaths.realPath dir ]
                |> List.distinct
                |> List.map Text.RegularExpressions.Regex.Escape
            )
            + ")/([0-9a-fA-F-]{36})"
        )

    /// One path as a client may see it.
    member _.Show(path: string) : string =
        let m = uploads.Match path

        if m.Success && m.Index = 0 then
            $"upload {m.Groups[1].Value}" + path.Substring(m.Length)
        else
            match
                prefixes
                |> List.tryFind (fun (d, _) -> path.StartsWith(d + "/", StringComparison.Ordinal))
            with
            | Some(d, _) -> path.Substring(d.Length + 1)
            | None -> Path.GetFileName path

    /// `text` with every path of the data folder and the input roots in it shown as `Show` does
    /// (for error texts and log lines, which tools write with the paths they read).
    member _.Mask(text: string) : string =
        if String.IsNullOrEmpty text then
            text
        else
            prefixes
            |> List.fold
                (fun (t: string) (d, label) -> t.Replace(d + "/", "").Replace(d, label))
                (uploads.Replace(text, "upload $1"))

/// What a run names (its input, its `file` parameters) as readable paths on this node: one
/// definition for the check when a run is created and for the engine that runs it.
[<RequireQualifiedAccess>]
module RunInputs =

    /// The values of the `file` parameters of a tool or monitor (built-in names included; the
    /// runner skips those).
    let fileValuesOf (descriptor: ToolDescriptor) (parameters: ToolParameters) : string list = [
        for spec in descriptor.Parameters do
            if spec.Type = ParameterType.File then
                match parameters.Str spec.Name with
                | Some v -> v
                | None -> ()
    ]

    /// The values of a run's `file` parameters.
    let fileValues (prepared: PreparedRun) : string list =
        fileValuesOf prepared.Tool.Descriptor prepared.Parameters

    /// A resolver for `values`: the uploads among them looked up in the store once, here, so the
    /// tool's own calls need no store; any other value is a path under the input roots.
    let fileResolver
        (runs: IRunStore)
        (roots: string list)
        (values: string list)
        : Task<string -> Result<string, string>> = task {
        let uploads = Dictionary<string, string>()

        for value in List.distinct values do
            let! upload = runs.GetUpload value

            match upload with
            | Some u -> uploads[value] <- u.Path
            | None -> ()

        return
            fun value ->
                match uploads.TryGetValue value with
                | true, path -> Ok path
                | false, _ -> InputPaths.resolve roots value
    }

    /// A run's input as files here: a path under the input roots, or uploads whose files are
    /// still there (several read in order as one time line).
    let resolve (runs: IRunStore) (roots: string list) (input: InputRef) : Task<Result<ToolInput, string>> = task {
        let upload (id: string) = task {
            match! runs.GetUpload id with
            | Some upload when File.Exists upload.Path -> return Ok upload.Path
            | Some _ -> return Error $"upload {id} is gone"
            | None -> return Error $"no upload '{id}'"
        }

        match input with
        | InputRef.Path path -> return InputPaths.resolve roots path |> Result.map ToolInput.Path
        | InputRef.Upload id ->
            let! path = upload id
            return path |> Result.map ToolInput.Path
        | InputRef.Uploads [] -> return Error "no uploads given"
        | InputRef.Uploads ids ->
            let paths = ResizeArray<Result<string, string>>()

            for id in ids do
                let! path = upload id
                paths.Add path

            return List.ofSeq paths |> List.sequenceResultM |> Result.map ToolInput.Files
    }

    /// The upload ids a run's input names.
    let uploadIds (input: InputRef) : string list =
        match input with
        | InputRef.Path _ -> []
        | InputRef.Upload id -> [ id ]
        | InputRef.Uploads ids -> ids

    /// The names the user knows a run's input by: each upload's file name, in order, or the
    /// path's last part (a route address as given).
    let names (runs: IRunStore) (input: InputRef) : Task<string list> = task {
        match input with
        | InputRef.Path path ->
            return [
                match Path.GetFileName(path.TrimEnd('/')) with
                | "" -> path
                | name -> name
            ]
        | InputRef.Upload _
        | InputRef.Uploads _ ->
            let names = ResizeArray<string>()

            for id in uploadIds input do
                let! upload = runs.GetUpload id
                names.Add(upload |> Option.map _.Filename |> Option.defaultValue id)

            return List.ofSeq names
    }
