using System.Diagnostics;
using System.Globalization;
using System.IO.Compression;
using System.Reflection;
using System.Text;
using System.Text.RegularExpressions;
using PipeSharp.Tests.Mpi;

namespace PipeSharp.Tests.Packaging;

/// <summary>
/// Package tests run alone: they start the .NET SDK (pack, restore, build), which takes both cores for a while and
/// would disturb the timing of other tests.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class PackagingCollection
{
    public const string Name = "NuGet package";
}

/// <summary>
/// The library packed as a NuGet package once for this test class, under a version of its own
/// (0.1.0-test.TICKS, so NuGet's global packages folder never serves a stale copy); removed from that folder afterwards.
/// </summary>
public sealed class PackedLibrary : IDisposable
{
    public PackedLibrary()
    {
        // tests/PipeSharp.Tests/bin/<Configuration>/<tfm>/
        var here = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        TargetFramework = here.Name;
        Configuration = here.Parent!.Name;
        RepositoryRoot = here.Parent!.Parent!.Parent!.Parent!.Parent!.FullName;
        Version = $"0.1.0-test.{DateTime.UtcNow.Ticks}";
        Work = Directory.CreateTempSubdirectory("pipesharp-package-").FullName;
        Feed = Directory.CreateDirectory(Path.Combine(Work, "feed")).FullName;

        // --no-build: pack the library exactly as `dotnet test` built it (src/PipeSharp/bin/<Configuration>), without
        // rebuilding anything while the test host runs. The version is the package's only; the assembly keeps its own.
        Pack = PackageTests.Dotnet(
            $"pack \"{Path.Combine(RepositoryRoot, "src", "PipeSharp", "PipeSharp.csproj")}\" -c {Configuration} --no-build " +
            $"-o \"{Feed}\" -p:Version={Version} -nodeReuse:false -tl:off",
            RepositoryRoot, TimeSpan.FromMinutes(3));
    }

    public string RepositoryRoot { get; }
    public string Configuration { get; }
    public string TargetFramework { get; }
    public string Version { get; }

    /// <summary>A temporary folder outside the repository (no Directory.Build.props/targets above it).</summary>
    public string Work { get; }

    /// <summary>The local package source that the consumer projects use, beside the machine's usual sources.</summary>
    public string Feed { get; }

    public PackageTests.Outcome Pack { get; }

    public string Package => Path.Combine(Feed, $"PipeSharp.{Version}.nupkg");

    public void Dispose()
    {
        string packages = Environment.GetEnvironmentVariable("NUGET_PACKAGES")
                          ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var extracted = Path.Combine(packages, "pipesharp", Version.ToLowerInvariant());
        if (Directory.Exists(extracted)) Directory.Delete(extracted, recursive: true);
        Directory.Delete(Work, recursive: true);
    }
}

/// <summary>
/// The NuGet package as a user gets it: packed from this build, referenced by a new console project outside the
/// repository together with a LibTorch backend, built (the package's own build step makes TorchSharp load on
/// Debian 12), and run.
/// </summary>
[Collection(PackagingCollection.Name)]
public class PackageTests(PackedLibrary packed) : IClassFixture<PackedLibrary>
{
    public sealed record Outcome(string Command, int ExitCode, string Output)
    {
        public override string ToString() => $"`dotnet {Command}` exited with {ExitCode}:\n{Output}";
    }

    /// <summary>Runs the .NET SDK in <paramref name="directory"/>; kills it (and fails) after <paramref name="timeout"/>.</summary>
    internal static Outcome Dotnet(string arguments, string directory, TimeSpan timeout)
    {
        var info = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet", arguments)
        {
            WorkingDirectory = directory,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        // Not the test host's MSBuild settings (dotnet test sets some); no build servers left running afterwards.
        foreach (var key in info.Environment.Keys.Where(k => k.StartsWith("MSBuild", StringComparison.OrdinalIgnoreCase)).ToList())
            info.Environment.Remove(key);
        info.Environment["MSBUILDDISABLENODEREUSE"] = "1";
        info.Environment["DOTNET_CLI_USE_MSBUILD_SERVER"] = "0";
        info.Environment["UseSharedCompilation"] = "false";
        info.Environment["DOTNET_CLI_TELEMETRY_OPTOUT"] = "1";
        info.Environment["DOTNET_NOLOGO"] = "1";
        info.Environment["DOTNET_SKIP_FIRST_TIME_EXPERIENCE"] = "1";

        var output = new StringBuilder();
        using var process = MpiJob.StartCollecting(info, output);
        if (!process.WaitForExit(timeout))
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
            Assert.Fail($"`dotnet {arguments}` in {directory} did not finish within {timeout.TotalSeconds:F0} s:\n{output}");
        }
        process.WaitForExit(); // the output readers
        lock (output) return new Outcome(arguments, process.ExitCode, output.ToString());
    }

