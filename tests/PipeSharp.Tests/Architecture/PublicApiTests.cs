namespace PipeSharp.Tests.Architecture;

/// <summary>
/// The public types of the library, listed in PublicTypes.txt (next to this file), so that the public API grows only
/// on purpose: a type made public, or no longer public, fails here until the list says so.
/// </summary>
public class PublicApiTests
{
    private static string ListFile => Path.GetFullPath(Path.Combine(AppContext.BaseDirectory, "..", "..", "..", "Architecture", "PublicTypes.txt"));

    [Fact]
    public void The_public_types_are_the_listed_ones()
    {
        var actual = typeof(PipeSharp.Runtime.Pipeline).Assembly.GetExportedTypes()
            .Select(t => t.FullName!.Replace('+', '.'))
            .Order(StringComparer.Ordinal)
            .ToList();
        var listed = File.ReadAllLines(ListFile).Select(l => l.Trim()).Where(l => l.Length > 0 && !l.StartsWith('#')).ToList();
        var added = actual.Except(listed).ToList();
        var removed = listed.Except(actual).ToList();
        Assert.True(added.Count == 0 && removed.Count == 0,
            $"the public types differ from {ListFile}:\n" +
            (added.Count > 0 ? "  public but not listed (make it internal, or add it to the list on purpose):\n    " + string.Join("\n    ", added) + "\n" : "") +
            (removed.Count > 0 ? "  listed but not public:\n    " + string.Join("\n    ", removed) + "\n" : ""));
    }

    [Fact]
    public void Every_public_type_is_documented()
    {
        var xml = Path.Combine(AppContext.BaseDirectory, "PipeSharp.xml");
        Assert.True(File.Exists(xml), $"{xml} is missing: the library's documentation file is not copied next to the tests.");
        string doc = File.ReadAllText(xml);
        var undocumented = typeof(PipeSharp.Runtime.Pipeline).Assembly.GetExportedTypes()
            .Where(t => !doc.Contains($"<member name=\"T:{t.FullName!.Replace('+', '.')}\">", StringComparison.Ordinal))
            .Select(t => t.FullName).ToList();
        Assert.True(undocumented.Count == 0, "public types without an XML doc comment: " + string.Join(", ", undocumented));
    }
}
