using System.Text.Json;

namespace PipeSharp.Planning;

/// <summary>
/// Keeps measured profiles as small JSON files, one per key (<see cref="ModelProfiler.KeyOf(Construction.ModelSpec, TorchSharp.torch.Tensor, int, string)"/>),
/// in a folder: by default <c>~/.cache/pipesharp/profiles</c> (<c>$XDG_CACHE_HOME/pipesharp/profiles</c> when set; the local
/// application data folder on Windows). A second profile of the same model, micro-batch, device, threads and processor
/// reads its file and measures nothing.
/// </summary>
/// <remarks>
/// A file that cannot be read or parsed, or that holds another key, is an error (an <see cref="InvalidDataException"/>
/// naming the file and the fix: delete it, or re-profile), never silently measured again. Files are written whole
/// (to a temporary name, then renamed), so a run stopped half way leaves no broken file.
/// </remarks>
public sealed class ProfileCache
{
    private static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    /// <summary>A cache in <paramref name="folder"/> (null: <see cref="DefaultFolder"/>); the folder is made when first written.</summary>
    public ProfileCache(string? folder = null)
    {
        Folder = Path.GetFullPath(folder ?? DefaultFolder);
    }

    /// <summary>The folder of the files.</summary>
    public string Folder { get; }

    /// <summary>
    /// True to measure again and overwrite what the cache holds (after a change the key does not see, e.g. another
    /// optimizer, or to replace a corrupt file). Default false.
    /// </summary>
    public bool Reprofile { get; init; }

    /// <summary><c>$XDG_CACHE_HOME/pipesharp/profiles</c>, or <c>~/.cache/pipesharp/profiles</c> (Windows: the local application data folder).</summary>
    public static string DefaultFolder
    {
        get
        {
            string? xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
            string root = !string.IsNullOrEmpty(xdg) ? xdg
                : OperatingSystem.IsWindows() ? Environment.GetFolderPath(Environment.SpecialFolder.LocalApplicationData)
                : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
            return Path.Combine(root, "pipesharp", "profiles");
        }
    }

    /// <summary>The file of <paramref name="key"/>.</summary>
    public string PathOf(string key) => Path.Combine(Folder, key + ".json");

    /// <summary>The cached profile of <paramref name="key"/>, or null if there is none (or <see cref="Reprofile"/> is set).</summary>
    /// <exception cref="InvalidDataException">The file exists but cannot be read.</exception>
    public ModelProfile? TryRead(string key) => TryRead<ModelProfile>(key, p => p.Key);

    /// <summary>The cached profile of <paramref name="key"/>, or <paramref name="measure"/>'s, which is then written.</summary>
    /// <exception cref="InvalidDataException">The file exists but cannot be read: nothing was measured.</exception>
    public ModelProfile GetOrMeasure(string key, Func<ModelProfile> measure) => GetOrMeasure(key, measure, p => p.Key);

    /// <summary>
    /// Reads every existing file of <paramref name="keys"/>, so that a corrupt one is reported before any measuring
    /// starts (a plan needs several profiles).
    /// </summary>
    /// <exception cref="InvalidDataException">A file exists but cannot be read.</exception>
    public void CheckReadable(IEnumerable<string> keys)
    {
        foreach (var key in keys) TryRead(key);
    }

    internal T GetOrMeasure<T>(string key, Func<T> measure, Func<T, string> keyOf) where T : class
    {
        if (TryRead(key, keyOf) is { } cached) return cached;
        var value = measure();
        Write(key, value);
        return value;
    }

    internal T? TryRead<T>(string key, Func<T, string> keyOf) where T : class
    {
        string path = PathOf(key);
        if (Reprofile || !File.Exists(path)) return null;
        try
        {
            var value = JsonSerializer.Deserialize<T>(File.ReadAllText(path), Json)
                        ?? throw new JsonException("the file holds null");
            if (keyOf(value) != key) throw new JsonException($"it holds the profile of key '{keyOf(value)}', not '{key}'");
            return value;
        }
        catch (Exception e) when (e is JsonException or IOException or UnauthorizedAccessException or NotSupportedException or ArgumentException)
        {
            throw new InvalidDataException(
                $"the profile cache file {path} cannot be read ({e.Message}): delete it (or the folder {Folder}), or profile again " +
                "(CLI: --reprofile; library: ProfileCache with Reprofile = true), which overwrites it.", e);
        }
    }

    internal void Write<T>(string key, T value)
    {
        Directory.CreateDirectory(Folder);
        string path = PathOf(key), temporary = path + $".{Environment.ProcessId}.tmp";
        File.WriteAllText(temporary, JsonSerializer.Serialize(value, Json));
        File.Move(temporary, path, overwrite: true);
    }
}
