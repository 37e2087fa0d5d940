using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.Extensions.Logging;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using CoreTools = CtsLite.Tools;

namespace CtsLite
{
    /// <summary>The type of a tool or monitor parameter (<c>str|int|float|bool|list|file</c> on the wire).</summary>
    public enum ToolParameterType
    {
        /// <summary>Text (<c>str</c>).</summary>
        String,
        /// <summary>A whole number (<c>int</c>), given as a number, decimal text or <c>0x</c> hex.</summary>
        Integer,
        /// <summary>A number (<c>float</c>).</summary>
        Float,
        /// <summary><c>true</c> or <c>false</c> (<c>bool</c>).</summary>
        Boolean,
        /// <summary>A list of strings (<c>list</c>), given as a collection or comma-separated text.</summary>
        List,
        /// <summary>A file (<c>file</c>): a path here, an upload id on the service.</summary>
        File,
    }

    /// <summary>What kind of work a tool does.</summary>
    public enum ToolCategory
    {
        /// <summary>Finds things in a drive (a button's bit, a signal's address).</summary>
        Analyzer,
        /// <summary>Turns a log into another format (CSV).</summary>
        Converter,
        /// <summary>Writes decoded signals out.</summary>
        Exporter,
        /// <summary>Watches a car's traffic as it arrives (live or replayed).</summary>
        Monitor,
    }

    /// <summary>How much a tool's log line matters.</summary>
    public enum ToolLogLevel
    {
        /// <summary>Detail for finding a problem.</summary>
        Debug,
        /// <summary>What the tool is doing.</summary>
        Information,
        /// <summary>A tolerated problem (a damaged tail, skipped frames).</summary>
        Warning,
        /// <summary>Why the run did not complete.</summary>
        Error,
    }

    /// <summary>One line of a tool's log.</summary>
    public sealed class ToolLogEntry
    {
        internal ToolLogEntry(DateTimeOffset timestamp, ToolLogLevel level, string message)
        {
            Timestamp = timestamp;
            Level = level;
            Message = message;
        }

        /// <summary>When the tool wrote it.</summary>
        public DateTimeOffset Timestamp { get; }

        /// <summary>How much it matters.</summary>
        public ToolLogLevel Level { get; }

        /// <summary>The line.</summary>
        public string Message { get; }

        /// <summary><c>warning: text</c>, as the CLI prints it.</summary>
        public override string ToString() => $"{Level.ToString().ToLowerInvariant()}: {Message}";

        internal static ToolLogLevel LevelOf(CoreTools.ToolLogLevel level) =>
            level.Tag switch
            {
                CoreTools.ToolLogLevel.Tags.Debug => ToolLogLevel.Debug,
                CoreTools.ToolLogLevel.Tags.Warning => ToolLogLevel.Warning,
                CoreTools.ToolLogLevel.Tags.Error => ToolLogLevel.Error,
                _ => ToolLogLevel.Information,
            };

        internal static LogLevel ToLogLevel(ToolLogLevel level) =>
            level switch
            {
                ToolLogLevel.Debug => LogLevel.Debug,
                ToolLogLevel.Warning => LogLevel.Warning,
                ToolLogLevel.Error => LogLevel.Error,
                _ => LogLevel.Information,
            };
    }

    /// <summary>What a run found: one line for people and the figures behind it for programs.</summary>
    public sealed class ToolSummary
    {
        internal ToolSummary(string text, FSharpList<Tuple<string, double>> facts)
        {
            Text = text;
            var ordered = new OrderedDictionary<string, double>(StringComparer.Ordinal);
            foreach (var (name, value) in facts) ordered[name] = value;
            Facts = new System.Collections.ObjectModel.ReadOnlyDictionary<string, double>(ordered);
        }

        /// <summary>The line, e.g. <c>3 Set press(es), 2 target-speed event(s), …</c>.</summary>
        public string Text { get; }

        /// <summary>The figures by snake_case name in the order the line gives them, e.g.
        /// <c>set_presses</c>, <c>can_frames</c>.</summary>
        public IReadOnlyDictionary<string, double> Facts { get; }

