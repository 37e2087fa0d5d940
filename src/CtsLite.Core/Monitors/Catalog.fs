namespace CtsLite.Monitors

open CtsLite.Tools

/// The monitors this build can run, in display order.
[<RequireQualifiedAccess>]
module Catalog =

    /// Every monitor.
    let monitors: Monitor list = [
        CanCheck.busCheck
        CanCheck.hybridRxCheck
        PandaState.monitor
        HybridRxTrace.monitor
        SignalWatch.monitor
    ]

    /// Their descriptors.
    let descriptors: ToolDescriptor list = monitors |> List.map _.Descriptor

    /// The monitor with this id.
    let tryFind (id: string) : Monitor option =
        monitors |> List.tryFind (fun m -> m.Descriptor.Id = id)

    /// Validates `given` against the monitor's parameters, then its own checks.
    let validate
        (monitor: Monitor)
        (given: (string * ParameterInput) list)
        : Result<ToolParameters, ParameterError list> =
        match Parameters.validate monitor.Descriptor given with
        | Error e -> Error e
        | Ok p ->
            match monitor.Check p with
            | [] -> Ok p
            | errors -> Error errors
