/// `cts runs`, `cts logs`, `cts art` against a real Kestrel service.
module CtsLite.Cli.Tests.RunsTests

open System
open System.IO
open System.Security.Cryptography
open System.Text.Json
open Expecto
open CtsLite.Tests

let private segment () =
    Path.Combine(TestEnv.sharedDir (), "data", "rlogs", "synthetic", "default.rlog.zst")

let private sha (path: string) =
    use s = File.OpenRead path
    Convert.ToHexString(SHA256.HashData s).ToLowerInvariant()

let all =
    testList "runs, logs and artifacts" [
        test "runs list|get|cancel, logs (and --follow), art list|get with resume, exit codes by cause" {
            Tests.withService (fun url ->
                let cts (args: string list) = Tests.cts ([ "--url"; url ] @ args)
                let out = TestEnv.tempDir "runs-cli"

                let code, _, err =
                    cts [ "run"; "log-summary"; segment (); "--out-dir"; Path.Combine(out, "run") ]

                Expect.equal code 0 err

                let code, listed, err = cts [ "--json"; "runs"; "list"; "--all" ]
                Expect.equal code 0 err
                let runs = JsonDocument.Parse(listed).RootElement.GetProperty("runs")
                Expect.equal (runs.GetArrayLength()) 1 "the run"
                let id = runs[0].GetProperty("run_id").GetString()

                let code, table, err = cts [ "runs"; "list"; "--tool"; "log-summary" ]
                Expect.equal code 0 err
                Expect.stringContains table id "listed"
                Expect.stringContains table "completed" "its state"
                Expect.stringContains table "100%" "its progress"

                let code, shown, err = cts [ "runs"; "get"; id ]
                Expect.equal code 0 err
                Expect.stringContains shown $"run {id}: log-summary, completed" "one run"

                let code, log, err = cts [ "logs"; id ]
                Expect.equal code 0 err
                Expect.stringContains log "completed: 71943 events" "the log"

                let code, followed, err = cts [ "logs"; id; "--follow" ]
                Expect.equal code 0 err
                Expect.equal followed log "--follow of an ended run: the same lines, once"
                Expect.stringContains err "completed" "and how it ended"

                let code, arts, err = cts [ "--json"; "art"; "list"; id ]
                Expect.equal code 0 err

                let artifacts = [
                    for a in JsonDocument.Parse(arts).RootElement.GetProperty("artifacts").EnumerateArray() ->
                        a.GetProperty("artifact_id").GetString(),
                        a.GetProperty("filename").GetString(),
                        a.GetProperty("sha256").GetString()
                ]

                Expect.equal
                    (artifacts |> List.map (fun (_, f, _) -> f) |> List.sort)
                    [ "log_summary.html"; "log_summary.json" ]
                    "both"

                let aid, name, digest =
                    artifacts |> List.find (fun (_, f, _) -> f = "log_summary.json")

                let dir = Directory.CreateDirectory(Path.Combine(out, "get")).FullName
                let code, said, err = cts [ "art"; "get"; aid; "--out"; dir ]
                Expect.equal code 0 err
                let file = Path.Combine(dir, name)
                Expect.equal (sha file) digest "the bytes"
                Expect.stringContains said name "says where"

                let code, _, err = cts [ "art"; "get"; aid; "--out"; dir ]
                Expect.equal code 1 "never over a file without --force"
                Expect.stringContains err "--force" "says how"

                // A partial download is resumed from where it stopped.
                let bytes = File.ReadAllBytes file
                File.Delete file
                File.WriteAllBytes(file + ".part", bytes[..99])
                let code, said, err = cts [ "art"; "get"; aid; "--out"; file ]
                Expect.equal code 0 err
                Expect.stringContains said "resumed after 100 B" "resumed"
                Expect.equal (sha file) digest "the same bytes"
                Expect.isFalse (File.Exists(file + ".part")) "the partial file is gone"

                let code, _, err = cts [ "art"; "get"; aid; "--out"; file; "--force" ]
                Expect.equal code 0 err

                let code, _, err = cts [ "runs"; "cancel"; id ]
                Expect.equal code 1 "an ended run: 409, the request was wrong"
                Expect.stringContains err "already ended" "the service's reason"

                let code, _, err = cts [ "runs"; "get"; "no-such-run" ]
                Expect.equal code 1 "404"
                Expect.stringContains err "no run 'no-such-run'" "named"

                // Uploads: the run's log is one already; the same content again is deduplicated.
                let code, said, err = cts [ "upload"; segment () ]
                Expect.equal code 0 err
                Expect.stringContains said "(already stored)" "deduplicated"
                let uploadId = said.Split(' ')[0]
                let code, listedUploads, err = cts [ "uploads"; "list" ]
                Expect.equal code 0 err
                Expect.stringContains listedUploads uploadId "listed"
                Expect.stringContains listedUploads "default.rlog.zst" "by its name"
                let code, _, err = cts [ "uploads"; "rm"; uploadId ]
                Expect.equal code 0 err
                let code, listedUploads, err = cts [ "--json"; "uploads"; "list" ]
                Expect.equal code 0 err
                let left = JsonDocument.Parse(listedUploads).RootElement.GetProperty("uploads")
                Expect.equal (left.GetArrayLength()) 0 "gone"
                let code, _, _ = cts [ "uploads"; "rm"; uploadId ]
                Expect.equal code 1 "already gone: 404"
                let code, _, err = cts [ "upload"; Path.Combine(out, "nothing-here.rlog") ]
                Expect.equal code 1 "a missing file, before any request"
                Expect.stringContains err "no such file" "says so"

                let code, _, err =
                    Tests.cts [ "--url"; $"http://127.0.0.1:{Tests.closedPort ()}"; "runs"; "list" ]

                Expect.equal code 2 "unreachable"
                Expect.stringContains err "cannot reach" "says so")
        }
    ]
