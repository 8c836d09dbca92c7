using System.Text.Json;
using System.Text.RegularExpressions;

namespace ImapProxy.FunctionalTests.Telemetry;

/// <summary>
/// Just enough PromQL and file reading to find which metrics and labels a dashboard or a rule file uses, and
/// which ones a scrape holds. Not a parser: it removes what cannot be a metric name (strings, label matchers,
/// grouping clauses, ranges) and reads the identifiers that are left.
/// </summary>
internal static partial class PromQl
{
    /// <summary>Labels Prometheus adds to every series (target labels) or that every histogram bucket has.</summary>
    public static readonly IReadOnlySet<string> ImplicitLabels = new HashSet<string>(StringComparer.Ordinal) { "job", "instance", "le", "__name__" };

    /// <summary>Every PromQL expression of a Grafana dashboard: panel targets (rows included) and variable queries.</summary>
    public static List<string> DashboardExpressions(string dashboardJson)
    {
        using var document = JsonDocument.Parse(dashboardJson);
        var expressions = new List<string>();
        void Panels(JsonElement panels)
        {
            foreach (var panel in panels.EnumerateArray())
            {
                if (panel.TryGetProperty("targets", out var targets))
                {
                    expressions.AddRange(targets.EnumerateArray()
                        .Where(t => t.TryGetProperty("expr", out _))
                        .Select(t => t.GetProperty("expr").GetString() ?? ""));
                }

                if (panel.TryGetProperty("panels", out var nested))
                {
                    Panels(nested);
                }
            }
        }

        Panels(document.RootElement.GetProperty("panels"));
        foreach (var variable in document.RootElement.GetProperty("templating").GetProperty("list").EnumerateArray())
        {
            if (variable.GetProperty("type").GetString() == "query")
            {
                // label_values(<series selector>, <label>): the selector is PromQL.
                var query = variable.GetProperty("query");
                var text = query.ValueKind == JsonValueKind.Object ? query.GetProperty("query").GetString() ?? "" : query.GetString() ?? "";
                expressions.Add(LabelValuesRegex().Match(text) is { Success: true } call ? call.Groups["selector"].Value : text);
            }
        }

        return expressions;
    }

    /// <summary>Every <c>{{label}}</c> a dashboard's legends refer to.</summary>
    public static HashSet<string> DashboardLegendLabels(string dashboardJson)
    {
        using var document = JsonDocument.Parse(dashboardJson);
        var labels = new HashSet<string>(StringComparer.Ordinal);
        void Panels(JsonElement panels)
        {
            foreach (var panel in panels.EnumerateArray())
            {
                foreach (var target in panel.TryGetProperty("targets", out var targets) ? targets.EnumerateArray() : default)
                {
                    if (target.TryGetProperty("legendFormat", out var legend))
                    {
                        labels.UnionWith(LegendLabelRegex().Matches(legend.GetString() ?? "").Select(m => m.Groups[1].Value));
                    }
                }

                if (panel.TryGetProperty("panels", out var nested))
                {
                    Panels(nested);
                }
            }
        }

        Panels(document.RootElement.GetProperty("panels"));
        return labels;
    }

    /// <summary>
    /// Every <c>expr:</c> of a Prometheus rule file, single-line or a block scalar (<c>|</c>, <c>&gt;</c>): the
    /// lines indented deeper than the key.
    /// </summary>
    public static List<string> RuleExpressions(string rulesYaml)
    {
        var lines = rulesYaml.Replace("\r\n", "\n", StringComparison.Ordinal).Split('\n');
        var expressions = new List<string>();
        for (var i = 0; i < lines.Length; i++)
        {
            var match = ExprKeyRegex().Match(lines[i]);
            if (!match.Success)
            {
                continue;
            }

            var value = match.Groups["value"].Value.Trim();
            if (value is not ("|" or "|-" or ">" or ">-"))
            {
                expressions.Add(value.Length > 1 && value[0] is '"' or '\'' && value[^1] == value[0] ? value[1..^1] : value);
                continue;
            }

            var indent = match.Groups["indent"].Value.Length;
            var block = new List<string>();
            while (i + 1 < lines.Length && (lines[i + 1].Trim().Length == 0 || Indent(lines[i + 1]) > indent))
            {
                block.Add(lines[++i].Trim());
            }

            expressions.Add(string.Join('\n', block).Trim());
        }

        return expressions;
    }

    /// <summary>The metric names an expression selects (the identifiers outside matchers, strings and grouping clauses).</summary>
    public static HashSet<string> MetricNames(string expression)
    {
        var bare = Bare(expression);
        return MetricNameRegex().Matches(bare).Select(m => m.Value).ToHashSet(StringComparer.Ordinal);
    }

