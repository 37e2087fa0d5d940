namespace CtsLite.Tools

open System
open System.IO
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
/// cancellation and time limit, and list what it wrote with size and SHA-256.
[<RequireQualifiedAccess>]
module ToolRunner =

    /// Resolves file parameters as paths on this machine (the CLI, the C# library, tests).
    let localFiles (value: string) : Result<string, string> =
        if File.Exists value then
            Ok(Path.GetFullPath value)
        elif Directory.Exists value then
            Error $"{value}: a folder, not a file"
        else
            Error $"{value}: no such file"

    /// A request with no progress, log, cancellation or time limit, resolving files locally.
    let request
        (toolId: string)
        (input: ToolInput)
        (parameters: (string * ParameterInput) list)
        (outputDir: string)
        : ToolRunRequest = {
        ToolId = toolId
        Input = input
        Parameters = parameters
        OutputDir = outputDir
        Progress = ignore
        Log = fun _ _ -> ()
        Cancellation = CancellationToken.None
        Timeout = None
        ResolveFile = localFiles
        ShowPath = id
    }

    /// The catalog's tool with this id.
    let find (toolId: string) : Result<Tool, ToolError> =
        match Catalog.tryFind toolId with
        | Some tool -> Ok tool
        | None -> Error(ToolError.UnknownTool(toolId, Catalog.descriptors |> List.map _.Id))

    /// Every `file` parameter with a value that is not a built-in file must resolve; one error
    /// per parameter that does not.
    let checkFiles
        (resolve: string -> Result<string, string>)
        (descriptor: ToolDescriptor)
        (parameters: ToolParameters)
        : ParameterError list = [
        for spec in descriptor.Parameters do
            if spec.Type = ParameterType.File then
                match parameters.Str spec.Name with
                | Some value when not (ToolSupport.isBuiltInFile value) ->
                    match resolve value with
                    | Ok _ -> ()
                    | Error reason -> {
                        Parameter = spec.Name
                        Detail = reason
                      }
                | _ -> ()
    ]

    /// The tool and its validated parameters, before anything is run or written.
    let prepare (toolId: string) (given: (string * ParameterInput) list) : Result<PreparedRun, ToolError> =
        find toolId
        |> Result.bind (fun tool ->
            Parameters.validateFor tool given
            |> Result.map (fun p -> { Tool = tool; Parameters = p })
            |> Result.mapError ToolError.InvalidParameters)

    /// The files of `names` in `dir` that exist, with size, SHA-256 and content type.
    let listArtifacts (dir: string) (names: string list) : ArtifactFile list = [
        for name in names do
            let path = Path.Combine(dir, name)
            let info = FileInfo path

            if info.Exists then
                {
                    Name = name
                    Path = path
                    Size = info.Length
                    Sha256 = Artifacts.sha256Hex path
                    ContentType = Artifacts.contentType name
                }
    ]

    /// Runs a prepared tool (see `prepare`) as `request` says.
    let execute (request: ToolRunRequest) (prepared: PreparedRun) : Result<ToolRunResult, ToolError> =
        let tool, parameters = prepared.Tool, prepared.Parameters

        match checkFiles request.ResolveFile tool.Descriptor parameters with
        | _ :: _ as errors ->
            // The parameter names the file; the reason is the resolver's.
            match errors with
            | [ e ] -> Error(ToolError.InvalidFile(e.Parameter, e.Detail))
            | _ -> Error(ToolError.InvalidParameters errors)
        | [] ->
            let outputDir = Path.GetFullPath request.OutputDir
            let existed = Directory.Exists outputDir
            Directory.CreateDirectory outputDir |> ignore
            use limit = CancellationTokenSource.CreateLinkedTokenSource request.Cancellation
            request.Timeout |> Option.iter (fun t -> limit.CancelAfter t)

            let context: ToolContext = {
                Input = request.Input
                Parameters = parameters
                OutputDir = outputDir
                Progress = request.Progress
                Log = request.Log
                Cancellation = limit.Token
                ResolveFile = request.ResolveFile
                ShowPath = request.ShowPath
            }

            let outcome =
                try
                    tool.Run context
                with :? OperationCanceledException when limit.IsCancellationRequested ->
                    Error ToolError.Canceled

            // A run that failed before writing anything leaves no empty folder behind.
            if
                Result.isError outcome
                && not existed
                && Seq.isEmpty (Directory.EnumerateFileSystemEntries outputDir)
            then
                Directory.Delete outputDir

            match outcome with
            | Ok output ->
                Ok {
                    Tool = tool.Descriptor
                    Parameters = parameters
                    OutputDir = outputDir
                    Output = output
                    Artifacts = listArtifacts outputDir output.Artifacts
                }
            // The caller's own cancellation wins over the time limit when both have fired.
            | Error ToolError.Canceled when not request.Cancellation.IsCancellationRequested ->
                match request.Timeout with
                | Some t -> Error(ToolError.TimedOut t)
                | None -> Error ToolError.Canceled
            | Error e -> Error e

    /// Looks the tool up, validates, and runs it.
    let run (request: ToolRunRequest) : Result<ToolRunResult, ToolError> =
        prepare request.ToolId request.Parameters |> Result.bind (execute request)

    /// How long `executeAsync` waits for a cancelled or timed-out tool to stop before it leaves it.
    let StopGrace: TimeSpan = TimeSpan.FromSeconds 5.0

    /// Runs a prepared tool as `execute` does, on a thread of its own. A tool stops within a few
    /// thousand events of a cancel or its time limit; one blocked in a read that no cancellation
    /// reaches (a hung network mount) is left after `grace`: the answer is `Canceled` or `TimedOut`
    /// then, a warning goes to the request's log, and the thread ends whenever its read returns,
    /// its results dropped.
    let executeAsync
        (grace: TimeSpan)
        (request: ToolRunRequest)
        (prepared: PreparedRun)
        : Task<Result<ToolRunResult, ToolError>> =
        // A thread of its own, so a blocked tool holds no thread-pool thread.
        let work =
            Task.Factory.StartNew(
                (fun () -> execute request prepared),
                CancellationToken.None,
                TaskCreationOptions.LongRunning,
                TaskScheduler.Default
            )

        task {
            use afterTimeout = new CancellationTokenSource()
            use afterCancel = new CancellationTokenSource()
            request.Timeout |> Option.iter (fun t -> afterTimeout.CancelAfter(t + grace))
            use _ = request.Cancellation.Register(fun () -> afterCancel.CancelAfter grace)

            use either =
                CancellationTokenSource.CreateLinkedTokenSource(afterTimeout.Token, afterCancel.Token)

            let leave = Task.Delay(Timeout.Infinite, either.Token)
            let! first = Task.WhenAny(work, leave)

            if Object.ReferenceEquals(first, work) then
                return! work
            else
                // Whatever the left thread ends with is observed, never raised.
                work.ContinueWith(fun (t: Task<_>) -> t.Exception |> ignore) |> ignore

                request.Log
                    ToolLogLevel.Warning
                    $"the tool did not stop within {grace.TotalSeconds:g} s (a read of its input does not return): left running, its results dropped"

                match request.Timeout with
                | Some t when not request.Cancellation.IsCancellationRequested -> return Error(ToolError.TimedOut t)
                | _ -> return Error ToolError.Canceled
        }

    /// Looks the tool up, validates, and runs it as `executeAsync` does.
    let runAsync (grace: TimeSpan) (request: ToolRunRequest) : Task<Result<ToolRunResult, ToolError>> =
        match prepare request.ToolId request.Parameters with
        | Error e -> Task.FromResult(Error e)
        | Ok prepared -> executeAsync grace request prepared