        /// <summary>A figure as a whole number (counts), or <c>null</c> when the tool gives none by that name.</summary>
        public long? Count(string name) =>
            Facts.TryGetValue(name, out var value) ? (long)Math.Round(value) : null;

        /// <summary><c>{"text": …, "facts": {…}}</c>.</summary>
        public string ToJson()
        {
            var o = new System.Text.Json.Nodes.JsonObject
            {
                ["text"] = Text,
                ["facts"] = new System.Text.Json.Nodes.JsonObject(
                    Facts.Select(kv => KeyValuePair.Create<string, System.Text.Json.Nodes.JsonNode?>(kv.Key, kv.Value))),
            };
            return o.ToJsonString();
        }

        /// <inheritdoc />
        public override string ToString() => Text;
    }

    /// <summary>One file a run wrote.</summary>
    public sealed class ToolArtifact
    {
        internal ToolArtifact(CoreTools.ArtifactFile file)
        {
            Name = file.Name;
            FullPath = file.Path;
            Length = file.Size;
            Sha256 = file.Sha256;
            ContentType = file.ContentType;
        }

        /// <summary>The file's name in the output folder, e.g. <c>summary.json</c>.</summary>
        public string Name { get; }

        /// <summary>Where it is.</summary>
        public string FullPath { get; }

        /// <summary>Its size in bytes.</summary>
        public long Length { get; }

        /// <summary>Lower-case hex SHA-256 of its content.</summary>
        public string Sha256 { get; }

        /// <summary>Its media type by extension, e.g. <c>text/csv; charset=utf-8</c>.</summary>
        public string ContentType { get; }

        /// <inheritdoc />
        public override string ToString() => Name;
    }

    /// <summary>How <see cref="ToolCatalog.RunAsync(string, string, IReadOnlyDictionary{string, object?}, string, ToolRunOptions?, CancellationToken)"/> reports and limits a run.</summary>
    public sealed record ToolRunOptions
    {
        /// <summary>Progress in percent (0–100), reported now and then from the tool's thread.</summary>
        public IProgress<double>? Progress { get; init; }

        /// <summary>Each log line, from the tool's thread.</summary>
        public Action<ToolLogEntry>? Log { get; init; }

        /// <summary>Where log lines go as well (category <c>CtsLite.Tools</c> when made by a factory).</summary>
        public ILogger? Logger { get; init; }

        /// <summary>The run fails with <see cref="TimeoutException"/> after this long; <c>null</c>: no limit.</summary>
        public TimeSpan? Timeout { get; init; }
    }

    /// <summary>One parameter of a tool, as the capabilities list it.</summary>
    public sealed class ToolParameterInfo
    {
        internal ToolParameterInfo(CoreTools.ParameterSpec spec)
        {
            Name = spec.Name;
            Type = spec.Type.Tag switch
            {
                CoreTools.ParameterType.Tags.Int => ToolParameterType.Integer,
                CoreTools.ParameterType.Tags.Float => ToolParameterType.Float,
                CoreTools.ParameterType.Tags.Bool => ToolParameterType.Boolean,
                CoreTools.ParameterType.Tags.List => ToolParameterType.List,
                CoreTools.ParameterType.Tags.File => ToolParameterType.File,
                _ => ToolParameterType.String,
            };
            Default = spec.Default == null ? null : ToObject(spec.Default.Value);
            Description = spec.Description;
            Choices = spec.Choices.ToArray();
            Required = spec.Required;
            Min = spec.Min == null ? null : spec.Min.Value;
            Max = spec.Max == null ? null : spec.Max.Value;
        }

        /// <summary>The parameter's name, e.g. <c>speed_min</c>.</summary>
        public string Name { get; }

        /// <summary>What values it takes.</summary>
        public ToolParameterType Type { get; }

        /// <summary>The default value (<see cref="string"/>, <see cref="long"/>, <see cref="double"/>,
        /// <see cref="bool"/> or a string list), or <c>null</c> when there is none.</summary>
        public object? Default { get; }

        /// <summary>What the parameter does.</summary>
        public string Description { get; }

        /// <summary>The accepted values; empty when any value of the type is accepted.</summary>
        public IReadOnlyList<string> Choices { get; }

        /// <summary>Whether a run must give it.</summary>
        public bool Required { get; }

