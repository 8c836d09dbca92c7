using System.Text;
using System.Text.RegularExpressions;

namespace ImapProxy.Tests.Delivery;

/// <summary>One Dockerfile instruction, continuation lines joined and comments dropped (as the builder reads it).</summary>
internal sealed record DockerInstruction(string Keyword, string Arguments, int Stage);

/// <summary>The repository's Dockerfile and .dockerignore, read well enough to check them without a Docker engine.</summary>
internal static partial class Dockerfile
{
    public static IReadOnlyList<DockerInstruction> Instructions { get; } = Parse(File.ReadAllText(Repository.Path("Dockerfile")));

    public static IEnumerable<DockerInstruction> FinalStage => Instructions.Where(i => i.Stage == Instructions[^1].Stage);

    /// <summary>Whether the build context (after .dockerignore) contains a path relative to the repository root.</summary>
    public static bool InContext(string path)
    {
        path = path.Replace('\\', '/').Trim('/');
        var included = true;
        foreach (var line in File.ReadLines(Repository.Path(".dockerignore")))
        {
            var rule = line.Trim();
            if (rule.Length == 0 || rule.StartsWith('#'))
            {
                continue;
            }

            var negated = rule.StartsWith('!');
            var pattern = PatternToRegex(rule.TrimStart('!').Trim('/'));
            // Like Docker: a rule that matches a parent directory matches everything below it.
            var parts = path.Split('/');
            for (var length = 1; length <= parts.Length; length++)
            {
                if (pattern.IsMatch(string.Join('/', parts[..length])))
                {
                    included = negated;
                    break;
                }
            }
        }

        return included;
    }

    private static Regex PatternToRegex(string pattern)
    {
        var regex = new StringBuilder("^");
        for (var i = 0; i < pattern.Length; i++)
        {
            if (pattern[i] == '*' && i + 1 < pattern.Length && pattern[i + 1] == '*')
            {
                var slash = i + 2 < pattern.Length && pattern[i + 2] == '/';
                regex.Append(slash ? "(.*/)?" : ".*");
                i += slash ? 2 : 1;
            }
            else
            {
                regex.Append(pattern[i] switch
                {
                    '*' => "[^/]*",
                    '?' => "[^/]",
                    var c => Regex.Escape(c.ToString()),
                });
            }
        }

        return new Regex(regex.Append('$').ToString(), RegexOptions.CultureInvariant);
    }

    private static List<DockerInstruction> Parse(string text)
    {
        var instructions = new List<DockerInstruction>();
        var stage = -1;
        var current = new StringBuilder();
        foreach (var raw in text.Split('\n'))
        {
            var line = raw.TrimEnd('\r');
            if (line.TrimStart().StartsWith('#') || (current.Length == 0 && line.Trim().Length == 0))
            {
                continue;
            }

            if (line.EndsWith('\\'))
            {
                current.Append(line.AsSpan(0, line.Length - 1)).Append(' ');
                continue;
            }

            current.Append(line);
            var instruction = current.ToString().Trim();
            current.Clear();
            var match = InstructionPattern().Match(instruction);
            var keyword = match.Groups[1].Value.ToUpperInvariant();
            if (keyword == "FROM")
            {
                stage++;
            }

            instructions.Add(new DockerInstruction(keyword, match.Groups[2].Value.Trim(), stage));
        }

        return instructions;
    }

    [GeneratedRegex(@"^(\w+)\s+(.*)$", RegexOptions.Singleline)]
    private static partial Regex InstructionPattern();
}
