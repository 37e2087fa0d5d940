/// A test publisher that speaks openpilot's bridge protocol: one PUB socket per service at the
/// port the service's name gives, one Event (with its segment table) a message, on loopback.
module internal CtsLite.Tests.TestBridge

open System
open System.IO
open System.Threading
open NetMQ
open NetMQ.Sockets
open CtsLite.Capnp
open CtsLite.Logs
open CtsLite.Monitors

let private layout =
    lazy (EventLayout.ofSchema (Schema.cereal ()) |> Result.defaultWith failwith)

/// Every event of a zstd log as (service, logMonoTime, the message's bytes), in log order.
let timedMessagesOf (file: string) : (string * int64 * byte array) list =
    let raw = new MemoryStream()

    do
        use z = new ZstdSharp.DecompressionStream(File.OpenRead file)
        z.CopyTo raw

    let bytes = raw.ToArray()
    let layout = layout.Force()

    use reader =
        LogReader.OfStream(new MemoryStream(bytes), file, ReaderOptions.Default, Compression.Raw)

    [
        let mutable at = 0L

        while reader.Next() do
            let service =
                Event.whichName layout (Event.which reader.Message layout reader.Event)

            let mono = int64 (Event.logMonoTime reader.Message layout reader.Event)
            yield service, mono, bytes[int at .. int reader.Position - 1]
            at <- reader.Position
    ]

/// Every event of a zstd log as (service, the message's bytes), in log order.
let messagesOf (file: string) : (string * byte array) list =
    timedMessagesOf file |> List.map (fun (service, _, bytes) -> service, bytes)

/// A PUB socket bound where the bridge publishes `service` (nothing dropped for slow subscribers).
let publisher (service: string) : PublisherSocket =
    let socket = new PublisherSocket()
    socket.Options.SendHighWatermark <- 0
    socket.Bind $"tcp://127.0.0.1:{Bridge.port service}"
    socket

/// Waits for `condition`, failing the test after `seconds`.
let waitFor (what: string) (seconds: float) (condition: unit -> bool) =
    let deadline = DateTime.UtcNow.AddSeconds seconds

    while not (condition ()) do
        if DateTime.UtcNow > deadline then
            failwithf "timed out waiting for %s" what

        Thread.Sleep 10
