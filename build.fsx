// CtsLite build script: `dotnet fsi build.fsx <target> [-- args]`. No FAKE: plain processes.
// Targets: restore, build, test, format, format-check, pack, openapi, surface, bench, serve, schema <folder>.
// Every target does its own set-up (tool restore, packages), so each works on a fresh clone.

open System
open System.Diagnostics
open System.IO
open System.Runtime.InteropServices

let root = __SOURCE_DIRECTORY__
let configuration = "Release"

[<DllImport("libc", SetLastError = true)>]
extern int geteuid()

[<DllImport("libc", SetLastError = true)>]
extern int kill(int pid, int signal)

let private log (message: string) = eprintfn "build: %s" message

/// Runs a program with inherited standard streams; returns its exit code.
let run (program: string) (args: string list) : int =
    let info =
        ProcessStartInfo(program, args, WorkingDirectory = root, UseShellExecute = false)

    log $"""{program} {String.Join(" ", args)}"""
    use proc = Process.Start info
    // Forward SIGTERM so a supervised `serve` shuts the service down gracefully.
    use _ =
        PosixSignalRegistration.Create(
            PosixSignal.SIGTERM,
            fun ctx ->
                ctx.Cancel <- true
                kill (proc.Id, 15) |> ignore
        )

    proc.WaitForExit()
    proc.ExitCode

let runOrExit program args =
    match run program args with
    | 0 -> ()
    | code ->
        log $"failed with exit code {code}"
        exit code

let restore () =
    runOrExit "dotnet" [ "tool"; "restore" ]
    runOrExit "dotnet" [ "paket"; "restore" ]

let build () =
    restore ()

    runOrExit "dotnet" [
        "build"
        "CtsLite.sln"
        "-c"
        configuration
        "--nologo"
        "-clp:ErrorsOnly;Summary"
    ]

/// Debian packages the tests need, keyed by the command each provides.
let debianPackages = [ "capnp", "capnproto"; "chromium", "chromium"; "tmux", "tmux" ]

let private onPath (command: string) =
    (Environment.GetEnvironmentVariable "PATH").Split(':')
    |> Array.exists (fun dir -> File.Exists(Path.Combine(dir, command)))

let ensureDebianPackages () =
    let missing =
        debianPackages
        |> List.filter (fun (command, _) -> not (onPath command))
        |> List.map snd

    match missing with
    | [] -> ()
    | packages when geteuid () = 0 ->
        runOrExit "apt-get" [ "update"; "-qq" ]
        runOrExit "apt-get" ([ "install"; "-y"; "-qq"; "--no-install-recommends" ] @ packages)
    | packages ->
        log
            $"""the tests need Debian packages that are missing; install them with:
    sudo apt-get update && sudo apt-get install -y {String.Join(" ", packages)}"""

        exit 1

let output (project: string) (assembly: string) =
    Path.Combine(root, project, "bin", configuration, "net10.0", assembly)

let args = fsi.CommandLineArgs |> Array.skip 1 |> Array.toList

let target, rest =
    match args with
    | [] -> "build", []
    | t :: more -> t, (more |> List.filter (fun a -> a <> "--"))

let formatTargets = [ "src"; "tests"; "bench"; "build.fsx" ]

match target with
| "restore" -> restore ()
| "build" -> build ()
| "test" ->
    ensureDebianPackages ()
    build ()
    exit (run "dotnet" (output "tests/CtsLite.Tests" "CtsLite.Tests.dll" :: rest))
| "format" ->
    runOrExit "dotnet" [ "tool"; "restore" ]
    runOrExit "dotnet" ("fantomas" :: formatTargets)
| "format-check" ->
    runOrExit "dotnet" [ "tool"; "restore" ]
    runOrExit "dotnet" ("fantomas" :: "--check" :: formatTargets)
| "pack" ->
    // Every packable project of the solution (CtsLite.Core, CtsLite, the cts tool): what is a
    // package is said once, by IsPackable in the projects, so no dependency is left unpacked.
    restore ()
    let out = Path.Combine(root, "artifacts", "packages")
    runOrExit "dotnet" ([ "pack"; "CtsLite.sln"; "-c"; configuration; "-o"; out; "--nologo" ] @ rest)
    log $"packages in {out}"
