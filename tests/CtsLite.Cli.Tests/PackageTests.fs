/// The packages as users get them: every project `build.fsx pack` packs, installed from a local
/// folder feed into a fresh consumer (a C# program for `CtsLite`, `dotnet tool install` for `cts`).
module CtsLite.Cli.Tests.PackageTests

open System
open System.Diagnostics
open System.IO
open Expecto
open CtsLite.Tests

/// Runs a program to its end (bounded); exit code and everything it printed.
let private exec (dir: string) (env: (string * string) list) (program: string) (args: string list) =
    let info =
        ProcessStartInfo(
            program,
            args,
            WorkingDirectory = dir,
            RedirectStandardOutput = true,
            RedirectStandardError = true
        )

    info.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] <- "1"
    info.Environment["DOTNET_NOLOGO"] <- "1"

    for k, v in env do
        info.Environment[k] <- v

    use proc = Process.Start info
    let out = proc.StandardOutput.ReadToEndAsync()
    let err = proc.StandardError.ReadToEndAsync()

    // A pack of the tool compiles it for five platforms: minutes on a loaded two-core machine.
    if not (proc.WaitForExit(TimeSpan.FromMinutes 10.0)) then
        proc.Kill true
        failtestf "%s %A did not finish in 10 minutes" program args

    proc.ExitCode, out.Result + err.Result

let private succeed dir env program args =
    match exec dir env program args with
    | 0, output -> output
    | code, output -> failtestf "%s %A exited %d:\n%s" program args code output

/// What a pack reads of the repository: the sources and the build's configuration.
let private packInputs = [
    "src"
    ".paket"
    ".config"
    "paket.dependencies"
    "paket.lock"
    "Directory.Build.props"
    "global.json"
]

/// Copies `from` into `into`, leaving out build outputs.
let rec private copyTree (from: string) (into: string) =
    Directory.CreateDirectory into |> ignore

    for file in Directory.GetFiles from do
        File.Copy(file, Path.Combine(into, Path.GetFileName file))

    for dir in Directory.GetDirectories from do
        match Path.GetFileName dir with
        | "bin"
        | "obj" -> ()
        | name -> copyTree dir (Path.Combine(into, name))

/// Every packable project of `src/`, packed as `build.fsx pack` packs them (IsPackable decides),
/// under a version of their own so that no NuGet cache can answer for them. The pack builds
/// (the per-platform tool packages need their own builds), so it runs in a copy of the sources:
/// nothing the other tests are running from is rebuilt under them.
let private packAll (work: string) (feed: string) (version: string) =
    let tree = Path.Combine(work, "tree")

    for input in packInputs do
        let from = Path.Combine(TestEnv.repoRoot, input)

        if Directory.Exists from then
            copyTree from (Path.Combine(tree, input))
        elif File.Exists from then
            Directory.CreateDirectory tree |> ignore
            File.Copy(from, Path.Combine(tree, input))

    succeed tree [] "dotnet" [ "tool"; "restore" ] |> ignore

    for project in Directory.GetDirectories(Path.Combine(tree, "src")) |> Array.sort do
        for file in Directory.GetFiles(project, "*.?sproj") do
            succeed tree [] "dotnet" [
                "pack"
                file
                "-c"
                TestEnv.configuration
                "-o"
                feed
                $"-p:Version={version}"
                "--nologo"
            ]
            |> ignore

let private program =
    """using System;
using System.Collections.Generic;
using System.Linq;
using CtsLite;

var result = await ToolCatalog.RunAsync(
    "log-summary", args[0], new Dictionary<string, object?>(), args[1]);
Console.WriteLine($"tools={ToolCatalog.All.Count}");
Console.WriteLine($"artifacts={result.Artifacts.Count}");
Console.WriteLine($"summary={result.Summary}");
"""

