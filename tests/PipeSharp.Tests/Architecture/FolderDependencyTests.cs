using System.Text.RegularExpressions;

namespace PipeSharp.Tests.Architecture;

/// <summary>
/// The folders of src/PipeSharp (one concern each) depend on each other without a cycle, read from the source: a
/// folder depends on another when one of its files says <c>using PipeSharp.X</c>, names <c>PipeSharp.X.Something</c>,
/// or names a type declared in folder X as <c>X.Type</c> (as a namespace-relative name or in a doc comment's cref).
/// </summary>
public class FolderDependencyTests
{
    /// <summary>src/PipeSharp of this repository (the tests run from tests/PipeSharp.Tests/bin/&lt;Configuration&gt;/&lt;tfm&gt;/).</summary>
    internal static string LibrarySource =>
        Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "..", "..", "src", "PipeSharp"));

    internal static IReadOnlyDictionary<string, IReadOnlyList<string>> SourceFilesByFolder()
    {
        var result = new Dictionary<string, IReadOnlyList<string>>();
        foreach (var folder in Directory.GetDirectories(LibrarySource))
        {
            string name = Path.GetFileName(folder);
            if (name is "bin" or "obj") continue;
            result[name] = Directory.GetFiles(folder, "*.cs", SearchOption.AllDirectories).Order(StringComparer.Ordinal).ToList();
        }
        return result;
    }

    /// <summary>Each folder's dependencies on the others, with one piece of evidence (file:line: text) per edge.</summary>
    internal static Dictionary<string, Dictionary<string, string>> Dependencies()
    {
        var files = SourceFilesByFolder();
        var declared = files.ToDictionary(f => f.Key, f => f.Value
            .SelectMany(file => Regex.Matches(File.ReadAllText(file), @"\b(?:class|struct|interface|enum|record)\s+(?:struct\s+|class\s+)?([A-Z]\w*)")
                .Select(m => m.Groups[1].Value))
            .ToHashSet());
        var graph = files.Keys.ToDictionary(f => f, _ => new Dictionary<string, string>());
        foreach (var (folder, paths) in files)
        foreach (var path in paths)
        {
            var lines = File.ReadAllLines(path);
            for (int i = 0; i < lines.Length; i++)
            foreach (var other in files.Keys.Where(o => o != folder))
            {
                string line = lines[i];
                bool uses = Regex.IsMatch(line, $@"^\s*using\s+(static\s+)?PipeSharp\.{other}(\.|;)")
                            || Regex.IsMatch(line, $@"\bPipeSharp\.{other}\.")
                            || Regex.Matches(line, $@"(?<![\w.]){other}\.([A-Z]\w*)").Any(m => declared[other].Contains(m.Groups[1].Value));
                if (uses) graph[folder].TryAdd(other, $"{Path.GetRelativePath(LibrarySource, path)}:{i + 1}: {line.Trim()}");
            }
        }
        return graph;
    }

    [Fact]
    public void No_two_folders_depend_on_each_other_in_a_cycle()
    {
        var graph = Dependencies();
        var cycles = new List<string>();
        foreach (var start in graph.Keys.Order(StringComparer.Ordinal))
        {
            // A path back to start through folders that sort after it: each cycle is reported once, from its smallest folder.
            var path = new Stack<string>();
            void Visit(string at)
            {
                path.Push(at);
                foreach (var next in graph[at].Keys.Order(StringComparer.Ordinal))
                {
                    if (next == start)
                        cycles.Add(string.Join(" -> ", path.Reverse().Append(start)) + "\n    " +
                                   string.Join("\n    ", path.Reverse().Append(start).Zip(path.Reverse().Skip(1).Append(start), (a, b) => graph[a][b])));
                    else if (string.CompareOrdinal(next, start) > 0 && !path.Contains(next))
                        Visit(next);
                }
                path.Pop();
            }
            Visit(start);
        }
        Assert.True(cycles.Count == 0, "folders of src/PipeSharp that depend on each other in a cycle:\n" + string.Join("\n", cycles));
    }

    [Fact]
    public void The_dependency_reader_sees_usings_qualified_names_and_relative_type_names()
    {
        var graph = Dependencies();
        Assert.Contains("Schedules", graph["Runtime"].Keys);     // using PipeSharp.Schedules;
        Assert.Contains("Backends", graph["Mpi"].Keys);          // MpiCluster implements Backends.IBackend
        Assert.Contains("Partitioning", graph["Runtime"].Keys);
        Assert.DoesNotContain("Runtime", graph["Schedules"].Keys);
    }

    [Fact]
    public void Runtime_and_checkpoints_talk_to_the_backend_seam_not_to_MPI()
    {
        var graph = Dependencies();
        Assert.DoesNotContain("Mpi", graph["Runtime"].Keys);
        Assert.DoesNotContain("Mpi", graph["Checkpoints"].Keys);
        var named = SourceFilesByFolder().Where(f => f.Key is "Runtime" or "Checkpoints").SelectMany(f => f.Value)
            .Where(file => File.ReadAllText(file).Contains("Mpi", StringComparison.Ordinal)).ToList();
        Assert.True(named.Count == 0, "files that name MPI types: " + string.Join(", ", named));
    }
}