    /// <summary>The label names an expression uses: in matchers and in by, without, on, ignoring, group_left/right.</summary>
    public static HashSet<string> LabelNames(string expression)
    {
        var noStrings = StringRegex().Replace(expression, "\"\"");
        var labels = new HashSet<string>(StringComparer.Ordinal);
        foreach (Match matcher in MatcherBlockRegex().Matches(noStrings))
        {
            labels.UnionWith(MatcherLabelRegex().Matches(matcher.Value).Select(m => m.Groups[1].Value));
        }

        foreach (Match clause in GroupingRegex().Matches(noStrings))
        {
            labels.UnionWith(IdentifierRegex().Matches(clause.Groups["labels"].Value).Select(m => m.Value));
        }

        return labels;
    }

    /// <summary>
    /// The sample names in a text exposition (<c>name{labels} value</c> lines), which is where a histogram's
    /// <c>_bucket</c>, <c>_sum</c> and <c>_count</c> series appear by those names.
    /// </summary>
    public static HashSet<string> ScrapeSampleNames(string exposition) =>
        ExpositionLines(exposition).Select(line => SampleNameRegex().Match(line).Value).Where(n => n.Length > 0).ToHashSet(StringComparer.Ordinal);

    /// <summary>The metric families (<c># TYPE name kind</c>) of a text exposition, with their kind.</summary>
    public static Dictionary<string, string> ScrapeFamilies(string exposition) =>
        TypeLineRegex().Matches(exposition).ToDictionary(m => m.Groups["name"].Value, m => m.Groups["kind"].Value, StringComparer.Ordinal);

    /// <summary>Every label name on a sample of a text exposition.</summary>
    public static HashSet<string> ScrapeLabelNames(string exposition) =>
        ExpositionLines(exposition)
            .SelectMany(line => ScrapeLabelRegex().Matches(line).Select(m => m.Groups["name"].Value))
            .ToHashSet(StringComparer.Ordinal);

    /// <summary>Every label value on a sample of a text exposition.</summary>
    public static HashSet<string> ScrapeLabelValues(string exposition) =>
        ExpositionLines(exposition)
            .SelectMany(line => ScrapeLabelRegex().Matches(line).Select(m => m.Groups["value"].Value))
            .ToHashSet(StringComparer.Ordinal);

    /// <summary>A Grafana expression as Prometheus can run it: every replica, a one-minute rate window.</summary>
    public static string Substitute(string expression) =>
        expression
            .Replace("$__rate_interval", "1m", StringComparison.Ordinal)
            .Replace("$job", ".+", StringComparison.Ordinal)
            .Replace("$instance", ".+", StringComparison.Ordinal);

    private static IEnumerable<string> ExpositionLines(string exposition) =>
        exposition.Split('\n').Where(line => line.Length > 0 && line[0] != '#');

    /// <summary>The expression without strings, matchers, grouping clauses and ranges: identifiers left are metrics, functions and keywords.</summary>
    private static string Bare(string expression)
    {
        var text = StringRegex().Replace(expression, " ");
        text = MatcherBlockRegex().Replace(text, " ");
        text = GroupingRegex().Replace(text, " ");
        return RangeRegex().Replace(text, " ");
    }

    private static int Indent(string line) => line.Length - line.TrimStart(' ').Length;

    [GeneratedRegex(@"^label_values\((?<selector>.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)$")]
    private static partial Regex LabelValuesRegex();

    [GeneratedRegex(@"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")]
    private static partial Regex LegendLabelRegex();

    [GeneratedRegex(@"^(?<indent>\s*)(?:-\s+)?expr:(?<value>.*)$")]
    private static partial Regex ExprKeyRegex();

    [GeneratedRegex(@"""(?:[^""\\]|\\.)*""|'(?:[^'\\]|\\.)*'|`[^`]*`")]
    private static partial Regex StringRegex();

    [GeneratedRegex(@"\{[^{}]*\}")]
    private static partial Regex MatcherBlockRegex();

    [GeneratedRegex(@"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")]
    private static partial Regex MatcherLabelRegex();

    [GeneratedRegex(@"\b(?:by|without|on|ignoring|group_left|group_right)\s*\((?<labels>[^()]*)\)")]
    private static partial Regex GroupingRegex();

    [GeneratedRegex(@"\[[^\[\]]*\]")]
    private static partial Regex RangeRegex();

    [GeneratedRegex(@"[A-Za-z_][A-Za-z0-9_]*")]
    private static partial Regex IdentifierRegex();

    [GeneratedRegex(@"(?<![A-Za-z0-9_:])(?:imapproxy_[a-z_]+|target_info)(?![A-Za-z0-9_:(])")]
    private static partial Regex MetricNameRegex();

    [GeneratedRegex(@"^[A-Za-z_:][A-Za-z0-9_:]*")]
    private static partial Regex SampleNameRegex();

    [GeneratedRegex(@"^# TYPE (?<name>\S+) (?<kind>\S+)", RegexOptions.Multiline)]
    private static partial Regex TypeLineRegex();

    [GeneratedRegex(@"(?<name>[A-Za-z_][A-Za-z0-9_]*)=""(?<value>(?:[^""\\]|\\.)*)""")]
    private static partial Regex ScrapeLabelRegex();
}
