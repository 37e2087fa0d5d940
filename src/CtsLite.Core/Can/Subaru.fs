namespace CtsLite.Can

open System

/// The four wheel speeds of Wheel_Speeds (0x13A), in km/h, and their average.
type WheelSpeeds = {
    FrontLeft: float
    FrontRight: float
    RearLeft: float
    RearRight: float
    AverageKph: float
    /// AverageKph × 0.621371.
    AverageMph: float
}

/// Cruise_Buttons (0x146).
type CruiseButtons = { Main: bool; Set: bool; Resume: bool }

/// Cruise_Status (0x241).
type CruiseStatus = {
    SetSpeed: float
    CruiseOn: bool
    CruiseActivated: bool
}

/// ES_Brake (0x220).
type EsBrake = {
    CruiseBrakeActive: bool
    CruiseActivated: bool
}

/// Brake_Pedal (0x139).
type BrakePedal = { BrakePedal: float; BrakeLights: bool }

/// Dashlights (0x390) blinkers.
type Blinkers = { Left: bool; Right: bool }

/// Why a Subaru frame was not decoded.
[<RequireQualifiedAccess>]
type SubaruDecodeError =
    /// The payload is shorter than the message's signals need.
    | ShortPayload of message: string * length: int
    /// A value outside what a car can report (the Python comma-tools' validation).
    | Unreasonable of signal: string * value: float * accepted: string

/// The cruise-control analyzer's Subaru signals, decoded through a DBC (opendbc's
/// `subaru_global_2017_generated.dbc`, or the hybrid one) rather than fixed bit positions.
type SubaruDecoder = private {
    Wheels: DbcMessage * Signal array
    Buttons: DbcMessage * Signal array
    Status: DbcMessage * Signal array
    Brake: DbcMessage * Signal array
    Pedal: DbcMessage * Signal array
    Dash: DbcMessage * Signal array
}