        /// <summary>The smallest accepted number, if limited.</summary>
        public double? Min { get; }

        /// <summary>The largest accepted number, if limited.</summary>
        public double? Max { get; }

        internal static object ToObject(CoreTools.ParameterValue value) => value switch
        {
            CoreTools.ParameterValue.Str s => s.Item,
            CoreTools.ParameterValue.File f => f.Item,
            CoreTools.ParameterValue.Int i => i.Item,
            CoreTools.ParameterValue.Float f => f.Item,
            CoreTools.ParameterValue.Bool b => b.Item,
            CoreTools.ParameterValue.List l => l.Item.ToArray(),
            _ => throw new InvalidOperationException("unknown parameter value"),
        };
    }

    /// <summary>A tool CtsLite can run: the Tool Capability.</summary>
    public sealed class ToolInfo
    {
        internal ToolInfo(CoreTools.ToolDescriptor d)
        {
            Id = d.Id;
            Name = d.Name;
            Description = d.Description;
            Category = d.Category.Tag switch
            {
                CoreTools.ToolCategory.Tags.Converter => ToolCategory.Converter,
                CoreTools.ToolCategory.Tags.Exporter => ToolCategory.Exporter,
                CoreTools.ToolCategory.Tags.Monitor => ToolCategory.Monitor,
                _ => ToolCategory.Analyzer,
            };
            Parameters = d.Parameters.Select(p => new ToolParameterInfo(p)).ToArray();
            InputTypes = d.InputTypes.ToArray();
            OutputTypes = d.OutputTypes.ToArray();
        }

        /// <summary>The tool's id, e.g. <c>cruise-control-analyzer</c>.</summary>
        public string Id { get; }

        /// <summary>The display name.</summary>
        public string Name { get; }

        /// <summary>What the tool does.</summary>
        public string Description { get; }

        /// <summary>What kind of work it does.</summary>
        public ToolCategory Category { get; }

        /// <summary>The parameters, in declaration order.</summary>
        public IReadOnlyList<ToolParameterInfo> Parameters { get; }

        /// <summary>What the tool reads, e.g. <c>rlog</c>, <c>route</c>, <c>csv</c>.</summary>
        public IReadOnlyList<string> InputTypes { get; }

        /// <summary>What the tool writes, e.g. <c>csv</c>, <c>json</c>, <c>html</c>.</summary>
        public IReadOnlyList<string> OutputTypes { get; }
    }

    /// <summary>One bad parameter of a run.</summary>
    public sealed class ToolParameterError
    {
        internal ToolParameterError(string parameter, string detail)
        {
            Parameter = parameter;
            Detail = detail;
        }

        /// <summary>The parameter's name.</summary>
        public string Parameter { get; }

        /// <summary>What is wrong with it.</summary>
        public string Detail { get; }

        /// <inheritdoc />
        public override string ToString() => $"{Parameter}: {Detail}";
    }

    /// <summary>Thrown when parameters do not fit the tool; <see cref="Errors"/> has one entry per bad parameter.</summary>
    public sealed class ToolParameterException : ArgumentException
    {
        internal ToolParameterException(string toolId, IReadOnlyList<ToolParameterError> errors)
            : base($"{toolId}: " + string.Join("; ", errors))
        {
            Errors = errors;
        }

        /// <summary>Every bad parameter.</summary>
        public IReadOnlyList<ToolParameterError> Errors { get; }
    }

    /// <summary>Thrown when the input (or a file a parameter names) cannot be used: missing, not a log, a bad DBC.</summary>
    public sealed class ToolInputException : IOException
    {
        internal ToolInputException(string message) : base(message) { }
    }

    /// <summary>What a completed run produced.</summary>
    public sealed class ToolRunResult
    {
        internal ToolRunResult(CoreTools.ToolRunResult run)
        {
            ToolId = run.Tool.Id;
            OutputDirectory = run.OutputDir;
            Parameters = run.Parameters.Values
                .ToDictionary(kv => kv.Key, kv => ToolParameterInfo.ToObject(kv.Value), StringComparer.Ordinal)
                .AsReadOnly();
            Artifacts = run.Artifacts.Select(a => new ToolArtifact(a)).ToArray();
            Summary = new ToolSummary(run.Output.Summary, run.Output.Facts);
            Warnings = run.Output.Warnings.ToArray();
        }

