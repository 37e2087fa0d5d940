module CtsLite.Server.Tests.StoreTests

open System.IO
open System.Threading
open Microsoft.Data.Sqlite
open Expecto
open CtsLite.Server
open CtsLite.Tests

let private tables (dir: string) =
    use c =
        new SqliteConnection($"Data Source={Path.Combine(dir, SqliteStore.FileName)}")

    c.Open()
    use cmd = c.CreateCommand()
    cmd.CommandText <- "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
    use r = cmd.ExecuteReader()

    [
        while r.Read() do
            r.GetString 0
    ]

let private setUserVersion (dir: string) (v: int) =
    use c =
        new SqliteConnection($"Data Source={Path.Combine(dir, SqliteStore.FileName)};Pooling=False")

    c.Open()
    use cmd = c.CreateCommand()
    cmd.CommandText <- $"PRAGMA user_version = {v}"
    cmd.ExecuteNonQuery() |> ignore

let all =
    testList "SQLite store" [
        test "opening an empty folder creates and migrates the store" {
            let dir = TestEnv.tempDir "store"

            match SqliteStore.openIn dir with
            | Error e -> failtest (StoreError.describe e)
            | Ok store ->
                use store = store
                Expect.equal store.SchemaVersion SqliteStore.supportedVersion "migrated to the newest version"
                Expect.equal (tables dir) [ "artifacts"; "log_entries"; "monitor_sessions"; "runs"; "uploads" ] "tables"
                Expect.isOk (store.Check(CancellationToken.None).GetAwaiter().GetResult()) "reachable"
                Expect.isGreaterThan (store.SizeBytes()) 0L "occupies disk"
        }
        test "reopening is idempotent" {
            let dir = TestEnv.tempDir "store"

            for _ in 1..3 do
                match SqliteStore.openIn dir with
                | Ok store -> store.Dispose()
                | Error e -> failtest (StoreError.describe e)

            Expect.equal (tables dir).Length 5 "still five tables"
        }
        test "a store from a newer build is refused, not downgraded" {
            let dir = TestEnv.tempDir "store"
            (SqliteStore.openIn dir |> Result.defaultWith (fun _ -> failwith "open")).Dispose()
            SqliteConnection.ClearAllPools()
            setUserVersion dir (SqliteStore.supportedVersion + 1)

            match SqliteStore.openIn dir with
            | Error(StoreError.SchemaTooNew(found, supported) as e) ->
                Expect.equal found (SqliteStore.supportedVersion + 1) "found"
                Expect.equal supported SqliteStore.supportedVersion "supported"
                Expect.stringContains (StoreError.describe e) "newer" "explains"
            | other -> failtestf "expected SchemaTooNew, got %A" other
        }
        test "a data dir that is not a folder gives a clear error" {
            let file = Path.Combine(TestEnv.tempDir "store", "plain-file")
            File.WriteAllText(file, "x")

            match SqliteStore.openIn file with
            | Error(StoreError.Unavailable reason) -> Expect.stringContains reason file "names the path"
            | other -> failtestf "expected Unavailable, got %A" other
        }
    ]
