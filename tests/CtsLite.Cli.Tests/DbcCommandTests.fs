/// `cts dbc`: decoding logs and CAN captures through DBC files, the opendbc corpus, and the
/// problems a bad DBC is answered with.
module CtsLite.Cli.Tests.DbcCommandTests

open System
open System.Diagnostics
open System.IO
open System.Security.Cryptography
open System.Text
open System.Text.Json
open System.Threading.Tasks
open Expecto
open CtsLite.Capnp
open CtsLite.Cli
open CtsLite.Can
open CtsLite.Logs
open CtsLite.Tests

open CtsLite.Cli.Tests.LogTests

let dbcTests =
    let opendbc () = Path.Combine(reference (), "opendbc")

    testList "dbc commands" [
        test "dbc check prints counts for clean files and every error otherwise" {
            use out = new MemoryStream()

            let clean =
                Path.Combine(opendbc (), "generator", "subaru", "subaru_global_2017.dbc")

            Expect.equal (Program.run [| "dbc"; "check"; clean |] out (new StringWriter())) 0 "clean"

            Expect.stringContains
                (Encoding.UTF8.GetString(out.ToArray()))
                "32 messages, 231 signals"
                "counts, imports followed"

            let bad = Path.Combine(TestEnv.tempDir "dbc", "bad.dbc")
            File.WriteAllText(bad, "BO_ 1 A: 8 X\n SG_ S : 0|8@7+ (1,0) [0|1] \"\" X\nNOPE;\n")
            use badOut = new MemoryStream()

            Expect.equal
                (Program.run [| "dbc"; "check"; bad |] badOut (new StringWriter()))
                ExitCode.ClientError
                "errors"

            let lines =
                Encoding.UTF8.GetString(badOut.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries)

            Expect.equal lines.Length 2 "both problems"
            Expect.all lines (fun l -> l.StartsWith(bad + ":")) "file:line:column"
        }
        test "dbc decode writes one row per decoded signal in log order" {
            let dbc = Path.Combine(opendbc (), "generated", "toyota_nodsu_pt_generated.dbc")
            use out = new MemoryStream()

            let code =
                Program.run
                    [|
                        "dbc"
                        "decode"
                        dbc
                        rav4 "zst"
                        "--signal"
                        "WHEEL_SPEEDS.WHEEL_SPEED_FL"
                        "--bus"
                        "0"
                    |]
                    out
                    (new StringWriter())

            Expect.equal code 0 "ok"

            let rows =
                Encoding.UTF8.GetString(out.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries)

            Expect.equal rows[0] "time_s,bus,address,message,signal,value,label" "header"
            let data = rows |> Array.skip 1 |> Array.map (fun r -> r.Split ',')
            Expect.isGreaterThan data.Length 4000 "about 80 Hz for a minute"

            Expect.all
                data
                (fun r -> r[1] = "0" && r[2] = "0x0AA" && r[3] = "WHEEL_SPEEDS" && r[4] = "WHEEL_SPEED_FL")
                "only what was asked"

            let times = data |> Array.map (fun r -> float r[0])
            Expect.equal times (Array.sort times) "log order"

            Expect.all
                data
                (fun r -> let v = float r[5] in v >= 0.0 && v < 250.0)
                "road speeds in km/h (a wrong bit order gives nonsense)"

            use err = new StringWriter()

            Expect.equal
                (Program.run
                    [| "dbc"; "decode"; dbc; rav4 "zst"; "--signal"; "WHEEL_SPEEDS.NOPE" |]
                    (new MemoryStream())
                    err)
                ExitCode.ClientError
                "unknown signal"

            Expect.stringContains (err.ToString()) "WHEEL_SPEEDS.NOPE" "names it"
        }
        test "dbc decode reads candump -L and rlog-to-csv CSV as well as logs" {
            let dbc = Path.Combine(opendbc (), "generated", "toyota_nodsu_pt_generated.dbc")
            let dir = TestEnv.tempDir "text"

            let decodeFl (input: string) =
                use out = new MemoryStream()
                use err = new StringWriter()

                let code =
                    Program.run
                        [|
                            "dbc"
                            "decode"
                            dbc
                            input
                            "--signal"
                            "WHEEL_SPEEDS.WHEEL_SPEED_FL"
                            "--bus"
                            "0"
                        |]
                        out
                        err

                Expect.equal code 0 (err.ToString())

                Encoding.UTF8.GetString(out.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries)
                |> Array.skip 1

            // The first WHEEL_SPEEDS frame of the comma2k19 rlog, written as candump and as CSV.
            let first =
                match Log.canFrames ReaderOptions.Default (rav4 "zst") with
                | Ok frames -> frames |> List.find (fun f -> f.Address = 0xAAu && f.Bus = 0)
                | Error e -> failtest e

            let hex = Convert.ToHexString first.Payload
            let time = first.Seconds
            let candump = Path.Combine(dir, "dump.log")
            File.WriteAllLines(candump, [ $"({time:F6}) can0 0AA#{hex}"; $"({time + 0.01:F6}) can1 0AA#{hex}" ])
            let csv = Path.Combine(dir, "frames.csv")

            File.WriteAllLines(
                csv,
                [
                    "window,segment,timestamp,address,bus,data_hex"
                    $"1,pre,0.500000,0x0AA,0,{hex}"
                ]
            )

            let value (row: string) = (row.Split ',').[5]
            let fromLog = decodeFl (rav4 "zst") |> Array.head
            let fromDump = decodeFl candump
            let fromCsv = decodeFl csv
            Expect.equal fromDump.Length 1 "--bus 0 keeps the can0 frame only"
            Expect.equal (value fromDump[0]) (value fromLog) "same value as from the log"
            Expect.stringStarts fromDump[0] $"{time:F6}" "candump time"
            Expect.equal (value fromCsv[0]) (value fromLog) "same value from the CSV"
            Expect.stringStarts fromCsv[0] "0.500000000,0,0x0AA," "CSV time and bus"
        }
        test "dbc decode labels values from the value tables" {
            let dbc = Path.Combine(opendbc (), "generated", "toyota_nodsu_pt_generated.dbc")
            use out = new MemoryStream()

            let code =
                Program.run
                    [| "dbc"; "decode"; dbc; rav4 "zst"; "--signal"; "GEAR_PACKET.GEAR" |]
                    out
                    (new StringWriter())

            Expect.equal code 0 "ok"

            let rows =
                Encoding.UTF8.GetString(out.ToArray()).Split('\n', StringSplitOptions.RemoveEmptyEntries)
                |> Array.skip 1

            Expect.isNonEmpty rows "gear frames"
            Expect.all rows (fun r -> (r.Split ',').[6] <> "") "every gear value has a label"
        }
    ]

/// Every `cts log` and `cts dbc` list, under the name they have always had.
let all =
    testList "logs" [
        conformanceTests
        decompressionTests
        infoTests
        canTests
        damageTests
        dbcTests
    ]
