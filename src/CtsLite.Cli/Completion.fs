namespace CtsLite.Cli

open System
open Argu

/// Shell completion: the scripts `cts completion bash|zsh|fish` prints, and the words they ask
/// `cts __complete <words…>` for. The words come from the argument types themselves (commands,
/// options) and from this cts's catalog (tool and monitor ids, their parameter names), so the
/// completion never falls behind the command line.
[<RequireQualifiedAccess>]
module Completion =

    /// The hidden command the scripts call: `cts __complete <the words after cts>…`, the last
    /// being the word under the cursor (empty at a space).
    [<Literal>]
    let Command = "__complete"

    let private casesOf (parser: ArgumentParser) =
        CommandLine.optionCases parser |> List.filter (fun c -> not c.IsHidden.Value)

    // The options a parser passes down to its subcommands.
    let private inheritedOf (parser: ArgumentParser) =
        casesOf parser
        |> List.filter (fun c -> c.UnionCaseInfo.GetCustomAttributes(typeof<InheritAttribute>).Length > 0)
        |> CommandLine.names

    let private subcommandsOf = CommandLine.subcommandsOf

    /// Where the words before the cursor leave the command line.
    type private Place = {
        /// The subcommands walked, e.g. `["mon"; "run"]`.
        Path: string list
        Parser: ArgumentParser
        /// The words that were neither subcommands nor options (the main argument's values).
        Positionals: string list
        /// The option whose value is being completed, if any.
        Pending: string option
        /// The options inherited from the commands above.
        Inherited: (string * int) list
    }

    /// Every option the place accepts, with the number of values each takes.
    let private optionsOf (place: Place) : (string * int) list =
        CommandLine.names (casesOf place.Parser)
        @ place.Inherited
        // Accepted anywhere on the line (moved to the front before parsing).
        @ (CommandLine.globals |> List.map (fun g -> g, 1))

    let rec private walk (place: Place) (words: string list) : Place =
        match words with
        | [] -> place
        | w :: rest ->
            match subcommandsOf place.Parser |> List.tryFind (fun (n, _) -> n = w) with
            | Some(name, sub) ->
                walk
                    {
                        Path = place.Path @ [ name ]
                        Parser = sub
                        Positionals = []
                        Pending = None
                        Inherited = place.Inherited @ inheritedOf place.Parser
                    }
                    rest
            | None ->
                match optionsOf place |> List.tryFind (fun (n, _) -> n = w) with
                | Some(_, arity) when arity > 0 && List.length rest < arity -> { place with Pending = Some w }
                | Some(_, arity) -> walk place (List.skip arity rest)
                | None ->
                    walk
                        {
                            place with
                                Positionals = place.Positionals @ [ w ]
                        }
                        rest

    let private toolIds () =
        CtsLite.Tools.Catalog.descriptors |> List.map _.Id

    let private monitorIds () =
        CtsLite.Monitors.Catalog.descriptors |> List.map _.Id

    let private parameterNames (descriptors: CtsLite.Tools.ToolDescriptor list) (id: string) =
        descriptors
        |> List.tryFind (fun d -> d.Id = id)
        |> Option.map (fun d -> d.Parameters |> List.map (fun p -> p.Name + "="))
        |> Option.defaultValue []

    /// The words that may stand where the cursor is, given `words` (the command line after
    /// `cts`, its last the word being completed). None fit: the shell offers file names.
    let candidates (parser: ArgumentParser) (words: string list) : string list =
        let before, current =
            match List.rev words with
            | [] -> [], ""
            | last :: earlier -> List.rev earlier, last

        let place =
            walk
                {
                    Path = []
                    Parser = parser
                    Positionals = []
                    Pending = None
                    Inherited = []
                }
                before

        let first = List.tryHead place.Positionals

        let words =
            match place.Pending with
            | Some("-p" | "--param") ->
                match place.Path, first with
                | [ "run" ], Some tool -> parameterNames CtsLite.Tools.Catalog.descriptors tool
                | [ "mon"; ("run" | "start") ], Some monitor ->
                    parameterNames CtsLite.Monitors.Catalog.descriptors monitor
                | _ -> []
            | Some "--status" -> [ "queued"; "running"; "completed"; "failed"; "canceled" ]
            | Some "--tool" -> toolIds ()
            | Some "--decompressor" -> [ "auto"; "native"; "managed" ]
            | Some _ -> []
            | None when current.StartsWith "-" -> (optionsOf place |> List.map fst) @ place.Parser.HelpFlags
            | None ->
                let ids =
                    match place.Path, first with
                    | [ "run" ], None -> toolIds ()
                    | [ ("capabilities" | "cap" | "tools") ], None -> toolIds () @ monitorIds ()
                    | [ "mon"; ("run" | "start") ], None -> monitorIds ()
                    | [ "completion" ], None -> [ "bash"; "zsh"; "fish" ]
                    | _ -> []

                (subcommandsOf place.Parser |> List.map fst) @ ids

        words
        |> List.filter (fun w -> w.StartsWith(current, StringComparison.Ordinal))
        |> List.distinct

    /// The script that makes `shell` complete `cts`, to be sourced from its start-up file.
    let script (shell: CompletionShell) : string =
        match shell with
        | CompletionShell.Bash ->
            """# cts completion for bash: add  source <(cts completion bash)  to ~/.bashrc
_cts() {
    local IFS=$'\n'
    COMPREPLY=($(cts __complete "${COMP_WORDS[@]:1:COMP_CWORD}" 2>/dev/null))
    if [[ ${#COMPREPLY[@]} -eq 1 && ${COMPREPLY[0]} == *= ]]; then
        compopt -o nospace
    fi
}
complete -o default -F _cts cts
"""
        | CompletionShell.Zsh ->
            """#compdef cts
# cts completion for zsh: add  source <(cts completion zsh)  to ~/.zshrc (after compinit)
_cts() {
    local -a candidates with_value others
    candidates=("${(@f)$(cts __complete "${(@)words[2,CURRENT]}" 2>/dev/null)}")
    if [[ -n ${candidates[1]} ]]; then
        with_value=(${(M)candidates:#*=})
        others=(${candidates:#*=})
        (( ${#others} )) && compadd -a others
        (( ${#with_value} )) && compadd -S '' -a with_value
    else
        _files
    fi
}
compdef _cts cts
"""
        | CompletionShell.Fish ->
            """# cts completion for fish: cts completion fish > ~/.config/fish/completions/cts.fish
complete -c cts -a '(cts __complete (commandline -opc)[2..-1] (commandline -ct) 2>/dev/null)'
"""
