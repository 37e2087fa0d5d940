namespace CtsLite.Tools

open System
open System.Collections.Generic
open CtsLite.Can
open CtsLite.Logs


/// A moment of the log: logMonoTime in ns, seconds (`Abs`) and seconds after the log's first event (`Rel`).
[<Struct>]
type internal LogTime = { Ns: int64; Abs: float; Rel: float }

/// A state change of one decoded signal (a button press, an activation).
type internal SignalEdge = {
    Time: LogTime
    Address: uint32
    Bus: int
    /// The DBC signal, e.g. `Set` or `Cruise_Activated`.
    Signal: string
    /// The bit (global LSB index) of a one-bit signal.
    Bit: int option
    Rising: bool
    /// The speed sample nearest in time (mph), if there is any speed.
    SpeedMph: float option
}

/// A maximal run of speed samples inside the band.
type internal TargetSpeedEvent = {
    Start: LogTime
    /// The first out-of-band sample, or the last sample when the run reaches the end.
    End: LogTime
    EndsAtLastSample: bool
    Samples: int
    MinMph: float
    MaxMph: float
}

/// A marker window (left blinker on, then right blinker on within the timeout).
type internal MarkerWindow = {
    Start: LogTime
    /// The right-on time; equal to `Start` for a partial window.
    Stop: LogTime
    /// max(0, start − pre) after the log's first event, as a log time.
    WindowStart: LogTime
    WindowEnd: LogTime
    Partial: bool
}

/// Frame activity of one (address, bus) around the marker windows, summed over the windows.
type internal SegmentCounts = {
    Address: uint32
    Bus: int
    Pre: int
    Window: int
    Post: int
    UniquePre: int
    UniqueWindow: int
    UniquePost: int
} with

    /// window − max(pre, post).
    member c.Delta = c.Window - max c.Pre c.Post

/// Change statistics of one (address, bus) inside one marker window.
type internal WindowActivity = {
    Address: uint32
    Bus: int
    Messages: int
    /// Messages whose payload differed from the previous one.
    Changes: int
    /// (bit, flips), most flips first, at most 5.
    TopBits: struct (int * int) array
}

/// A candidate bit of a target address.
type internal CandidateBit = {
    Address: uint32
    Bus: int
    Bit: int
    Toggles: int
    Rises: int
    Falls: int
    Penalty: float
    Score: float
}

/// An interval where the engaged bit is 1.
type internal EngagedInterval = { Start: LogTime; End: LogTime }

/// A frame whose checksum does not match (still used).
type internal BadChecksum = {
    Time: LogTime
    Address: uint32
    Bus: int
    Payload: string
}

/// Frames of one (address, bus) left out of the analysis, and the first reason.
type internal SkippedFrames = {
    Key: CanKey
    Frames: int64
    FirstReason: string
}

/// The frames of one (address, bus).
type internal MessageCount = { Key: CanKey; Frames: int64 }

/// Frame integrity over the whole input.
type internal Integrity = {
    FramesChecksumChecked: int64
    BadChecksums: BadChecksum list
    BadChecksumCount: int64
    FramesCounterChecked: int64
    CounterDiscontinuities: int64
    /// Frames that could not be decoded or failed validation, per (address, bus), with the first reason.
    SkippedFrames: SkippedFrames list
}

/// Everything the cruise-control analysis found.
type internal CruiseAnalysis = {
    Files: string list
    FirstNs: int64
    LastNs: int64
    Events: int64
    CanFrames: int64
    /// Every speed sample: (time, mph), inline (32 bytes a sample, 6 MB an hour).
    Speeds: struct (LogTime * float) array
    SetPresses: SignalEdge list
    ResumePresses: SignalEdge list
    MainPresses: SignalEdge list
    /// Cruise_Activated rising on Cruise_Status and ES_Brake.
    CruiseActivations: SignalEdge list
    CruiseDeactivations: SignalEdge list
    TargetSpeedEvents: TargetSpeedEvent list
    MarkerWindows: MarkerWindow list
    MarkerWindowsDropped: int
    /// Per window, activity of every (address, bus) that changed inside it, most changes first.
    WindowActivity: WindowActivity list list
    SegmentCounts: SegmentCounts list
    Candidates: CandidateBit list
    EngagedIntervals: EngagedInterval list
    /// The bus the engaged bit was read on (None without an engaged bit or frames).
    EngagedBus: int option
    /// Frames per (address, bus), in address then bus order.
    MessageCounts: MessageCount list
    /// The bus used for each analysed address.
    BusByAddress: CanKey list
    Integrity: Integrity
    Warnings: string list
    /// True when `max_events` stopped the reading early.
    Truncated: bool
}

/// The settings of one analysis (the tool's parameters after validation).
type internal CruiseSettings = {
    SpeedMin: float
    SpeedMax: float
    Markers: bool
    MarkerPre: float
    MarkerPost: float
    MarkerTimeout: float
    /// (address, bit) from the `engaged_bit` selector.
    EngagedBit: CanBit option
    EngagedBus: int option
    /// True for `engaged_mode=filter`.
    EngagedFilter: bool
    EngagedMargin: float
    /// Forces one bus for every analysed address.
    Bus: int option
    MaxEvents: int64 option
}
