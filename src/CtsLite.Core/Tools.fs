namespace CtsLite.Tools

open System
open System.Globalization
open System.Threading
open CtsLite.Capnp

/// The type of a tool parameter, spelled in the Tool Capability JSON as `str|int|float|bool|list|file`.
[<RequireQualifiedAccess>]
type ParameterType =
    | Str
    | Int
    | Float
    | Bool
    | List
    | File

/// A parameter value after validation and coercion.
[<RequireQualifiedAccess>]
type ParameterValue =
    | Str of string
    | Int of int64
    | Float of float
    | Bool of bool
    | List of string list
    /// An upload id or a path, resolved by the edge that runs the tool.
    | File of string

/// One parameter of a tool: the Tool Capability parameter object.
type ParameterSpec = {
    Name: string
    Type: ParameterType
    Default: ParameterValue option
    Description: string
    /// Allowed values; empty when any value of the type is accepted.
    Choices: string list
    Required: bool
    Min: float option
    Max: float option
}

/// What kind of work a tool does.
[<RequireQualifiedAccess>]
type ToolCategory =
    | Analyzer
    | Converter
    | Exporter
    | Monitor

/// A tool as the capabilities endpoint, the CLI and the C# library describe it.
type ToolDescriptor = {
    Id: string
    Name: string
    Description: string
    Category: ToolCategory
    Parameters: ParameterSpec list
    InputTypes: string list
    OutputTypes: string list
}

/// The spellings used on the wire.
[<RequireQualifiedAccess>]
module ParameterType =

    /// `str`, `int`, `float`, `bool`, `list` or `file`.
    let name (t: ParameterType) : string =
        match t with
        | ParameterType.Str -> "str"
        | ParameterType.Int -> "int"
        | ParameterType.Float -> "float"
        | ParameterType.Bool -> "bool"
        | ParameterType.List -> "list"
        | ParameterType.File -> "file"

/// The spellings used on the wire.
[<RequireQualifiedAccess>]
module ToolCategory =

    /// `analyzer`, `converter`, `exporter` or `monitor`.
    let name (c: ToolCategory) : string =
        match c with
        | ToolCategory.Analyzer -> "analyzer"
        | ToolCategory.Converter -> "converter"
        | ToolCategory.Exporter -> "exporter"
        | ToolCategory.Monitor -> "monitor"

/// A parameter value as given, before validation: text from a command line, or JSON values.
[<RequireQualifiedAccess>]
type ParameterInput =
    | Text of string
    | Number of float
    | Flag of bool
    | Items of ParameterInput list
    | Null

/// One bad parameter: its name and what is wrong with it.
type ParameterError = { Parameter: string; Detail: string }

