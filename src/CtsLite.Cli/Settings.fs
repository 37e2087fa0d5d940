namespace CtsLite.Cli

open System
open System.IO

/// `~/.config/cts/config.toml`: the service `url`, its `token` and the `timeout` a user sets once
/// (`cts config set`). A flag wins over the variables (`CTS_URL`, `CTS_TOKEN`), which win over
/// the file, which wins over the defaults. The file is read only when it exists, so commands that
/// need none of it pay nothing.
[<RequireQualifiedAccess>]
module Settings =

    /// The keys the file may hold.
    let keys = [ "url"; "token"; "timeout" ]

    /// `CTS_CONFIG`, else `$XDG_CONFIG_HOME/cts/config.toml`, else `~/.config/cts/config.toml`.
    let path (environment: string -> string option) : string =
        match environment "CTS_CONFIG" with
        | Some p -> p
        | None ->
            let root =
                environment "XDG_CONFIG_HOME"
                |> Option.defaultWith (fun () ->
                    Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".config"))

            Path.Combine(root, "cts", "config.toml")

    /// The file's keys and values; an error naming the file, line and column when it is not
    /// TOML or holds what cts does not know.
    let read (file: string) : Result<Map<string, string>, string> =
        if not (File.Exists file) then
            Ok Map.empty
        else
            try
                let table =
                    Tomlyn.TomlSerializer.Deserialize<Tomlyn.Model.TomlTable>(
                        File.ReadAllText file,
                        Tomlyn.TomlSerializerOptions()
                    )

                let entries = [ for KeyValue(k, v) in table -> k, v ]

                match entries |> List.tryFind (fun (k, _) -> not (List.contains k keys)) with
                | Some(k, _) ->
                    let known = String.Join(", ", keys)
                    Error $"{file}: unknown key '{k}' (keys: {known})"
                | None ->
                    entries
                    |> List.map (fun (k, v) -> k, Convert.ToString(v, Globalization.CultureInfo.InvariantCulture))
                    |> Map.ofList
                    |> Ok
            with
            | :? Tomlyn.TomlException as e -> Error $"{file}: not TOML: {e.Message}"
            | :? IOException as e -> Error $"{file}: {e.Message}"
            | :? UnauthorizedAccessException -> Error $"{file}: permission denied"

    /// A warning when a file holding a token can be read by others than its owner.
    let permissionWarning (file: string) (values: Map<string, string>) : string option =
        if
            OperatingSystem.IsWindows()
            || not (values.ContainsKey "token")
            || not (File.Exists file)
        then
            None
        else
            let mode = File.GetUnixFileMode file

            let others =
                UnixFileMode.GroupRead
                ||| UnixFileMode.OtherRead
                ||| UnixFileMode.GroupWrite
                ||| UnixFileMode.OtherWrite

            if mode &&& others <> UnixFileMode.None then
                Some $"warning: {file} holds a token and others can read it; chmod 600 {file}"
            else
                None

    let private quote (value: string) =
        "\"" + value.Replace("\\", "\\\\").Replace("\"", "\\\"") + "\""

    /// Writes `values` to `file` (its folder created), readable by its owner only.
    let write (file: string) (values: Map<string, string>) : unit =
        Directory.CreateDirectory(Path.GetDirectoryName(Path.GetFullPath file))
        |> ignore

        let lines = [
            "# cts settings (cts config set|get|path); a flag or CTS_* variable wins over these."
            for KeyValue(k, v) in values do
                match k with
                | "timeout" -> $"{k} = {v}"
                | _ -> $"{k} = {quote v}"
        ]

        let temp = file + ".tmp"
        File.WriteAllText(temp, String.Join("\n", lines) + "\n")

        if not (OperatingSystem.IsWindows()) then
            File.SetUnixFileMode(temp, UnixFileMode.UserRead ||| UnixFileMode.UserWrite)

        File.Move(temp, file, true)

    /// Checks a value for its key.
    let check (key: string) (value: string) : Result<string, string> =
        match key with
        | "url" ->
            match Uri.TryCreate(value, UriKind.Absolute) with
            | true, u when u.Scheme = "http" || u.Scheme = "https" -> Ok(value.TrimEnd '/')
            | _ -> Error $"url: '{value}' is not an http(s) URL"
        | "timeout" ->
            match Int32.TryParse value with
            | true, n when n > 0 -> Ok(string n)
            | _ -> Error $"timeout: '{value}' is not a positive number of seconds"
        | "token" when value.Trim() <> "" -> Ok(value.Trim())
        | "token" -> Error "token: empty"
        | other ->
            let known = String.Join(", ", keys)
            Error $"unknown key '{other}' (keys: {known})"

/// `cts config set|get|path`.
[<RequireQualifiedAccess>]
module ConfigCommands =

    /// Runs one `cts config` subcommand on `file`.
    let run (ctx: CommandContext) (file: string) (args: Argu.ParseResults<ConfigArgs>) : int =
        match args.GetSubCommand() with
        | ConfigArgs.Path ->
            ctx.Out.WriteLine file
            ExitCode.Ok
        | ConfigArgs.Get a ->
            match Settings.read file with
            | Error e ->
                ctx.Err.WriteLine $"error: {e}"
                ExitCode.ClientError
            | Ok values ->
                match a.GetAllResults() with
                | [ ConfigGetArgs.Key key ] when not (List.contains key Settings.keys) ->
                    let known = String.Join(", ", Settings.keys)
                    ctx.Err.WriteLine $"error: unknown key '{key}' (keys: {known})"
                    ExitCode.ClientError
                | [ ConfigGetArgs.Key key ] ->
                    match values.TryFind key with
                    | Some v ->
                        ctx.Out.WriteLine v
                        ExitCode.Ok
                    | None ->
                        ctx.Err.WriteLine $"error: {key} is not set in {file}"
                        ExitCode.ClientError
                | _ ->
                    for KeyValue(k, v) in values do
                        let shown =
                            if k = "token" then
                                "(set; cts config get token shows it)"
                            else
                                v

                        ctx.Out.WriteLine $"{k} = {shown}"

                    ExitCode.Ok
        | ConfigArgs.Set a ->
            let key, value = a.GetResult ConfigSetArgs.Entry

            match Settings.check key value, Settings.read file with
            | Error e, _ ->
                ctx.Err.WriteLine $"error: {e}"
                ExitCode.ClientError
            | _, Error e ->
                ctx.Err.WriteLine $"error: {e} (fix or delete the file)"
                ExitCode.ClientError
            | Ok value, Ok values ->
                try
                    Settings.write file (values.Add(key, value))
                    ctx.Err.WriteLine $"{key} set in {file}"
                    ExitCode.Ok
                with
                | :? IOException
                | :? UnauthorizedAccessException as e ->
                    ctx.Err.WriteLine $"error: cannot write {file}: {e.Message}"
                    ExitCode.ClientError