/// Decoding Subaru frames with validation.
[<RequireQualifiedAccess>]
module Subaru =

    /// The addresses the decoder reads.
    [<Literal>]
    let WheelSpeedsAddress = 0x13Au

    /// Cruise_Buttons.
    [<Literal>]
    let CruiseButtonsAddress = 0x146u

    /// Cruise_Status.
    [<Literal>]
    let CruiseStatusAddress = 0x241u

    /// ES_Brake.
    [<Literal>]
    let EsBrakeAddress = 0x220u

    /// Brake_Pedal.
    [<Literal>]
    let BrakePedalAddress = 0x139u

    /// Dashlights.
    [<Literal>]
    let DashlightsAddress = 0x390u

    /// Builds the decoder from a database that has the six messages and their signals.
    let ofDatabase (db: Database) : Result<SubaruDecoder, string> =
        let pick (id: uint32) (names: string list) =
            match db.TryMessage id with
            | None -> Error $"the DBC has no message 0x{id:X3}"
            | Some m ->
                let found =
                    names |> List.map (fun n -> n, m.Signals |> List.tryFind (fun s -> s.Name = n))

                match found |> List.filter (fun (_, s) -> s.IsNone) with
                | [] -> Ok(m, found |> List.map (fun (_, s) -> s.Value) |> Array.ofList)
                | missing ->
                    let names = missing |> List.map fst |> String.concat ", "
                    Error $"{m.Name} (0x{id:X3}) lacks {names}"

        match
            pick WheelSpeedsAddress [ "FL"; "FR"; "RL"; "RR" ],
            pick CruiseButtonsAddress [ "Main"; "Set"; "Resume" ],
            pick CruiseStatusAddress [ "Cruise_Set_Speed"; "Cruise_On"; "Cruise_Activated" ],
            pick EsBrakeAddress [ "Cruise_Brake_Active"; "Cruise_Activated" ],
            pick BrakePedalAddress [ "Brake_Pedal"; "Brake_Lights" ],
            pick DashlightsAddress [ "LEFT_BLINKER"; "RIGHT_BLINKER" ]
        with
        | Ok w, Ok b, Ok s, Ok e, Ok p, Ok d ->
            Ok {
                Wheels = w
                Buttons = b
                Status = s
                Brake = e
                Pedal = p
                Dash = d
            }
        | results ->
            let (a, b, c, d, e, f) = results

            let errors =
                [ a; b; c; d; e; f ]
                |> List.choose (function
                    | Error x -> Some x
                    | Ok _ -> None)

            Error(String.Join("; ", errors))

    let private values
        (message: DbcMessage, signals: Signal array)
        (payload: ReadOnlySpan<byte>)
        : Result<float array, SubaruDecodeError> =
        let length = payload.Length

        if signals |> Array.exists (fun s -> not (Signal.fits s length)) then
            Error(SubaruDecodeError.ShortPayload(message.Name, payload.Length))
        else
            let result = Array.zeroCreate<float> signals.Length

            for i in 0 .. signals.Length - 1 do
                result[i] <- (Signal.decode signals[i] payload).Physical

            Ok result

    /// Wheel speeds; each wheel must lie in 0..400 km/h.
    let wheelSpeeds (d: SubaruDecoder) (payload: ReadOnlySpan<byte>) : Result<WheelSpeeds, SubaruDecodeError> =
        match values d.Wheels payload with
        | Error e -> Error e
        | Ok v ->
            let names = [| "FL"; "FR"; "RL"; "RR" |]

            match v |> Array.tryFindIndex (fun x -> x < 0.0 || x > 400.0) with
            | Some i -> Error(SubaruDecodeError.Unreasonable(names[i], v[i], "0..400 kph"))
            | None ->
                let avg = (v[0] + v[1] + v[2] + v[3]) / 4.0

                Ok {
                    FrontLeft = v[0]
                    FrontRight = v[1]
                    RearLeft = v[2]
                    RearRight = v[3]
                    AverageKph = avg
                    AverageMph = avg * 0.621371
                }

    /// Main, Set and Resume.
    let cruiseButtons (d: SubaruDecoder) (payload: ReadOnlySpan<byte>) : Result<CruiseButtons, SubaruDecodeError> =
        values d.Buttons payload
        |> Result.map (fun v -> {
            Main = v[0] <> 0.0
            Set = v[1] <> 0.0
            Resume = v[2] <> 0.0
        })

    /// Set speed (0..500 accepted), cruise on, cruise activated.
    let cruiseStatus (d: SubaruDecoder) (payload: ReadOnlySpan<byte>) : Result<CruiseStatus, SubaruDecodeError> =
        match values d.Status payload with
        | Error e -> Error e
        | Ok v when v[0] < 0.0 || v[0] > 500.0 ->
            Error(SubaruDecodeError.Unreasonable("Cruise_Set_Speed", v[0], "0..500"))
        | Ok v ->
            Ok {
                SetSpeed = v[0]
                CruiseOn = v[1] <> 0.0
                CruiseActivated = v[2] <> 0.0
            }

    /// Cruise brake active, cruise activated.
    let esBrake (d: SubaruDecoder) (payload: ReadOnlySpan<byte>) : Result<EsBrake, SubaruDecodeError> =
        values d.Brake payload
        |> Result.map (fun v -> {
            CruiseBrakeActive = v[0] <> 0.0
            CruiseActivated = v[1] <> 0.0
        })

    /// Brake pedal position and brake lights.
    let brakePedal (d: SubaruDecoder) (payload: ReadOnlySpan<byte>) : Result<BrakePedal, SubaruDecodeError> =
        values d.Pedal payload
        |> Result.map (fun v -> {
            BrakePedal = v[0]
            BrakeLights = v[1] <> 0.0
        })

    /// Left and right blinkers.
    let blinkers (d: SubaruDecoder) (payload: ReadOnlySpan<byte>) : Result<Blinkers, SubaruDecodeError> =
        values d.Dash payload
        |> Result.map (fun v -> {
            Left = v[0] <> 0.0
            Right = v[1] <> 0.0
        })
