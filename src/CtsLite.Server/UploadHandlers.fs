namespace CtsLite.Server

open System
open System.IO
open System.Security.Cryptography
open System.Threading.Tasks
open Microsoft.AspNetCore.Http
open Microsoft.AspNetCore.Http.Features
open Microsoft.AspNetCore.WebUtilities
open Microsoft.Extensions.DependencyInjection
open Microsoft.Net.Http.Headers
open CtsLite.Logs
open CtsLite.Server.Http

/// `POST /v1/uploads` and friends.
[<RequireQualifiedAccess>]
module UploadHandlers =

    let private service = Handlers.service

    let private wire (u: UploadRecord) : CtsLite.Api.UploadResponse = {
        UploadId = u.UploadId
        Filename = u.Filename
        Size = u.Size
        Sha256 = u.Sha256
        ContentType = u.ContentType
        CreatedAt = u.CreatedAt
    }

    /// A file name reduced to its last part, without control characters.
    let cleanName (name: string) : string =
        let n =
            (if isNull name then "" else name).Replace('\\', '/')
            |> Path.GetFileName
            |> String.filter (fun c -> not (Char.IsControl c))

        if n = "" || n = "." || n = ".." then "upload" else n

    type private Outcome =
        | TooLarge
        | Unaccepted
        /// The body could not be read to its end (a multipart part that never ends, a bad chunk).
        | BodyBroken
        /// The body came too slowly, stalled, or took longer than the upload deadline.
        | TooSlow of reason: string
        | Stored of UploadRecord * bool

    /// A write failed because the disk (or the file system's quota) is full.
    let private (|DiskFull|_|) (e: exn) =
        match e with
        // ENOSPC and EDQUOT on Linux; ERROR_DISK_FULL and ERROR_HANDLE_DISK_FULL on Windows.
        | :? IOException as io when
            io.HResult = 28
            || io.HResult = 122
            || (io.HResult &&& 0xFFFF) = 112
            || (io.HResult &&& 0xFFFF) = 39
            ->
            Some()
        | _ -> None

    /// Reading the request body failed in a way the client caused (not a cancellation).
    let private (|BodyFailure|_|) (e: exn) =
        match e with
        | :? OperationCanceledException -> None
        | :? BadHttpRequestException as b when b.StatusCode = StatusCodes.Status413PayloadTooLarge -> None
        | :? IOException
        | :? InvalidDataException
        | :? BadHttpRequestException -> Some()
        | _ -> None

    /// Streams `source` to a temporary file while hashing and counting (memory stays flat), checks
    /// the content's kind, then renames it into place: a half-written upload is never visible.
    /// The longest an upload may send nothing.
    let private IdleLimit = TimeSpan.FromSeconds 30.0

    /// How long an upload streams before its average rate is checked.
    let private RateGrace = TimeSpan.FromSeconds 10.0

    let private store (svc: ServiceContext) (filename: string) (source: Stream) (aborted: Threading.CancellationToken) =
        task {
            let dir = Path.Combine(svc.Config.DataDir, "uploads")
            Directory.CreateDirectory dir |> ignore
            let id = Guid.NewGuid().ToString()
            let temp = Path.Combine(dir, $".{id}.part")

            try
                use hash = IncrementalHash.CreateHash HashAlgorithmName.SHA256
                let head = Array.zeroCreate<byte> 512

                let! total, headLength, tooLarge = task {
                    let buffer = Array.zeroCreate<byte> 81920
                    let mutable headLength = 0
                    let mutable total = 0L
                    let mutable tooLarge = false

                    use file = svc.CreateFile temp

                    let mutable reading = true

                    let mutable broken = None
                    let started = svc.Time.GetTimestamp()
                    let minRate = svc.Config.UploadMinBytesPerSecond

                    while reading do
                        // A sender that sends nothing for IdleLimit holds a slot for nothing.
                        use idle = new Threading.CancellationTokenSource(IdleLimit, svc.Time)

                        use read =
                            Threading.CancellationTokenSource.CreateLinkedTokenSource(aborted, idle.Token)

                        let! n = task {
                            try
                                return! source.ReadAsync(buffer, 0, buffer.Length, read.Token)
                            with
                            | :? OperationCanceledException when
                                idle.IsCancellationRequested && not aborted.IsCancellationRequested
                                ->
                                broken <- Some(TooSlow $"nothing arrived for {int IdleLimit.TotalSeconds} s")
                                return 0
                            | BodyFailure ->
                                broken <- Some BodyBroken
                                return 0
                        }

                        let elapsed = svc.Time.GetElapsedTime started

                        if
                            n > 0
                            && minRate > 0
                            && elapsed > RateGrace
                            && float total < float minRate * elapsed.TotalSeconds
                        then
                            broken <-
                                Some(TooSlow $"slower than upload_min_bytes_per_second ({minRate} bytes/s on average)")

                        if n = 0 || broken.IsSome then
                            reading <- false
                        else
                            total <- total + int64 n

                            if total > svc.Config.MaxUploadBytes then
                                tooLarge <- true
                                reading <- false
                            else
                                if headLength < head.Length then
                                    let k = min n (head.Length - headLength)
                                    Buffer.BlockCopy(buffer, 0, head, headLength, k)
                                    headLength <- headLength + k

                                hash.AppendData(buffer, 0, n)
                                do! file.WriteAsync(buffer, 0, n, aborted)

                    do! file.FlushAsync aborted

                    return
                        total,
                        headLength,
                        (match broken with
                         | Some b -> Error b
                         | None -> Ok tooLarge)
                }

                match tooLarge with
                | Error outcome -> return outcome
                | Ok true -> return TooLarge
                | Ok false ->
                    match FileKind.classify (ReadOnlySpan(head, 0, headLength)) with
                    | None -> return Unaccepted
                    | Some kind ->
                        let sha = Convert.ToHexString(hash.GetHashAndReset()).ToLowerInvariant()
                        let path = Path.Combine(dir, id)

                        let record: UploadRecord = {
                            UploadId = id
                            Filename = filename
                            Size = total
                            Sha256 = sha
                            ContentType = FileKind.name kind
                            Path = path
                            CreatedAt = svc.Time.GetUtcNow()
                        }

                        File.Move(temp, path)
                        let! stored, isNew = svc.Runs.AddUpload record

                        if not isNew then
                            File.Delete path
                            do! svc.Runs.TouchUpload(stored.UploadId, record.CreatedAt)

                        return Stored(stored, isNew)
            finally
                if File.Exists temp then
                    File.Delete temp
        }

    /// 408: the upload came too slowly, stalled or ran past its deadline (nothing is kept).
    let private tooSlow (reason: string) : HttpHandler =
        Problem.write StatusCodes.Status408RequestTimeout $"the upload was too slow: {reason}; nothing was kept" []

    /// The longest multipart boundary RFC 2046 allows.
    [<Literal>]
    let MaxBoundaryLength = 70

    /// The most header bytes one multipart part may have.
    [<Literal>]
    let MaxPartHeaderBytes = 16 * 1024

    /// `POST /v1/uploads`: a raw body (name from `X-Filename` or `?filename=`) or multipart/form-data
    /// (the first file part). 201 when new, 200 with the existing upload for known content, 413 over
    /// the limit, 415 for content that is no rlog, CSV or DBC, 400 naming what is wrong with a
    /// malformed multipart body (no or an over-long boundary, no file part, an unterminated part,
    /// part headers over 16 KiB).
    let create: HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) -> task {
            let svc = service ctx
            let limit = svc.Config.MaxUploadBytes

            let caller = Auth.callerOf ctx

            match ctx.Features.Get<IHttpMaxRequestBodySizeFeature>() with
            | null -> ()
            | f when not f.IsReadOnly -> f.MaxRequestBodySize <- Nullable limit
            | _ -> ()

            if ctx.Request.ContentLength.HasValue && ctx.Request.ContentLength.Value > limit then
                return! Problem.payloadTooLarge limit next ctx
            else
                match svc.Uploads.TryEnter caller with
                | Error SlotRefusal.CallerFull ->
                    return!
                        Auth.tooManyRequests
                            5
                            $"you are already streaming {svc.Uploads.PerCaller} upload(s) (max_uploads_per_caller); retry when one ends"
                            next
                            ctx
                | Error SlotRefusal.AllFull ->
                    return!
                        Auth.tooManyRequests
                            5
                            $"{svc.Uploads.Limit} uploads are already streaming (max_concurrent_uploads); retry later"
                            next
                            ctx
                | Ok() ->
                    // The whole upload, headers and body, within upload_timeout_s.
                    use deadline =
                        new Threading.CancellationTokenSource(svc.Config.UploadTimeout, svc.Time)

                    use body =
                        Threading.CancellationTokenSource.CreateLinkedTokenSource(ctx.RequestAborted, deadline.Token)

                    try
                        try
                            let contentType = ctx.Request.ContentType |> Option.ofObj |> Option.defaultValue ""

                            let! source = task {
                                if
                                    contentType.StartsWith("multipart/form-data", StringComparison.OrdinalIgnoreCase)
                                then
                                    match MediaTypeHeaderValue.TryParse contentType with
                                    | false, _ ->
                                        return
                                            Error
                                                "the Content-Type header is not a valid media type (multipart/form-data; boundary=…)"
                                    | true, media ->
                                        let boundary = HeaderUtilities.RemoveQuotes(media.Boundary).Value

                                        if String.IsNullOrEmpty boundary then
                                            return Error "multipart/form-data needs a boundary parameter"
                                        elif boundary.Length > MaxBoundaryLength then
                                            return
                                                Error
                                                    $"the multipart boundary is longer than {MaxBoundaryLength} characters (RFC 2046)"
                                        else
                                            let reader =
                                                MultipartReader(
                                                    boundary,
                                                    ctx.Request.Body,
                                                    HeadersLengthLimit = MaxPartHeaderBytes
                                                )

                                            let mutable found = Ok None
                                            let mutable finished = false

                                            while not finished do
                                                let! section = task {
                                                    try
                                                        let! section = reader.ReadNextSectionAsync body.Token
                                                        return Ok section
                                                    with
                                                    | :? InvalidDataException ->
                                                        return
                                                            Error
                                                                $"a part's headers are malformed or longer than {MaxPartHeaderBytes / 1024} KiB"
                                                    | BodyFailure ->
                                                        return
                                                            Error "the multipart body ended before its closing boundary"
                                                }

                                                match section with
                                                | Error e ->
                                                    found <- Error e
                                                    finished <- true
                                                | Ok null -> finished <- true
                                                | Ok s ->
                                                    match
                                                        ContentDispositionHeaderValue.TryParse(s.ContentDisposition)
                                                    with
                                                    | true, cd when cd.FileName.HasValue || cd.FileNameStar.HasValue ->
                                                        let name =
                                                            if cd.FileNameStar.HasValue then
                                                                cd.FileNameStar.Value
                                                            else
                                                                HeaderUtilities.RemoveQuotes(cd.FileName).Value

                                                        found <- Ok(Some(name, s.Body))
                                                        finished <- true
                                                    | _ -> ()

                                            return
                                                found
                                                |> Result.bind (function
                                                    | Some file -> Ok file
                                                    | None -> Error "the multipart body has no file part")
                                else
                                    let name =
                                        match
                                            ctx.Request.Headers["X-Filename"].ToString(),
                                            ctx.Request.Query["filename"].ToString()
                                        with
                                        | "", "" -> "upload"
                                        | "", q -> q
                                        | h, _ -> h

                                    return Ok(name, ctx.Request.Body)
                            }

                            match source with
                            | Error problem -> return! Problem.badRequest problem next ctx
                            | Ok(name, stream) ->
                                try
                                    match! store svc (cleanName name) stream body.Token with
                                    | TooLarge -> return! Problem.payloadTooLarge limit next ctx
                                    | TooSlow reason -> return! tooSlow reason next ctx
                                    | BodyBroken ->
                                        return!
                                            Problem.badRequest
                                                "the request body ended before the file did (an unterminated part or chunk)"
                                                next
                                                ctx
                                    | Unaccepted ->
                                        return!
                                            Problem.write
                                                StatusCodes.Status415UnsupportedMediaType
                                                "the content is not an rlog/qlog (zstd, bzip2 or raw Cap'n Proto), a CSV or a DBC file"
                                                []
                                                next
                                                ctx
                                    | Stored(upload, isNew) ->
                                        ctx.Response.Headers.Location <- $"/v1/uploads/{upload.UploadId}"

                                        let status =
                                            if isNew then
                                                StatusCodes.Status201Created
                                            else
                                                StatusCodes.Status200OK

                                        return! (setStatusCode status >=> json (wire upload)) next ctx
                                with
                                | :? BadHttpRequestException as e when
                                    e.StatusCode = StatusCodes.Status413PayloadTooLarge
                                    ->
                                    return! Problem.payloadTooLarge limit next ctx
                                | DiskFull ->
                                    return!
                                        Problem.write
                                            StatusCodes.Status507InsufficientStorage
                                            "the service's disk is full: the upload was not stored (free space, or lower retention_days)"
                                            []
                                            next
                                            ctx
                        with :? OperationCanceledException when
                            deadline.IsCancellationRequested
                            && not ctx.RequestAborted.IsCancellationRequested ->
                            return!
                                tooSlow
                                    $"it took longer than upload_timeout_s ({int svc.Config.UploadTimeout.TotalSeconds} s)"
                                    next
                                    ctx
                    finally
                        svc.Uploads.Exit caller
        }

    let private withUpload: RouteArgs -> (ServiceContext -> UploadRecord -> HttpHandler) -> HttpHandler =
        Handlers.withRecord "upload_id" "upload" (fun svc id -> svc.Runs.GetUpload id)

    /// `GET /v1/uploads/{upload_id}`.
    let get (args: RouteArgs) : HttpHandler =
        withUpload args (fun _ u -> json (wire u))

    /// `GET /v1/uploads?limit=`: the newest uploads first (at most 500 a call, default 100).
    let list: HttpHandler =
        fun (next: HttpFunc) (ctx: HttpContext) ->
            match Handlers.limit ctx 100 with
            | Error e -> Problem.badRequest e next ctx
            | Ok limit -> task {
                let! uploads = (Handlers.service ctx).Runs.ListUploads limit
                return! json ({ Uploads = uploads |> List.map wire }: CtsLite.Api.UploadList) next ctx
              }

    /// `DELETE /v1/uploads/{upload_id}`: the record and the file; 204.
    let delete (args: RouteArgs) : HttpHandler =
        withUpload args (fun svc u ->
            fun next ctx -> task {
                let! _ = svc.Runs.DeleteUpload u.UploadId

                if File.Exists u.Path then
                    File.Delete u.Path

                return! setStatusCode StatusCodes.Status204NoContent next ctx
            })