| "surface" ->
    // Rewrites docs/api/*.txt, the public surface of each package (a test compares them).
    build ()
    Environment.SetEnvironmentVariable("CTS_UPDATE_SURFACE", "1")

    exit (
        run "dotnet" [
            output "tests/CtsLite.Tests" "CtsLite.Tests.dll"
            "--filter"
            "CtsLite.public surface"
        ]
    )
| "openapi" ->
    // Regenerates docs/openapi.json from the route table (a test fails while it is out of date).
    restore ()

    runOrExit "dotnet" [
        "build"
        "src/CtsLite.Server/CtsLite.Server.fsproj"
        "-c"
        configuration
        "--nologo"
        "-clp:ErrorsOnly"
    ]

    runOrExit "dotnet" [
        output "src/CtsLite.Server" "CtsLite.Server.dll"
        "--write-openapi"
        Path.Combine(root, "docs", "openapi.json")
    ]
| "bench" when List.contains "--vs-native" rest ->
    // Whole processes as users run them: `cts` packed as `pack` packs it (under a version of its
    // own, so no NuGet cache answers) and installed with `dotnet tool install`, then timed
    // against `zstd -dc` and `bzip2 -dc`.
    build ()
    let work = Path.Combine(root, "artifacts", "bench")
    let feed, tools = Path.Combine(work, "feed"), Path.Combine(work, "tool")

    for dir in [ feed; tools ] do
        if Directory.Exists dir then
            Directory.Delete(dir, true)

    let version = "0.1.0-bench." + DateTime.UtcNow.ToString "yyyyMMddHHmmss"

    runOrExit "dotnet" [
        "pack"
        "src/CtsLite.Cli/CtsLite.Cli.fsproj"
        "-c"
        configuration
        "-o"
        feed
        $"-p:Version={version}"
        "--nologo"
    ]

    runOrExit "dotnet" [
        "tool"
        "install"
        "--tool-path"
        tools
        "--add-source"
        feed
        "CtsLite.Cli"
        "--version"
        version
    ]

    let args = rest |> List.filter ((<>) "--vs-native")

    exit (
        run
            "dotnet"
            (output "bench/CtsLite.Bench" "CtsLite.Bench.dll" :: args
             @ [ "--cts"; Path.Combine(tools, "cts") ])
    )
| "bench" ->
    build ()
    exit (run "dotnet" (output "bench/CtsLite.Bench" "CtsLite.Bench.dll" :: rest))
| "schema" ->
    // Regenerates the embedded cereal schema from a folder holding log.capnp (and its imports).
    match rest with
    | [ folder ] ->
        let output =
            Path.Combine(root, "src", "CtsLite.Core", "Schema", "cereal-log.capnp.bin")

        let info =
            ProcessStartInfo(
                "capnp",
                [ "compile"; "-o-"; "-I"; folder; Path.Combine(folder, "log.capnp") ],
                UseShellExecute = false,
                RedirectStandardOutput = true
            )

        use proc = Process.Start info
        use file = File.Create output
        proc.StandardOutput.BaseStream.CopyTo file
        proc.WaitForExit()

        if proc.ExitCode <> 0 then
            log "capnp compile failed"
            exit proc.ExitCode

        log $"wrote {output} ({file.Length} bytes)"
    | _ ->
        log "usage: dotnet fsi build.fsx schema <folder with log.capnp>"
        exit 2
| "serve" ->
    restore ()

    runOrExit "dotnet" [
        "build"
        "src/CtsLite.Server/CtsLite.Server.fsproj"
        "-c"
        configuration
        "--nologo"
        "-clp:ErrorsOnly"
    ]

    exit (run "dotnet" (output "src/CtsLite.Server" "CtsLite.Server.dll" :: rest))
| other ->
    log
        $"unknown target '{other}'; targets: restore, build, test, format, format-check, pack, openapi, surface, bench, serve, schema"

    exit 2
