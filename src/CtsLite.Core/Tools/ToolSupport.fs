namespace CtsLite.Tools

open System
open System.IO
open CtsLite.Can

/// What several tools share: the built-in files a `file` parameter may name, DBC loading, and the
/// rule that picks a default bus. Tools call this module, never each other.
[<RequireQualifiedAccess>]
module internal ToolSupport =

    /// opendbc's Subaru global DBC (MIT), built into CtsLite.Core so a `dbc` parameter works
    /// without any file.
    [<Literal>]
    let SubaruDbc = "subaru_global_2017_generated.dbc"

    /// Whether `value` names a built-in file (so no resolver is asked for it).
    let isBuiltInFile (value: string) : bool = List.contains value Dbc.builtInNames

    /// The text of a built-in file.
    let builtInText (name: string) : string option = Dbc.tryBuiltInText name

    /// The DBC a `file` parameter names: a built-in one by name, else the file the run's resolver
    /// gives; the first errors name the file, line and column.
    let loadDbcWith
        (resolveFile: string -> Result<string, string>)
        (parameter: string)
        (value: string)
        : Result<Database, ToolError> =
        let parsed =
            match builtInText value with
            | Some text -> Dbc.parseText value text
            | None ->
                match resolveFile value with
                | Error e ->
                    Error [
                        {
                            File = value
                            Line = 0
                            Column = 0
                            Problem = DbcProblem.Unreadable e
                        }
                    ]
                | Ok path -> Dbc.loadFile path

        match parsed with
        | Ok db -> Ok db
        | Error errors ->
            let first = errors |> List.truncate 3 |> List.map DbcError.describe
            Error(ToolError.InvalidFile(parameter, String.Join("; ", first)))

    /// `loadDbcWith` the run's resolver.
    let loadDbc (ctx: ToolContext) (parameter: string) (value: string) : Result<Database, ToolError> =
        loadDbcWith ctx.ResolveFile parameter value

    /// The default bus of an address: the src with most frames, preferring receive buses (< 128),
    /// ties to the lowest src.
    let defaultBus (framesPerSrc: (int * int64) list) : int option =
        let pick (candidates: (int * int64) list) =
            candidates
            |> List.sortBy (fun (src, n) -> -n, src)
            |> List.tryHead
            |> Option.map fst

        match framesPerSrc |> List.filter (fun (src, n) -> src < 128 && n > 0L) with
        | [] -> pick (framesPerSrc |> List.filter (fun (_, n) -> n > 0L))
        | receive -> pick receive