let all =
    testList "packages" [
        testCase "CtsLite and cts install from a local folder feed and work" (fun () ->
            let work = TestEnv.tempDir "packages"
            let feed = Path.Combine(work, "feed")
            let version = $"0.1.0-test.{DateTime.UtcNow:yyyyMMddHHmmss}.{Guid.NewGuid():N}"
            packAll work feed version

            let packages =
                Directory.GetFiles(feed, "*.nupkg") |> Array.map Path.GetFileName |> Array.sort

            Expect.equal
                packages
                ([|
                    $"CtsLite.Api.{version}.nupkg"
                    $"CtsLite.Cli.{version}.nupkg"
                    for rid in [ "any"; "linux-arm64"; "linux-x64"; "osx-arm64"; "win-x64" ] do
                        $"CtsLite.Cli.{rid}.{version}.nupkg"
                    $"CtsLite.Core.{version}.nupkg"
                    $"CtsLite.{version}.nupkg"
                 |]
                 |> Array.sort)
                "every package"

            // A C# program that knows only the feed; packages already in the user's cache serve
            // as a read-only fallback (FSharp.Core, ZstdSharp.Port, …), the new ones are restored
            // into a folder of the test's own.
            let app = Path.Combine(work, "app")
            Directory.CreateDirectory app |> ignore

            let cache =
                Path.Combine(Environment.GetFolderPath Environment.SpecialFolder.UserProfile, ".nuget", "packages")

            File.WriteAllText(
                Path.Combine(app, "app.csproj"),
                $"""<Project Sdk="Microsoft.NET.Sdk">
  <PropertyGroup>
    <OutputType>Exe</OutputType>
    <TargetFramework>net10.0</TargetFramework>
    <Nullable>enable</Nullable>
    <ImplicitUsings>disable</ImplicitUsings>
    <RestorePackagesPath>{Path.Combine(work, "packages")}</RestorePackagesPath>
    <RestoreAdditionalProjectFallbackFolders>{cache}</RestoreAdditionalProjectFallbackFolders>
  </PropertyGroup>
  <ItemGroup>
    <PackageReference Include="CtsLite" Version="{version}" />
  </ItemGroup>
</Project>
"""
            )

            File.WriteAllText(Path.Combine(app, "Program.cs"), program)

            File.WriteAllText(
                Path.Combine(app, "nuget.config"),
                $"""<?xml version="1.0" encoding="utf-8"?>
<configuration>
  <packageSources>
    <add key="local" value="{feed}" />
  </packageSources>
</configuration>
"""
            )

            // nuget.org stays a source through the machine's own configuration for FSharp.Core & co.
            let input =
                Path.Combine(TestEnv.sharedDir (), "data", "rlogs", "synthetic", "default.rlog.zst")

            let output =
                succeed app [] "dotnet" [ "run"; "-c"; "Release"; "--"; input; Path.Combine(work, "out") ]

            Expect.stringContains output "tools=5" "the catalog"
            Expect.stringContains output "artifacts=" "artifacts listed"

            Expect.isGreaterThan
                (Directory.GetFiles(Path.Combine(work, "out")).Length)
                0
                "the tool wrote its artifacts"

            // The command line as a .NET tool, installed from the same feed.
            let tools = Path.Combine(work, "tools")

            succeed work [] "dotnet" [
                "tool"
                "install"
                "--tool-path"
                tools
                "--add-source"
                feed
                "--version"
                version
                "CtsLite.Cli"
            ]
            |> ignore

            let cts = Path.Combine(tools, "cts")
            let listed = succeed work [] cts [ "tools" ]
            Expect.stringContains listed "cruise-control-analyzer" "the installed cts lists the tools"
            Expect.equal ((succeed work [] cts [ "--version" ]).Trim()) version "cts --version is the package's"

            let runOut = Path.Combine(work, "cts-run")

            let ran =
                succeed work [] cts [ "run"; "--local"; "log-summary"; input; "--out-dir"; runOut ]

            Expect.stringContains ran "log_summary.json" "a local run of the installed tool"

            Expect.isTrue (File.Exists(Path.Combine(runOut, "log_summary.json"))) "its artifacts where it said"

            // This machine's own package was chosen, precompiled (an R2R image has a native header).
            let rid = Runtime.InteropServices.RuntimeInformation.RuntimeIdentifier

            let installed =
                Directory.GetFiles(Path.Combine(tools, ".store"), "cts.dll", SearchOption.AllDirectories)

            match installed with
            | [| dll |] ->
                Expect.stringContains dll $"ctslite.cli.{rid}" "the package of this platform"

                use pe = new Reflection.PortableExecutable.PEReader(File.OpenRead dll)
                Expect.isGreaterThan pe.PEHeaders.CorHeader.ManagedNativeHeaderDirectory.Size 0 "ReadyToRun code"
            | other -> failtestf "one cts.dll expected, found %A" other)
    ]
