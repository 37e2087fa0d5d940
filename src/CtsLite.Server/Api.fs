namespace CtsLite.Server

open CtsLite

/// The wire forms of stored records (the shapes themselves are `CtsLite.Api`'s).
[<RequireQualifiedAccess>]
module ApiRecords =

    /// The wire form of a run.
    let run (run: RunRecord) (artifacts: string list) : Api.RunResponse = {
        RunId = run.RunId
        Status = RunStatus.name run.Status
        ToolId = run.ToolId
        Name = run.Name
        Input = {
            Type = InputRef.typeName run.Input
            Value = (InputRef.toDto run.Input).Value
            Filenames = run.InputNames
        }
        Params = System.Text.Json.JsonDocument.Parse(run.ParamsJson).RootElement
        CreatedAt = run.CreatedAt
        StartedAt = run.StartedAt
        CompletedAt = run.CompletedAt
        Progress = run.Progress
        Artifacts = artifacts
        Error = run.Error
    }

    /// The wire form of an artifact.
    let artifact (a: ArtifactRecord) : Api.Artifact = {
        ArtifactId = a.ArtifactId
        RunId = a.RunId
        Filename = a.Filename
        ContentType = a.ContentType
        Size = a.Size
        Sha256 = a.Sha256
        CreatedAt = a.CreatedAt
        DownloadUrl = $"/v1/artifacts/{a.ArtifactId}/download"
    }
