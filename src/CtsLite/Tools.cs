using System;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Linq;
using System.Threading;
using System.Threading.Tasks;
using Microsoft.FSharp.Collections;
using Microsoft.FSharp.Core;
using CoreTools = CtsLite.Tools;

namespace CtsLite
{
    /// <summary>One parameter of a tool, as the capabilities list it.</summary>
    public sealed class ToolParameterInfo
    {
        internal ToolParameterInfo(CoreTools.ParameterSpec spec)
        {
            Name = spec.Name;
            Type = CoreTools.ParameterTypeModule.name(spec.Type);
            Default = spec.Default == null ? null : ToObject(spec.Default.Value);
            Description = spec.Description;
            Choices = spec.Choices.ToArray();
            Required = spec.Required;
            Min = spec.Min == null ? null : spec.Min.Value;
            Max = spec.Max == null ? null : spec.Max.Value;
        }

        /// <summary>The parameter's name, e.g. <c>speed_min</c>.</summary>
        public string Name { get; }

        /// <summary><c>str</c>, <c>int</c>, <c>float</c>, <c>bool</c>, <c>list</c> or <c>file</c>.</summary>
        public string Type { get; }

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
            Category = CoreTools.ToolCategoryModule.name(d.Category);
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

        /// <summary><c>analyzer</c>, <c>converter</c>, <c>exporter</c> or <c>monitor</c>.</summary>
        public string Category { get; }

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
        internal ToolRunResult(string outputDirectory, CoreTools.ToolOutput output)
        {
            OutputDirectory = outputDirectory;
            Artifacts = output.Artifacts.ToArray();
            Summary = output.Summary;
            Warnings = output.Warnings.ToArray();
        }

        /// <summary>The folder holding the artifacts.</summary>
        public string OutputDirectory { get; }

        /// <summary>Artifact file names, relative to <see cref="OutputDirectory"/>.</summary>
        public IReadOnlyList<string> Artifacts { get; }

        /// <summary>One line for people: what was found.</summary>
        public string Summary { get; }

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
        /// <exception cref="OperationCanceledException">The token was cancelled.</exception>
        public static Task<ToolRunResult> RunAsync(
            string toolId,
            string input,
            IReadOnlyDictionary<string, object?> parameters,
            string outputDirectory,
            IProgress<double>? progress = null,
            Action<string>? log = null,
            CancellationToken cancellationToken = default)
        {
            if (toolId is null) throw new ArgumentNullException(nameof(toolId));
            if (input is null) throw new ArgumentNullException(nameof(input));
            if (parameters is null) throw new ArgumentNullException(nameof(parameters));
            if (outputDirectory is null) throw new ArgumentNullException(nameof(outputDirectory));

            var given = ListModule.OfSeq(parameters.Select(kv => Tuple.Create(kv.Key, ToInput(kv.Value))));
            // Unknown tools and bad parameters are the caller's mistake: thrown now, not from the task.
            var prepared = CoreTools.ToolRunner.prepare(toolId, given);
            if (prepared.IsError) throw ToException(toolId, prepared.ErrorValue, cancellationToken);

            var request = new CoreTools.ToolRunRequest(
                toolId,
                CoreTools.ToolInput.NewPath(input),
                given,
                outputDirectory,
                FuncConvert.FromAction<double>(p => progress?.Report(p)),
                FuncConvert.FromAction<CoreTools.ToolLogLevel, string>((level, line) =>
                    log?.Invoke($"{level.ToString().ToLowerInvariant()}: {line}")),
                cancellationToken,
                FSharpOption<TimeSpan>.None,
                FuncConvert.FromFunc<string, FSharpResult<string, string>>(CoreTools.ToolRunner.localFiles),
                FuncConvert.FromFunc<string, string>(path => path));

            return Run(prepared.ResultValue);

            // A tool blocked in a read that the token cannot reach is left after a grace period,
            // so the returned task ends on cancellation all the same.
            async Task<ToolRunResult> Run(CoreTools.PreparedRun ready)
            {
                var result = await CoreTools.ToolRunner
                    .executeAsync(CoreTools.ToolRunner.StopGrace, request, ready)
                    .ConfigureAwait(false);
                if (result.IsOk) return new ToolRunResult(result.ResultValue.OutputDir, result.ResultValue.Output);
                throw ToException(toolId, result.ErrorValue, cancellationToken);
            }
        }

        private static Exception ToException(string toolId, CoreTools.ToolError error, CancellationToken token) =>
            error switch
            {
                CoreTools.ToolError.UnknownTool => new ArgumentException(
                    CoreTools.ToolErrorModule.describe(error), nameof(toolId)),
                CoreTools.ToolError.InvalidParameters invalid => new ToolParameterException(
                    toolId, invalid.Item.Select(e => new ToolParameterError(e.Parameter, e.Detail)).ToArray()),
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
