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

    if not (proc.WaitForExit(TimeSpan.FromMinutes 4.0)) then
        proc.Kill true
        failtestf "%s %A did not finish in 4 minutes" program args

    proc.ExitCode, out.Result + err.Result

let private succeed dir env program args =
    match exec dir env program args with
    | 0, output -> output
    | code, output -> failtestf "%s %A exited %d:\n%s" program args code output

/// The packages of this build, packed as `build.fsx pack` packs them (every packable project of
/// the solution) but without building again, under a version of their own so that no NuGet cache
/// can answer for them.
let private packAll (feed: string) (version: string) =
    succeed TestEnv.repoRoot [] "dotnet" [
        "pack"
        Path.Combine(TestEnv.repoRoot, "CtsLite.sln")
        "-c"
        TestEnv.configuration
        "--no-build"
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
            packAll feed version

            let packages =
                Directory.GetFiles(feed, "*.nupkg") |> Array.map Path.GetFileName |> Array.sort

            Expect.equal
                packages
                ([|
                    $"CtsLite.Api.{version}.nupkg"
                    $"CtsLite.Cli.{version}.nupkg"
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

            let listed = succeed work [] (Path.Combine(tools, "cts")) [ "tools" ]
            Expect.stringContains listed "cruise-control-analyzer" "the installed cts lists the tools")
    ]
