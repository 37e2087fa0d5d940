module CtsLite.Core.Tests.Tests

open System.Reflection
open System.Text.RegularExpressions
open Expecto
open CtsLite
open CtsLite.Tools

let product =
    testList "Product" [
        test "version is the assembly's informational version without build metadata" {
            let asm = typeof<ParameterType>.Assembly

            let informational =
                asm.GetCustomAttribute<AssemblyInformationalVersionAttribute>().InformationalVersion

            Expect.isTrue (informational.StartsWith Product.version) "version is a prefix of the informational version"
            Expect.isFalse (Product.version.Contains "+") "no source-control suffix"
            Expect.isMatch Product.version @"^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$" "semantic version"
        }
        test "api and minimum client versions are semantic versions" {
            Expect.isMatch Product.ApiVersion @"^\d+\.\d+\.\d+$" "api version"
            Expect.isMatch Product.MinClientVersion @"^\d+\.\d+\.\d+$" "min client version"
        }
    ]

let wireNames =
    testList "wire names" [
        test "parameter types use the Tool Capability spellings" {
            let all = [
                ParameterType.Str
                ParameterType.Int
                ParameterType.Float
                ParameterType.Bool
                ParameterType.List
                ParameterType.File
            ]

            Expect.equal (all |> List.map ParameterType.name) [ "str"; "int"; "float"; "bool"; "list"; "file" ] "names"
        }
        test "categories are lower-case words" {
            let all = [
                ToolCategory.Analyzer
                ToolCategory.Converter
                ToolCategory.Exporter
                ToolCategory.Monitor
            ]

            for c in all do
                Expect.isTrue (Regex.IsMatch(ToolCategory.name c, "^[a-z]+$")) $"{c}"
        }
        test "catalog ids are unique: tools kebab-case, monitors snake_case as openpilot names them" {
            let tools = Catalog.descriptors |> List.map (fun t -> t.Id)
            let monitors = CtsLite.Monitors.Catalog.descriptors |> List.map (fun t -> t.Id)
            Expect.equal (List.distinct (tools @ monitors)) (tools @ monitors) "unique"

            for id in tools do
                Expect.isMatch id "^[a-z0-9]+(-[a-z0-9]+)*$" id

            for id in monitors do
                Expect.isMatch id "^[a-z0-9]+(_[a-z0-9]+)*$" id
        }
    ]

let all =
    testList "Core" [
        product
        wireNames
        CapnpTests.all
        LogApiTests.all
        LogSourceTests.all
        Bzip2Tests.all
        DbcTests.all
        BitAnalysisTests.all
        SubaruTests.all
        JwtTests.all
        ToolTests.all
        ExportToolTests.all
        ToolRunnerTests.all
        FrameIndexTests.all
        ReportBrowserTests.all
        MonitorTests.all
        BridgeTests.all
    ]