    private static string Metadata(string key) =>
        typeof(PackageTests).Assembly.GetCustomAttributes<AssemblyMetadataAttribute>().Single(a => a.Key == key).Value!;

    /// <summary>A console project in its own folder under <see cref="PackedLibrary.Work"/>, with a nuget.config adding the local feed.</summary>
    private string Consumer(string name, bool withBackend, string program)
    {
        var folder = Directory.CreateDirectory(Path.Combine(packed.Work, name)).FullName;
        File.WriteAllText(Path.Combine(folder, "nuget.config"), $"""
            <?xml version="1.0" encoding="utf-8"?>
            <configuration>
              <packageSources>
                <add key="pipesharp-under-test" value="{packed.Feed}" />
              </packageSources>
            </configuration>
            """);
        string backend = withBackend
            ? $"""<PackageReference Include="{Metadata("LibTorchPackage")}" Version="{Metadata("LibTorchVersion")}" />"""
            : "";
        File.WriteAllText(Path.Combine(folder, name + ".csproj"), $"""
            <Project Sdk="Microsoft.NET.Sdk">
              <PropertyGroup>
                <OutputType>Exe</OutputType>
                <TargetFramework>{packed.TargetFramework}</TargetFramework>
                <Nullable>enable</Nullable>
                <ImplicitUsings>enable</ImplicitUsings>
              </PropertyGroup>
              <ItemGroup>
                <PackageReference Include="PipeSharp" Version="{packed.Version}" />
                {backend}
              </ItemGroup>
            </Project>
            """);
        File.WriteAllText(Path.Combine(folder, "Program.cs"), program);
        return folder;
    }

    private void AssertPacked() => Assert.True(packed.Pack.ExitCode == 0 && File.Exists(packed.Package), packed.Pack.ToString());

    private Outcome Build(string folder) =>
        Dotnet($"build -c {packed.Configuration} -nodeReuse:false -tl:off -p:UseSharedCompilation=false", folder, TimeSpan.FromMinutes(8));

    private Outcome Run(string folder) =>
        Dotnet($"run -c {packed.Configuration} --no-build", folder, TimeSpan.FromMinutes(3));

    [Fact]
    public void The_package_holds_the_library_its_docs_readme_and_build_step_and_no_native_backend()
    {
        AssertPacked();
        using var zip = ZipFile.OpenRead(packed.Package);
        var entries = zip.Entries.Select(e => e.FullName).ToHashSet();
        foreach (var expected in new[]
                 {
                     $"lib/{packed.TargetFramework}/PipeSharp.dll", $"lib/{packed.TargetFramework}/PipeSharp.xml", "README.md",
                     "buildTransitive/PipeSharp.targets", "buildTransitive/PatchLibTorchSharp.cs",
                 })
            Assert.True(entries.Contains(expected), $"{expected} is not in the package: {string.Join(", ", entries)}");

        // One copy of the build step: the package ships the very files the repository builds with.
        foreach (var file in new[] { "PipeSharp.targets", "PatchLibTorchSharp.cs" })
        {
            using var packedFile = new StreamReader(zip.GetEntry("buildTransitive/" + file)!.Open());
            Assert.Equal(File.ReadAllText(Path.Combine(packed.RepositoryRoot, "build", file)), packedFile.ReadToEnd());
        }

        using var nuspecReader = new StreamReader(zip.GetEntry("PipeSharp.nuspec")!.Open());
        string nuspec = nuspecReader.ReadToEnd();
        Assert.Contains("<license type=\"expression\">MIT</license>", nuspec);
        Assert.Contains("<readme>README.md</readme>", nuspec);
        Assert.Contains($"<version>{packed.Version}</version>", nuspec);
        Assert.Matches("<dependency id=\"TorchSharp\" version=\"[0-9.]+\"", nuspec);
        // The backend is the user's choice: no libtorch-* and no TorchSharp-cpu/-cuda combination package.
        Assert.DoesNotMatch("id=\"(libtorch|TorchSharp-)", nuspec);
    }

