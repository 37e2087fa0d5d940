/// Where the tests find the repository, the shared data and the built programs.
module internal CtsLite.Tests.TestEnv

open System
open System.IO
open System.Reflection

/// The repository root: the nearest folder above the test binaries holding CtsLite.sln.
let repoRoot: string =
    let rec up (dir: DirectoryInfo) =
        match dir with
        | null -> failwith $"CtsLite.sln not found above {AppContext.BaseDirectory}"
        | d when File.Exists(Path.Combine(d.FullName, "CtsLite.sln")) -> d.FullName
        | d -> up d.Parent

    up (DirectoryInfo AppContext.BaseDirectory)

/// `CTS_SHARED_DIR`, or `../shared` beside the repository.
let sharedDirCandidate: string =
    match Environment.GetEnvironmentVariable "CTS_SHARED_DIR" with
    | null
    | "" -> Path.GetFullPath(Path.Combine(repoRoot, "..", "shared"))
    | dir -> Path.GetFullPath dir

/// The one message given when the shared data is missing.
let sharedDirMissingMessage: string =
    $"shared test data not found at {sharedDirCandidate}: set CTS_SHARED_DIR to the folder holding data/rlogs and reference (default: ../shared beside the repository)"

/// The shared data folder; fails the calling test with one clear message when it is missing.
let sharedDir () : string =
    match Directory.Exists(Path.Combine(sharedDirCandidate, "data", "rlogs")) with
    | true -> sharedDirCandidate
    | false -> failwith sharedDirMissingMessage

/// The comma2k19-derived RAV4 rlog of the shared data (`zst` or `bz2`).
let comma2k19 (extension: string) : string =
    Path.Combine(
        sharedDir (),
        "data",
        "rlogs",
        "derived",
        $"comma2k19_rav4_b0c9d2329ad1606b_2018-08-02--08-34-47--40.rlog.{extension}"
    )

/// A DBC of the shared opendbc copy's `generated` folder, e.g. `subaru_global_2017_generated.dbc`.
let generatedDbc (name: string) : string =
    Path.Combine(sharedDir (), "reference", "opendbc", "generated", name)

/// Debug or Release: the configuration these tests were built in, so the programs match.
let configuration: string =
    match Assembly.GetExecutingAssembly().GetCustomAttribute<AssemblyConfigurationAttribute>() with
    | null -> "Release"
    | a -> a.Configuration

/// The built output folder of a project under `src/`.
let projectOutput (project: string) : string =
    Path.Combine(repoRoot, "src", project, "bin", configuration, "net10.0")

/// A new empty folder under the system temp folder, unique to this call.
let tempDir (prefix: string) : string =
    let dir = Path.Combine(Path.GetTempPath(), $"ctslite-{prefix}-{Guid.NewGuid():N}")
    Directory.CreateDirectory dir |> ignore
    dir

/// Polls `check` (every 20 ms) until it holds; after `limit` it fails naming `what`. Every wait of
/// the suite is bounded by one of these.
let waitUntil (what: string) (limit: TimeSpan) (check: unit -> Threading.Tasks.Task<bool>) : Threading.Tasks.Task = task {
    let deadline = DateTime.UtcNow + limit
    let! first = check ()
    let mutable ok = first

    while not ok do
        if DateTime.UtcNow > deadline then
            failwith $"{what}: not after {limit.TotalSeconds} s"

        do! Threading.Tasks.Task.Delay 20
        let! next = check ()
        ok <- next
}

/// A named pipe (FIFO) `name` in `dir` that no writer ever opens: opening it for reading would
/// block for ever, which is what the tests of refusing it rely on.
let fifo (dir: string) (name: string) : string =
    let path = Path.Combine(dir, name)

    if
        Mono.Unix.Native.Syscall.mkfifo (path, Mono.Unix.Native.FilePermissions.ACCESSPERMS)
        <> 0
    then
        failwith $"mkfifo {path} failed"

    path
