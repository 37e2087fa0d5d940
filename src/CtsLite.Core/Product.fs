namespace CtsLite

open System.Reflection

type internal AssemblyMarker = class end

/// Facts about this build of CtsLite.
[<RequireQualifiedAccess>]
module Product =

    /// The product version (from the assembly's informational version, without source-control suffix).
    let version: string =
        let asm = typeof<AssemblyMarker>.Assembly

        match asm.GetCustomAttribute<AssemblyInformationalVersionAttribute>() with
        | null -> asm.GetName().Version.ToString(3)
        | attr ->
            match attr.InformationalVersion.IndexOf '+' with
            | -1 -> attr.InformationalVersion
            | plus -> attr.InformationalVersion.Substring(0, plus)

    /// The version of the `/v1` HTTP API contract.
    [<Literal>]
    let ApiVersion = "1.0.0"

    /// The oldest `cts` client the service accepts.
    [<Literal>]
    let MinClientVersion = "0.1.0"

/// Small file-system helpers shared by the parsers and the edges.
[<RequireQualifiedAccess>]
module Io =

    /// What the operating system says `path` (links followed) is, when it is not a regular file:
    /// reading a FIFO or a device blocks or never ends, so CtsLite reads regular files only.
    let private notRegular (path: string) : string option =
        if System.OperatingSystem.IsWindows() then
            // No FIFOs or devices among Windows file names; a folder is what can be met there.
            if System.IO.Directory.Exists path then
                Some "a folder"
            else
                None
        else
            let mutable status = Unchecked.defaultof<Mono.Unix.Native.Stat>

            if Mono.Unix.Native.Syscall.stat (path, &status) <> 0 then
                // Missing or unreadable: the open that follows names the reason.
                None
            else
                let kind = status.st_mode &&& Mono.Unix.Native.FilePermissions.S_IFMT

                if kind = Mono.Unix.Native.FilePermissions.S_IFREG then
                    None
                elif kind = Mono.Unix.Native.FilePermissions.S_IFDIR then
                    Some "a folder"
                elif kind = Mono.Unix.Native.FilePermissions.S_IFIFO then
                    Some "a named pipe (FIFO)"
                elif kind = Mono.Unix.Native.FilePermissions.S_IFCHR then
                    Some "a character device"
                elif kind = Mono.Unix.Native.FilePermissions.S_IFBLK then
                    Some "a block device"
                elif kind = Mono.Unix.Native.FilePermissions.S_IFSOCK then
                    Some "a socket"
                else
                    Some "not a regular file"

    /// Ok when `path` is a regular file or does not exist (opening it then says why); otherwise
    /// the reason, e.g. `not a regular file: a named pipe (FIFO)`. Checked before every open, since
    /// opening a FIFO blocks until a writer comes, and no cancellation reaches a blocked open.
    let regularFile (path: string) : Result<unit, string> =
        match notRegular path with
        | None -> Ok()
        | Some kind -> Error $"not a regular file: {kind}"

    /// Reads a whole text file, turning the expected I/O failures into a reason.
    let readText (path: string) : Result<string, string> =
        try
            match regularFile path with
            | Error e -> Error e
            | Ok() -> Ok(System.IO.File.ReadAllText path)
        with
        | :? System.IO.FileNotFoundException
        | :? System.IO.DirectoryNotFoundException -> Error "no such file"
        | :? System.UnauthorizedAccessException -> Error "permission denied"
        | :? System.IO.IOException as e -> Error e.Message