        /// <summary>The tool that ran.</summary>
        public string ToolId { get; }

        /// <summary>The folder holding the artifacts.</summary>
        public string OutputDirectory { get; }

        /// <summary>The parameters after validation, defaults included (values as in <see cref="ToolParameterInfo.Default"/>).</summary>
        public IReadOnlyDictionary<string, object> Parameters { get; }

        /// <summary>The files it wrote, in a useful order (the report first).</summary>
        public IReadOnlyList<ToolArtifact> Artifacts { get; }

        /// <summary>What was found.</summary>
        public ToolSummary Summary { get; }

        /// <summary>Tolerated problems (a damaged log tail, skipped frames), one line each.</summary>
        public IReadOnlyList<string> Warnings { get; }
    }

    /// <summary>The CtsLite tools (the same catalog the <c>cts</c> CLI and the service run).</summary>
    public static class ToolCatalog
    {
        /// <summary>Every tool, in display order.</summary>
        public static IReadOnlyList<ToolInfo> All { get; } =
            CoreTools.Catalog.descriptors.Select(d => new ToolInfo(d)).ToArray();

        /// <summary>
        /// Runs a tool on <paramref name="input"/> (a log file, segment folder or route address; a CSV
        /// for can-bitwatch) and writes its artifacts into <paramref name="outputDirectory"/> (created).
        /// Parameter values may be strings (coerced as the CLI does), numbers, booleans or string lists.
        /// </summary>
        /// <exception cref="ArgumentException">The tool id is unknown.</exception>
        /// <exception cref="ToolParameterException">A parameter is unknown or does not fit.</exception>
        /// <exception cref="ToolInputException">The input or a file parameter cannot be used.</exception>
        /// <exception cref="TimeoutException">The run took longer than <see cref="ToolRunOptions.Timeout"/>.</exception>
        /// <exception cref="OperationCanceledException">The token was cancelled.</exception>
        public static Task<ToolRunResult> RunAsync(
            string toolId,
            string input,
            IReadOnlyDictionary<string, object?> parameters,
            string outputDirectory,
            ToolRunOptions? options = null,
            CancellationToken cancellationToken = default)
        {
            if (input is null) throw new ArgumentNullException(nameof(input));
            return Run(toolId, CoreTools.ToolInput.NewPath(input), parameters, outputDirectory, options, cancellationToken);
        }

        /// <summary>
        /// Runs a tool on log files read in order as one time line (a route's segments kept apart),
        /// as <see cref="RunAsync(string, string, IReadOnlyDictionary{string, object?}, string, ToolRunOptions?, CancellationToken)"/> does.
        /// </summary>
        /// <exception cref="ArgumentException">The tool id is unknown or no file is given.</exception>
        /// <exception cref="ToolParameterException">A parameter is unknown or does not fit.</exception>
        /// <exception cref="ToolInputException">An input or a file parameter cannot be used.</exception>
        /// <exception cref="TimeoutException">The run took longer than <see cref="ToolRunOptions.Timeout"/>.</exception>
        /// <exception cref="OperationCanceledException">The token was cancelled.</exception>
        public static Task<ToolRunResult> RunAsync(
            string toolId,
            IEnumerable<string> inputs,
            IReadOnlyDictionary<string, object?> parameters,
            string outputDirectory,
            ToolRunOptions? options = null,
            CancellationToken cancellationToken = default)
        {
            if (inputs is null) throw new ArgumentNullException(nameof(inputs));
            var files = inputs.ToArray();
            if (files.Length == 0) throw new ArgumentException("no input file", nameof(inputs));
            if (files.Any(f => f is null)) throw new ArgumentException("an input is null", nameof(inputs));
            return Run(toolId, CoreTools.ToolInput.NewFiles(ListModule.OfArray(files)), parameters, outputDirectory, options, cancellationToken);
        }