    private const string TrainingProgram = """
        using System.Globalization;
        using PipeSharp.Runtime;
        using TorchSharp;
        using static TorchSharp.torch;

        torch.manual_seed(20261201);
        var model = nn.Sequential(
            ("0", nn.Sequential(nn.Linear(16, 64), nn.ReLU())),
            ("1", nn.Sequential(nn.Linear(64, 64), nn.ReLU())),
            ("2", nn.Sequential(nn.Linear(64, 64), nn.ReLU())),
            ("3", nn.Linear(64, 4)));
        var x = torch.randn(64, 16);
        var y = x.narrow(1, 0, 4).argmax(1);          // a class the model can learn from the input
        using var pipe = new Pipeline(model,
            new PipelineOptions { Balance = [2, 2], Devices = ["cpu", "cpu"], MicroBatches = 4, Schedule = "1f1b" },
            loss: (output, target) => nn.functional.cross_entropy(output, target),
            optimizer: parameters => optim.Adam(parameters, lr: 3e-3));
        float first = float.NaN, last = float.NaN;
        for (int step = 0; step < 20; step++)
        {
            using var scope = torch.NewDisposeScope();
            last = pipe.TrainStep(x, y);
            if (step == 0) first = last;
        }
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"stages {pipe.Stages.Count}"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"first loss {first:R}"));
        Console.WriteLine(string.Create(CultureInfo.InvariantCulture, $"last loss {last:R}"));
        """;

    [Fact]
    public void A_new_project_with_the_package_and_libtorch_cpu_trains_a_two_stage_pipeline()
    {
        AssertPacked();
        var folder = Consumer("consumer", withBackend: true, TrainingProgram);
        Assert.False(Path.GetFullPath(folder).StartsWith(packed.RepositoryRoot + Path.DirectorySeparatorChar), "the consumer must live outside the repository");

        var build = Build(folder);
        Assert.True(build.ExitCode == 0, build.ToString());
        Assert.DoesNotContain("PIPESHARP001", build.Output); // a backend is referenced

        // On a system whose libstdc++ lacks GLIBCXX_3.4.32 (Debian 12), the package's build step patched the copy.
        var native = Path.Combine(folder, "bin", packed.Configuration, packed.TargetFramework, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        if (OperatingSystem.IsLinux() && File.Exists(native) && SystemLacksGlibcxx3432())
            Assert.True(File.ReadAllBytes(native).AsSpan().IndexOf("_ZSt21ios_base_library_initv\0"u8) < 0,
                $"{native} was not patched by the package's buildTransitive step:\n{build.Output}");

        var run = Run(folder);
        Assert.True(run.ExitCode == 0, run.ToString());
        Assert.Contains("stages 2", run.Output);
        float first = Loss(run, "first"), last = Loss(run, "last");
        Assert.True(first > 1.0f && last < 0.5f * first, $"the loss did not fall clearly ({first} -> {last}):\n{run.Output}");
    }

    [Fact]
    public void Without_a_backend_the_build_warns_and_the_program_says_which_package_to_add()
    {
        AssertPacked();
        var folder = Consumer("no-backend", withBackend: false, """
            try
            {
                PipeSharp.Native.TorchNative.EnsureLoaded();
                Console.WriteLine("TorchSharp loaded");
            }
            catch (PipeSharp.Native.TorchLoadException e)
            {
                Console.WriteLine(e.Message);
                return 3;
            }
            return 0;
            """);

        var build = Build(folder);
        Assert.True(build.ExitCode == 0, build.ToString());
        Assert.Contains("warning PIPESHARP001", build.Output);
        Assert.Contains("dotnet add package libtorch-cpu", build.Output);

        var run = Run(folder);
        // TorchSharp can fall back on a backend it finds in NuGet's package folder (not with an unpatched copy on
        // Debian 12); where it cannot, the message names the fix.
        if (run.ExitCode == 0 && Regex.IsMatch(run.Output, "^TorchSharp loaded$", RegexOptions.Multiline)) return;
        Assert.True(run.ExitCode == 3, run.ToString());
        Assert.Contains("No LibTorch native backend", run.Output);
        Assert.Contains("dotnet add package libtorch-cpu", run.Output);
    }

    private static float Loss(Outcome run, string which)
    {
        var match = Regex.Match(run.Output, $@"^{which} loss (\S+)$", RegexOptions.Multiline);
        Assert.True(match.Success, $"no \"{which} loss\" line:\n{run}");
        return float.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture);
    }

    private static bool SystemLacksGlibcxx3432()
    {
        var libstdcxx = new[] { "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib64/libstdc++.so.6" }
            .FirstOrDefault(File.Exists);
        return libstdcxx != null && File.ReadAllBytes(libstdcxx).AsSpan().IndexOf("GLIBCXX_3.4.32\0"u8) < 0;
    }
}