/// Validated parameters of one run: every declared parameter with a value (given or default).
type ToolParameters(values: Map<string, ParameterValue>) =

    /// Every value by name.
    member _.Values = values

    /// The value of `name`, if it has one.
    member _.TryFind(name: string) = values.TryFind name

    /// A float parameter (ints are accepted).
    member _.Float(name: string) : float option =
        match values.TryFind name with
        | Some(ParameterValue.Float f) -> Some f
        | Some(ParameterValue.Int i) -> Some(float i)
        | _ -> None

    /// An int parameter.
    member _.Int(name: string) : int64 option =
        match values.TryFind name with
        | Some(ParameterValue.Int i) -> Some i
        | _ -> None

    /// A string (or file) parameter.
    member _.Str(name: string) : string option =
        match values.TryFind name with
        | Some(ParameterValue.Str s)
        | Some(ParameterValue.File s) -> Some s
        | _ -> None

    /// A bool parameter.
    member _.Bool(name: string) : bool option =
        match values.TryFind name with
        | Some(ParameterValue.Bool b) -> Some b
        | _ -> None

    /// The value of a parameter that always has one (a default in the descriptor): defaults are
    /// written once, in the descriptor; a missing one is a bug in the tool, not an input error.
    member private this.Always(name: string, read: string -> 'a option) : 'a =
        match read name with
        | Some v -> v
        | None -> invalidOp $"parameter '{name}' has no value: its descriptor needs a default"

    /// A float parameter with a default.
    member this.FloatOf(name: string) : float = this.Always(name, this.Float)

    /// A string (or file) parameter with a default.
    member this.StrOf(name: string) : string = this.Always(name, this.Str)

    /// A bool parameter with a default.
    member this.BoolOf(name: string) : bool = this.Always(name, this.Bool)

    /// A list parameter (empty when absent).
    member _.List(name: string) : string list =
        match values.TryFind name with
        | Some(ParameterValue.List l) -> l
        | _ -> []

/// Severity of a tool log line.
[<RequireQualifiedAccess>]
type ToolLogLevel =
    | Debug
    | Info
    | Warning
    | Error

/// What a tool reads, as paths on this machine.
[<RequireQualifiedAccess>]
type ToolInput =
    /// A log file, a segment folder or a route address (or a CSV for can-bitwatch).
    | Path of path: string
    /// Log files read in order as one time line (a route's segments uploaded one by one).
    | Files of paths: string list

/// Naming inputs.
[<RequireQualifiedAccess>]
module ToolInput =

    /// The path, or the files joined by ` + `, each shown by `show`.
    let describeWith (show: string -> string) (input: ToolInput) : string =
        match input with
        | ToolInput.Path p -> show p
        | ToolInput.Files files -> String.Join(" + ", files |> List.map show)

    /// The path, or the files joined by ` + `.
    let describe (input: ToolInput) : string = describeWith id input

/// Everything a tool run gets from the edge that runs it (CLI, service, C# library).
type ToolContext = {
    /// What to read (already checked by the edge).
    Input: ToolInput
    Parameters: ToolParameters
    /// An existing directory the tool writes its artifacts into.
    OutputDir: string
    /// Progress in percent (0–100), called now and then.
    Progress: float -> unit
    /// One log line for the run's log.
    Log: ToolLogLevel -> string -> unit
    Cancellation: CancellationToken
    /// Turns a `file` parameter's value (a path, or an upload id in the service) into a readable path.
    ResolveFile: string -> Result<string, string>
    /// How a path of this machine is shown in what the tool writes (artifacts): the service shows
    /// an upload as `upload <id>` and a path under an input root relative to it, so no server path
    /// reaches a client; local runs show paths as they are.
    ShowPath: string -> string
}

/// Why a run did not complete: one closed set of reasons for every edge (CLI, service, C#), each
/// carrying what a caller needs to answer it (which parameter, which file and byte).
[<RequireQualifiedAccess>]
type ToolError =
    /// No tool with this id in the catalog; `known` lists the ids there are.
    | UnknownTool of toolId: string * known: string list
    /// Parameters that do not fit the tool: unknown, wrong type, out of range, or refused by the
    /// tool's own checks (also when discovered while running, e.g. a signal the DBC lacks).
    | InvalidParameters of ParameterError list
    /// A `file` parameter names nothing readable, or a file that is not what it should be (a bad DBC).
    | InvalidFile of parameter: string * reason: string
    /// The input names nothing that can be opened (no such file, an empty folder, a bad route).
    | InputUnavailable of reason: string
    /// The input opens but is not what the tool reads (a CSV without the columns, another kind of file).
    | InputInvalid of reason: string
    /// The log is damaged where the run cannot go on (strict mode, or damage before the first event).
    | InputDamaged of DecodeError
    /// Cancelled through the caller's token.
    | Canceled
    /// The run's time limit passed.
    | TimedOut of after: TimeSpan

/// Describing tool errors.
[<RequireQualifiedAccess>]
module ToolError =

    /// One line for people, e.g. `dbc: file.dbc:3:1: …` or `speed_min: must be at least 0`.
    let describe (error: ToolError) : string =
        match error with
        | ToolError.UnknownTool(id, known) ->
            let tools = String.Join(", ", known)
            $"no tool '{id}' (tools: {tools})"
        | ToolError.InvalidParameters errors ->
            String.Join("; ", errors |> List.map (fun e -> $"{e.Parameter}: {e.Detail}"))
        | ToolError.InvalidFile(parameter, reason) -> $"{parameter}: {reason}"
        | ToolError.InputUnavailable reason
        | ToolError.InputInvalid reason -> reason
        | ToolError.InputDamaged e -> DecodeError.describe e
        | ToolError.Canceled -> "canceled"
        | ToolError.TimedOut after -> $"timed out after {after.TotalSeconds} s"

    /// A parameter problem found while running (the tool's own checks cannot see the log).
    let parameter (name: string) (detail: string) : ToolError =
        ToolError.InvalidParameters [ { Parameter = name; Detail = detail } ]

/// What a completed run produced.
type ToolOutput = {
    /// Artifact file names, relative to the output directory, in a useful order.
    Artifacts: string list
    /// One line for people: what was found.
    Summary: string
    /// The figures behind `Summary`, by snake_case name in the order the line gives them (e.g.
    /// `set_presses`, `can_frames`): what a program reads instead of parsing the line.
    Facts: (string * float) list
    /// Tolerated problems (damaged log tail, skipped frames), one line each.
    Warnings: string list
}

/// A runnable tool: its descriptor, a check of parameter combinations beyond the per-parameter
/// rules, and the run function. Runs are independent: no global state, safe in parallel.
type Tool = {
    Descriptor: ToolDescriptor
    /// Cross-parameter and format checks (e.g. a bit selector's syntax), after coercion.
    Check: ToolParameters -> ParameterError list
    Run: ToolContext -> Result<ToolOutput, ToolError>
}

/// Building parameter specs.
[<RequireQualifiedAccess>]
module ParameterSpec =

    /// An optional parameter without choices or limits (set those with `with`).
    let create (name: string) (typ: ParameterType) (def: ParameterValue option) (description: string) : ParameterSpec = {
        Name = name
        Type = typ
        Default = def
        Description = description
        Choices = []
        Required = false
        Min = None
        Max = None
    }

/// Validation and coercion of parameters against a descriptor.
[<RequireQualifiedAccess>]
module Parameters =

    let private invariant = CultureInfo.InvariantCulture

    /// The most parameters one run may give.
    [<Literal>]
    let MaxParameters = 64

    /// The most UTF-8 bytes of one string value (a list's items each).
    [<Literal>]
    let MaxStringBytes = 4096

    /// The most items of one list value; longer lists come as an uploaded file.
    [<Literal>]
    let MaxListItems = 10_000

    /// The most problems one validation reports; the rest are counted in a last one.
    [<Literal>]
    let MaxErrors = 20

    /// A value as it is quoted back in a problem: long text is cut, so an answer stays small.
    let private quote (t: string) =
        if t.Length > 40 then
            $"'{t.Substring(0, 40)}…'"
        else
            $"'{t}'"

    let private describe (input: ParameterInput) =
        match input with
        | ParameterInput.Text t -> quote t
        | ParameterInput.Number n -> n.ToString("R", invariant)
        | ParameterInput.Flag b -> if b then "true" else "false"
        | ParameterInput.Items _ -> "a list"
        | ParameterInput.Null -> "null"

    let private number (input: ParameterInput) : float option =
        match input with
        | ParameterInput.Number n -> Some n
        | ParameterInput.Text t ->
            match Double.TryParse(t.Trim(), NumberStyles.Float, invariant) with
            | true, v -> Some v
            | _ -> None
        | _ -> None

    let private coerce (spec: ParameterSpec) (input: ParameterInput) : Result<ParameterValue, string> =
        let expected what =
            Error $"expected {what}, got {describe input}"

        let tooLong (t: string) =
            Text.Encoding.UTF8.GetByteCount t > MaxStringBytes

        match spec.Type, input with
        | _, ParameterInput.Text t when tooLong t ->
            Error
                $"longer than {MaxStringBytes} bytes ({Text.Encoding.UTF8.GetByteCount t}); give long values as an uploaded file"
        | _, ParameterInput.Items items when items.Length > MaxListItems ->
            Error $"more than {MaxListItems} items ({items.Length}); give long lists as an uploaded file"
        | _, ParameterInput.Items items when
            items
            |> List.exists (function
                | ParameterInput.Text t -> tooLong t
                | _ -> false)
            ->
            Error $"an item is longer than {MaxStringBytes} bytes"
        | ParameterType.Str, ParameterInput.Text t -> Ok(ParameterValue.Str t)
        | ParameterType.File, ParameterInput.Text t when t.Trim() <> "" -> Ok(ParameterValue.File(t.Trim()))
        | ParameterType.Bool, ParameterInput.Flag b -> Ok(ParameterValue.Bool b)
        | ParameterType.Bool, ParameterInput.Text t ->
            match t.Trim().ToLowerInvariant() with
            | "true"
            | "1"
            | "yes"
            | "on" -> Ok(ParameterValue.Bool true)
            | "false"
            | "0"
            | "no"
            | "off" -> Ok(ParameterValue.Bool false)
            | _ -> expected "true or false"
        | ParameterType.Int, _ ->
            match input with
            | ParameterInput.Text t ->
                let t = t.Trim()

                if t.StartsWith("0x", StringComparison.OrdinalIgnoreCase) then
                    match Int64.TryParse(t.Substring 2, NumberStyles.HexNumber, invariant) with
                    | true, v -> Ok(ParameterValue.Int v)
                    | _ -> expected "an integer"
                else
                    match Int64.TryParse(t, NumberStyles.Integer, invariant) with
                    | true, v -> Ok(ParameterValue.Int v)
                    | _ -> expected "an integer"
            | ParameterInput.Number n when Math.Floor n = n && abs n < 9.0e15 -> Ok(ParameterValue.Int(int64 n))
            | _ -> expected "an integer"
        | ParameterType.Float, _ ->
            match number input with
            | Some v when Double.IsFinite v -> Ok(ParameterValue.Float v)
            | _ -> expected "a number"
        | ParameterType.List, ParameterInput.Items items ->
            let texts =
                items
                |> List.map (function
                    | ParameterInput.Text t -> Some t
                    | ParameterInput.Number n -> Some(n.ToString("R", invariant))
                    | _ -> None)

            if texts |> List.forall Option.isSome then
                Ok(ParameterValue.List(texts |> List.map Option.get))
            else
                expected "a list of strings"
        | ParameterType.List, ParameterInput.Text t ->
            match t.Split([| ','; ' ' |], StringSplitOptions.RemoveEmptyEntries ||| StringSplitOptions.TrimEntries) with
            | items when items.Length > MaxListItems ->
                Error $"more than {MaxListItems} items ({items.Length}); give long lists as an uploaded file"
            | items -> Ok(ParameterValue.List(List.ofArray items))
        | ParameterType.Str, _ -> expected "a string"
        | ParameterType.File, _ -> expected "an upload id or a path"
        | ParameterType.Bool, _ -> expected "true or false"
        | ParameterType.List, _ -> expected "a list"

    let private checkRange (spec: ParameterSpec) (value: ParameterValue) : string option =
        let numeric =
            match value with
            | ParameterValue.Int i -> Some(float i)
            | ParameterValue.Float f -> Some f
            | _ -> None

        match numeric, spec.Min, spec.Max with
        | Some v, Some lo, _ when v < lo -> Some $"must be at least {lo.ToString invariant}"
        | Some v, _, Some hi when v > hi -> Some $"must be at most {hi.ToString invariant}"
        | _ ->
            match spec.Choices, value with
            | [], _ -> None
            | choices, ParameterValue.Str s when not (List.contains s choices) ->
                let allowed = String.Join(", ", choices)
                Some $"must be one of {allowed}, got {quote s}"
            | _ -> None

    /// At most `MaxErrors` problems, the rest counted in a last one (on the first parameter named).
    let private bounded (errors: ParameterError list) : ParameterError list =
        if errors.Length <= MaxErrors then
            errors
        else
            (List.truncate MaxErrors errors)
            @ [
                {
                    Parameter = errors[MaxErrors].Parameter
                    Detail = $"and {errors.Length - MaxErrors} more problem(s) not listed"
                }
            ]

    /// Validates `given` against the descriptor: unknown names, type coercion, choices, ranges and
    /// required parameters; defaults fill the rest. Every problem is reported, one per parameter,
    /// up to `MaxErrors`; more than `MaxParameters` parameters is one problem.
    let validate
        (descriptor: ToolDescriptor)
        (given: (string * ParameterInput) list)
        : Result<ToolParameters, ParameterError list> =
        let errors = ResizeArray<ParameterError>()
        let specs = descriptor.Parameters |> List.map (fun p -> p.Name, p) |> Map.ofList
        let mutable values = Map.empty
        let mutable knownListed = false

        let tooMany =
            if given.Length > MaxParameters then
                Some {
                    Parameter = fst given[MaxParameters]
                    Detail =
                        $"more than {MaxParameters} parameters ({given.Length}); {descriptor.Id} has {descriptor.Parameters.Length}"
                }
            else
                None

        for name, input in (if tooMany.IsSome then [] else given) do
            match specs.TryFind name with
            | None ->
                // The known names once, not with every unknown one.
                let detail =
                    if knownListed then
                        $"unknown parameter of {descriptor.Id}"
                    else
                        knownListed <- true
                        let known = String.Join(", ", descriptor.Parameters |> List.map _.Name)
                        $"unknown parameter of {descriptor.Id} (known: {known})"

                errors.Add { Parameter = name; Detail = detail }
            | Some _ when values.ContainsKey name ->
                errors.Add {
                    Parameter = name
                    Detail = "given more than once"
                }
            | Some _ when input = ParameterInput.Null -> ()
            | Some spec ->
                match coerce spec input with
                | Error detail -> errors.Add { Parameter = name; Detail = detail }
                | Ok value ->
                    match checkRange spec value with
                    | Some detail -> errors.Add { Parameter = name; Detail = detail }
                    | None -> values <- values.Add(name, value)

        for spec in descriptor.Parameters do
            if
                not (values.ContainsKey spec.Name)
                && not (errors.Exists(fun e -> e.Parameter = spec.Name))
            then
                match spec.Default with
                | Some d -> values <- values.Add(spec.Name, d)
                | None when spec.Required ->
                    errors.Add {
                        Parameter = spec.Name
                        Detail = "is required"
                    }
                | None -> ()

        match tooMany with
        | Some e -> Error [ e ]
        | None when errors.Count > 0 -> Error(bounded (List.ofSeq errors))
        | None -> Ok(ToolParameters values)

    /// Validates and then runs the tool's own checks.
    let validateFor (tool: Tool) (given: (string * ParameterInput) list) : Result<ToolParameters, ParameterError list> =
        validate tool.Descriptor given
        |> Result.bind (fun p ->
            match tool.Check p with
            | [] -> Ok p
            | errors -> Error errors)

    /// Validated parameters as a compact JSON object: the one encoding of parameter values, for
    /// a run's `params` and the parameters the artifacts record.
    let toJson (p: ToolParameters) : string =
        use stream = new IO.MemoryStream()

        do
            use w = new Text.Json.Utf8JsonWriter(stream)
            w.WriteStartObject()

            for KeyValue(name, value) in p.Values do
                w.WritePropertyName name

                match value with
                | ParameterValue.Str s
                | ParameterValue.File s -> w.WriteStringValue s
                | ParameterValue.Int i -> w.WriteNumberValue i
                | ParameterValue.Float f -> w.WriteNumberValue f
                | ParameterValue.Bool b -> w.WriteBooleanValue b
                | ParameterValue.List items ->
                    w.WriteStartArray()

                    for item in items do
                        w.WriteStringValue item

                    w.WriteEndArray()

            w.WriteEndObject()

        Text.Encoding.UTF8.GetString(stream.ToArray())

    /// The value as JSON-like text for snapshots and logs.
    let render (value: ParameterValue) : string =
        match value with
        | ParameterValue.Str s
        | ParameterValue.File s -> s
        | ParameterValue.Int i -> i.ToString invariant
        | ParameterValue.Float f -> f.ToString("R", invariant)
        | ParameterValue.Bool b -> if b then "true" else "false"
        | ParameterValue.List l -> String.Join(",", l)