        private static Task<ToolRunResult> Run(
            string toolId,
            CoreTools.ToolInput input,
            IReadOnlyDictionary<string, object?> parameters,
            string outputDirectory,
            ToolRunOptions? options,
            CancellationToken cancellationToken)
        {
            if (toolId is null) throw new ArgumentNullException(nameof(toolId));
            if (parameters is null) throw new ArgumentNullException(nameof(parameters));
            if (outputDirectory is null) throw new ArgumentNullException(nameof(outputDirectory));
            options ??= new ToolRunOptions();
            if (options.Timeout is { } limit && limit <= TimeSpan.Zero)
                throw new ArgumentOutOfRangeException(nameof(options), "the timeout must be positive");

            var given = ToolInputs.Of(parameters);
            // Unknown tools and bad parameters are the caller's mistake: thrown now, not from the task.
            var prepared = CoreTools.ToolRunner.prepare(toolId, given);
            if (prepared.IsError) throw ToolInputs.ToException(toolId, prepared.ErrorValue, cancellationToken);

            var progress = options.Progress;
            var log = options.Log;
            var logger = options.Logger;
            var request = new CoreTools.ToolRunRequest(
                toolId,
                input,
                given,
                outputDirectory,
                FuncConvert.FromAction<double>(p => progress?.Report(p)),
                FuncConvert.FromAction<CoreTools.ToolLogLevel, string>((level, line) =>
                {
                    var entry = new ToolLogEntry(DateTimeOffset.UtcNow, ToolLogEntry.LevelOf(level), line);
                    log?.Invoke(entry);
                    logger?.Log(ToolLogEntry.ToLogLevel(entry.Level), "{ToolId}: {Message}", toolId, line);
                }),
                cancellationToken,
                options.Timeout is { } t ? FSharpOption<TimeSpan>.Some(t) : FSharpOption<TimeSpan>.None,
                FuncConvert.FromFunc<string, FSharpResult<string, string>>(CoreTools.ToolRunner.localFiles),
                FuncConvert.FromFunc<string, string>(path => path));

            return Execute(prepared.ResultValue);

            // A tool blocked in a read that the token cannot reach is left after a grace period,
            // so the returned task ends on cancellation all the same.
            async Task<ToolRunResult> Execute(CoreTools.PreparedRun ready)
            {
                var result = await CoreTools.ToolRunner
                    .executeAsync(CoreTools.ToolRunner.StopGrace, request, ready)
                    .ConfigureAwait(false);
                if (result.IsOk) return new ToolRunResult(result.ResultValue);
                throw ToolInputs.ToException(toolId, result.ErrorValue, cancellationToken);
            }
        }
    }

    /// <summary>Parameters and errors between C# values and the core's.</summary>
    internal static class ToolInputs
    {
        internal static FSharpList<Tuple<string, CoreTools.ParameterInput>> Of(IReadOnlyDictionary<string, object?> parameters) =>
            ListModule.OfSeq(parameters.Select(kv => Tuple.Create(kv.Key, ToInput(kv.Value))));

        internal static Exception ToException(string id, CoreTools.ToolError error, CancellationToken token) =>
            error switch
            {
                CoreTools.ToolError.UnknownTool => new ArgumentException(
                    CoreTools.ToolErrorModule.describe(error), "toolId"),
                CoreTools.ToolError.InvalidParameters invalid => new ToolParameterException(
                    id, invalid.Item.Select(e => new ToolParameterError(e.Parameter, e.Detail)).ToArray()),
                CoreTools.ToolError.TimedOut => new TimeoutException(CoreTools.ToolErrorModule.describe(error)),
                _ when error.IsCanceled => new OperationCanceledException(token),
                _ => new ToolInputException(CoreTools.ToolErrorModule.describe(error)),
            };

        private static CoreTools.ParameterInput ToInput(object? value) => value switch
        {
            null => CoreTools.ParameterInput.Null,
            string s => CoreTools.ParameterInput.NewText(s),
            bool b => CoreTools.ParameterInput.NewFlag(b),
            IEnumerable<string> items => CoreTools.ParameterInput.NewItems(
                ListModule.OfSeq(items.Select(CoreTools.ParameterInput.NewText))),
            IConvertible c when c is not char => CoreTools.ParameterInput.NewNumber(
                c.ToDouble(CultureInfo.InvariantCulture)),
            _ => CoreTools.ParameterInput.NewText(Convert.ToString(value, CultureInfo.InvariantCulture) ?? ""),
        };
    }
}
