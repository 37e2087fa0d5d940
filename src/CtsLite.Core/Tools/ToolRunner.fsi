namespace CtsLite.Tools

open System
open System.Threading
open System.Threading.Tasks

/// One file a completed run wrote, checked on disk.
type ArtifactFile = {
    /// The name relative to the output folder.
    Name: string
    /// The full path.
    Path: string
    Size: int64
    /// Lower-case hex SHA-256 of the content.
    Sha256: string
    /// The HTTP content type by extension (`text/csv; charset=utf-8`, `application/json`, …).
    ContentType: string
}

/// A tool with parameters that passed validation: ready to run, nothing written yet.
type PreparedRun = {
    Tool: Tool
    Parameters: ToolParameters
}

/// A completed run: the tool's output and its artifacts as files.
type ToolRunResult = {
    Tool: ToolDescriptor
    /// The parameters after validation (defaults filled in).
    Parameters: ToolParameters
    OutputDir: string
    Output: ToolOutput
    /// The artifacts that exist, in the tool's order.
    Artifacts: ArtifactFile list
}

/// What a caller gives to run one tool: the same shape for the CLI, the service's engine, the C#
/// library and the tests.
type ToolRunRequest = {
    ToolId: string
    /// What to read, readable here.
    Input: ToolInput
    /// The parameters as given (text from a command line, or JSON values).
    Parameters: (string * ParameterInput) list
    /// The folder the artifacts go into; created when missing.
    OutputDir: string
    /// Progress in percent (0–100).
    Progress: float -> unit
    Log: ToolLogLevel -> string -> unit
    /// The caller's cancellation (Ctrl+C, a cancel request, shutdown).
    Cancellation: CancellationToken
    /// The run fails with `TimedOut` once this much time has passed.
    Timeout: TimeSpan option
    /// Turns a `file` parameter's value (a path; an upload id in the service) into a readable path.
    ResolveFile: string -> Result<string, string>
    /// How the tool shows a path of this machine in its artifacts (see `ToolContext.ShowPath`).
    ShowPath: string -> string
}

/// The one way to run a tool: look it up, validate its parameters, check its `file` parameters
/// through the caller's resolver, create the output folder, run it under the caller's
/// The one way to run a tool: look it up, validate its parameters, check its `file` parameters
/// through the caller's resolver, create the output folder, run it under the caller's
/// cancellation and time limit, and list what it wrote with size and SHA-256.
[<RequireQualifiedAccess>]
module ToolRunner =

    /// Resolves file parameters as paths on this machine (the CLI, the C# library, tests).
    val localFiles: value: string -> Result<string, string>

    /// A request with no progress, log, cancellation or time limit, resolving files locally.
    val request:
        toolId: string ->
        input: ToolInput ->
        parameters: (string * ParameterInput) list ->
        outputDir: string ->
            ToolRunRequest

    /// The catalog's tool with this id.
    val find: toolId: string -> Result<Tool, ToolError>

    /// Every `file` parameter (of a tool or a monitor) with a value that is not a built-in file
    /// must resolve; one error per parameter that does not.
    val checkFiles:
        resolve: (string -> Result<string, string>) ->
        descriptor: ToolDescriptor ->
        parameters: ToolParameters ->
            ParameterError list

    /// The tool and its validated parameters, before anything is run or written.
    val prepare: toolId: string -> given: (string * ParameterInput) list -> Result<PreparedRun, ToolError>

    /// The files of `names` in `dir` that exist, with size, SHA-256 and content type.
    val internal listArtifacts: dir: string -> names: string list -> ArtifactFile list

    /// Runs a prepared tool (see `prepare`) as `request` says.
    val execute: request: ToolRunRequest -> prepared: PreparedRun -> Result<ToolRunResult, ToolError>

    /// Looks the tool up, validates, and runs it.
    val run: request: ToolRunRequest -> Result<ToolRunResult, ToolError>

    /// How long `executeAsync` waits for a cancelled or timed-out tool to stop before it leaves
    /// it (5 s).
    val StopGrace: TimeSpan

    /// Runs a prepared tool as `execute` does, on a thread of its own. A tool stops within a few
    /// thousand events of a cancel or its time limit; one blocked in a read that no cancellation
    /// reaches (a hung network mount) is left after `grace`: the answer is `Canceled` or `TimedOut`
    /// then, a warning goes to the request's log, and the thread ends whenever its read returns,
    /// its results dropped.
    val executeAsync:
        grace: TimeSpan -> request: ToolRunRequest -> prepared: PreparedRun -> Task<Result<ToolRunResult, ToolError>>

    /// Looks the tool up, validates, and runs it as `executeAsync` does.
    val runAsync: grace: TimeSpan -> request: ToolRunRequest -> Task<Result<ToolRunResult, ToolError>>
