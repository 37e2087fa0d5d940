namespace CtsLite

open System.Text.Json
open System.Text.Json.Serialization

/// The serializer settings of the API's JSON, the same for the service and every client:
/// `snake_case` property names, F# records, unions and options (None is null).
[<RequireQualifiedAccess>]
module ApiJson =

    /// New options (each caller may add to its own copy).
    let createOptions () : JsonSerializerOptions =
        let options =
            JsonSerializerOptions(
                PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
                DictionaryKeyPolicy = null,
                WriteIndented = false
            )

        options.Converters.Add(JsonFSharpConverter(JsonUnionEncoding.Default ||| JsonUnionEncoding.UnwrapOption))
        options

    /// Shared read-only options for callers that add nothing.
    let options: JsonSerializerOptions =
        let o = createOptions ()
        o.TypeInfoResolver <- Metadata.DefaultJsonTypeInfoResolver()
        o.MakeReadOnly()
        o
