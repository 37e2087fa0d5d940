/// The public surface of each package, listed by reflection and compared with the committed
/// listing in docs/api: a change to what library users see is reviewed like code.
/// `dotnet fsi build.fsx surface` rewrites the listings.
module CtsLite.Tests.SurfaceTests

open System
open System.IO
open System.Reflection
open Expecto

let rec private typeName (t: Type) : string =
    if t.IsGenericParameter then
        t.Name
    elif t.IsArray then
        typeName (t.GetElementType()) + "[]"
    elif t.IsByRef then
        typeName (t.GetElementType()) + "&"
    elif t.IsGenericType then
        let name = t.Name.Substring(0, t.Name.IndexOf '`')
        let args = String.Join(", ", t.GetGenericArguments() |> Array.map typeName)
        let ns = if isNull t.Namespace then "" else t.Namespace + "."
        $"{ns}{name}<{args}>"
    else
        t.FullName |> Option.ofObj |> Option.defaultValue t.Name

let private kind (t: Type) =
    if t.IsInterface then "interface"
    elif t.IsEnum then "enum"
    elif t.IsValueType then "struct"
    elif t.IsAbstract && t.IsSealed then "static class"
    elif typeof<Delegate>.IsAssignableFrom t then "delegate"
    else "class"

let private flags =
    BindingFlags.Public
    ||| BindingFlags.Instance
    ||| BindingFlags.Static
    ||| BindingFlags.DeclaredOnly

let private parameters (ps: ParameterInfo array) =
    String.Join(", ", ps |> Array.map (fun p -> $"{typeName p.ParameterType} {p.Name}"))

/// What the F# compiler writes for every record and union, the same for every type and so left
/// out: structural equality and comparison, `Tag`, `IsCase`, `NewCase`, the nested `Tags`.
let private boilerplate =
    Text.RegularExpressions.Regex "^(Equals|GetHashCode|CompareTo|(get_)?Tag|(get_)?Is[A-Z]\\w*|New[A-Z]\\w*)$"

let private generated (m: MemberInfo) =
    m.IsDefined(typeof<Runtime.CompilerServices.CompilerGeneratedAttribute>, false)
    && boilerplate.IsMatch m.Name

/// One line per public type and member, sorted, so the listing diffs well; a property's accessor
/// methods are the property's line.
let listing (assembly: Assembly) : string =
    let lines = [
        for t in
            assembly.GetExportedTypes()
            |> Array.filter (fun t -> not (t.IsNested && t.Name = "Tags"))
            |> Array.sortBy (fun t -> t.FullName) do
            let baseType =
                match t.BaseType with
                | null -> ""
                | b when b = typeof<obj> || b = typeof<ValueType> -> ""
                | b -> $" : {typeName b}"

            $"{kind t} {typeName t}{baseType}"

            let members = [
                for c in t.GetConstructors flags do
                    yield $"  new({parameters (c.GetParameters())})"
                let accessors =
                    set [
                        for p in t.GetProperties flags do
                            for a in p.GetAccessors() -> a.Name
                    ]

                for m in t.GetMethods flags do
                    if not m.IsSpecialName && not (generated m) && not (accessors.Contains m.Name) then
                        let s = if m.IsStatic then "static " else ""
                        yield $"  {s}method {m.Name}({parameters (m.GetParameters())}) : {typeName m.ReturnType}"

                for p in t.GetProperties flags |> Array.filter (fun p -> not (generated p)) do
                    let getter = p.GetGetMethod()

                    let s =
                        if not (isNull getter) && getter.IsStatic then
                            "static "
                        else
                            ""

                    yield $"  {s}property {p.Name} : {typeName p.PropertyType}"

                for f in t.GetFields flags do
                    let s = if f.IsStatic then "static " else ""
                    yield $"  {s}field {f.Name} : {typeName f.FieldType}"
            ]

            yield! List.sort members
    ]

    String.Join("\n", lines) + "\n"

let private packages: (string * Assembly) list = [
    "CtsLite.Core", typeof<CtsLite.Tools.ToolError>.Assembly
    "CtsLite.Api", typeof<CtsLite.InputRef>.Assembly
    "CtsLite", typeof<CtsLite.ToolCatalog>.Assembly
]

let private committed (name: string) =
    Path.Combine(TestEnv.repoRoot, "docs", "api", $"{name}.txt")

let all =
    testList "public surface" [
        for name, assembly in packages do
            test $"{name}: the public surface is the committed docs/api/{name}.txt" {
                let now = listing assembly
                let file = committed name

                if Environment.GetEnvironmentVariable "CTS_UPDATE_SURFACE" = "1" then
                    Directory.CreateDirectory(Path.GetDirectoryName file) |> ignore
                    File.WriteAllText(file, now)

                Expect.isTrue (File.Exists file) $"{file} exists (dotnet fsi build.fsx surface writes it)"

                Expect.equal
                    (File.ReadAllText file)
                    now
                    $"the public surface of {name} changed: review it, then `dotnet fsi build.fsx surface` and commit docs/api"
            }
        test "the C# package shows no F# types in its public signatures" {
            let listed = listing typeof<CtsLite.ToolCatalog>.Assembly
            Expect.isFalse (listed.Contains "Microsoft.FSharp") "no FSharp.Core type"
        }
    ]
