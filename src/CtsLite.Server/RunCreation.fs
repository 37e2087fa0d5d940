namespace CtsLite.Server

open System
open System.Security.Cryptography
open System.Text
open System.Text.Json
open System.Threading.Tasks
open CtsLite
open CtsLite.Tools

/// Why a run was not created.
[<RequireQualifiedAccess>]
type CreateRunError =
    /// The request does not fit (422): each error names a JSON pointer into the request.
    | Invalid of Api.FieldError list
    /// No tool with this id (404).
    | UnknownTool of detail: string
    /// The input names nothing usable here (400).
    | BadInput of detail: string
    /// `max_queued_runs` runs are waiting (429).
    | QueueFull of limit: int
    /// The Idempotency-Key came before with another body (409).
    | IdempotencyConflict

/// What a successful request gives: a new run, or the run an idempotent replay created.
[<RequireQualifiedAccess>]
type CreateRunOutcome =
    | Created of RunRecord
    | Existing of RunRecord

/// The run-creation use case, apart from HTTP: validate the request, check its input and file
/// parameters, queue the run (idempotently), mark its uploads as used and wake the engine.
[<RequireQualifiedAccess>]
module RunCreation =

    let private field (pointer: string) (detail: string) : Api.FieldError = { Pointer = pointer; Detail = detail }

    let private given (request: Api.RunRequest) : Result<(string * ParameterInput) list, Api.FieldError list> =
        match request.Params with
        | Some p when p.ValueKind = JsonValueKind.Object -> Ok(RunParameters.ofObject p)
        | Some p when p.ValueKind = JsonValueKind.Null -> Ok []
        | None -> Ok []
        | Some _ -> Error [ field "/params" "must be an object" ]

    /// The one input of the run. `inputs` (several drives compared) is part of the contract, but
    /// no tool of this build takes more than one input yet.
    let private inputOf (toolId: string) (request: Api.RunRequest) : Result<InputRef, Api.FieldError list> =
        match request.Input, request.Inputs with
        | Some _, Some _ -> Error [ field "/inputs" "give either input or inputs, not both" ]
        | None, Some _ -> Error [ field "/inputs" $"{toolId} reads one input: give it as input" ]
        | None, None -> Error [ field "/input" "is required ({type: path|upload|uploads, value})" ]
        | Some i, None -> InputRef.ofDto "/input" i

    /// The most UTF-8 bytes of a run's name.
    [<Literal>]
    let MaxNameBytes = 256

    /// The most uploads one `uploads` input may list (a route of that many segments).
    [<Literal>]
    let MaxUploadsPerInput = 1000

    /// Parameter problems as field errors under `/params`.
    let internal parameterErrors (errors: ParameterError list) : Api.FieldError list =
        // JSON pointer escaping (RFC 6901): a name may hold "~" or "/".
        errors
        |> List.map (fun e -> field $"""/params/{e.Parameter.Replace("~", "~0").Replace("/", "~1")}""" e.Detail)

    /// The tool and its parameters, or every problem of the request with its pointer.
    let private validate (request: Api.RunRequest) : Result<PreparedRun * InputRef, CreateRunError> =
        match Option.ofObj request.ToolId with
        | None -> Error(CreateRunError.Invalid [ field "/tool_id" "is required" ])
        | Some toolId ->
            let prepared =
                given request
                |> Result.bind (fun given ->
                    match ToolRunner.prepare toolId given with
                    | Ok p -> Ok p
                    | Error(ToolError.InvalidParameters errors) -> Error(parameterErrors errors)
                    | Error e -> Error [ field "/tool_id" (ToolError.describe e) ])

            let input =
                inputOf toolId request
                |> Result.bind (function
                    | InputRef.Uploads ids when ids.Length > MaxUploadsPerInput ->
                        Error [ field "/input/value" $"at most {MaxUploadsPerInput} uploads ({ids.Length})" ]
                    | input -> Ok input)

            let name =
                match request.Name with
                | Some n when Encoding.UTF8.GetByteCount n > MaxNameBytes -> [
                    field "/name" $"longer than {MaxNameBytes} bytes ({Encoding.UTF8.GetByteCount n})"
                  ]
                | _ -> []

            match ToolRunner.find toolId, prepared, input with
            | Error e, _, _ -> Error(CreateRunError.UnknownTool(ToolError.describe e))
            | _, Error e1, Error e2 -> Error(CreateRunError.Invalid(e1 @ e2 @ name))
            | _, Error e, _
            | _, _, Error e -> Error(CreateRunError.Invalid(e @ name))
            | _, Ok _, Ok _ when not name.IsEmpty -> Error(CreateRunError.Invalid name)
            | _, Ok prepared, Ok input -> Ok(prepared, input)

    /// The hash an Idempotency-Key is bound to: the request as it will be stored.
    let private fingerprint (run: RunRecord) : string =
        // The same JSON as before uploads lists existed, so keys stored then still match.
        let value: obj =
            match run.Input with
            | InputRef.Path v
            | InputRef.Upload v -> box v
            | InputRef.Uploads ids -> box (Array.ofList ids)

        let canonical =
            JsonSerializer.Serialize(
                {|
                    tool_id = run.ToolId
                    parameters = run.ParamsJson
                    input = {|
                        Type = InputRef.typeName run.Input
                        Value = value
                    |}
                    name = run.Name
                |}
            )

        Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes canonical))

    /// Creates (or, for a replayed Idempotency-Key, finds) the run `request` asks for.
    let create
        (svc: ServiceContext)
        (engine: IRunEngine)
        (request: Api.RunRequest)
        (idempotencyKey: string option)
        : Task<Result<CreateRunOutcome, CreateRunError>> =
        let roots = svc.Config.InputRoots

        task {
            match validate request with
            | Error e -> return Error e
            | Ok(prepared, input) ->
                match! RunInputs.resolve svc.Runs roots input with
                | Error reason -> return Error(CreateRunError.BadInput $"input: {reason}")
                | Ok _ ->
                    let! resolveFile =
                        RunInputs.fileResolver svc.Runs roots (RunInputs.fileValues prepared)

                    match ToolRunner.checkFiles resolveFile prepared.Tool.Descriptor prepared.Parameters with
                    | _ :: _ as errors -> return Error(CreateRunError.Invalid(parameterErrors errors))
                    | [] ->
                        let now = svc.Time.GetUtcNow()
                        let! names = RunInputs.names svc.Runs input

                        let run = {
                            RunRecord.queued
                                prepared.Tool.Descriptor.Id
                                ((Api.parameters prepared.Parameters).GetRawText())
                                input
                                request.Name
                                now with
                                InputNames = names
                        }

                        let idempotency = idempotencyKey |> Option.map (fun key -> key, fingerprint run)

                        match! svc.Runs.CreateRun(run, idempotency, svc.Config.MaxQueuedRuns) with
                        | CreateOutcome.QueueFull -> return Error(CreateRunError.QueueFull svc.Config.MaxQueuedRuns)
                        | CreateOutcome.Conflict -> return Error CreateRunError.IdempotencyConflict
                        | CreateOutcome.Existing existing -> return Ok(CreateRunOutcome.Existing existing)
                        | CreateOutcome.Created created ->
                            // Retention counts an upload's age from its last use.
                            for id in RunInputs.uploadIds input @ RunInputs.fileValues prepared do
                                let! upload = svc.Runs.GetUpload id

                                if upload.IsSome then
                                    do! svc.Runs.TouchUpload(id, now)

                            engine.Notify()
                            return Ok(CreateRunOutcome.Created created)
        }
