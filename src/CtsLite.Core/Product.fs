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

    /// Reads a whole text file, turning the expected I/O failures into a reason.
    let readText (path: string) : Result<string, string> =
        try
            Ok(System.IO.File.ReadAllText path)
        with
        | :? System.IO.FileNotFoundException
        | :? System.IO.DirectoryNotFoundException -> Error "no such file"
        | :? System.UnauthorizedAccessException -> Error "permission denied"
        | :? System.IO.IOException as e -> Error e.Message
