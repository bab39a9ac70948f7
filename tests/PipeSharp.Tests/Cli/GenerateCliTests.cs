using System.Diagnostics;
using System.Text;

namespace PipeSharp.Tests.Cli;

/// <summary><c>generate</c>: a token count it cannot hold is refused up front; the text is printed as it comes.</summary>
public class GenerateCliTests(SortingCheckpoint checkpoint) : IClassFixture<SortingCheckpoint>
{
    [Fact]
    public void Generate_refuses_a_token_count_it_cannot_hold_naming_tokens_and_the_limit()
    {
        var run = CliProcess.Run("generate", "--checkpoint", checkpoint.Directory, "--prompt", "201102", "--tokens", "2147483647");
        Assert.True(run.ExitCode == 2, $"exit {run.ExitCode}: {run.Output}");
        Assert.Contains("--tokens", run.Stderr);
        Assert.Contains("at most 1000000", run.Stderr);
        Assert.DoesNotContain("memory", run.Stderr.Replace("not memory", ""), StringComparison.OrdinalIgnoreCase);
        Assert.Equal("", run.Stdout);
    }

    [Fact]
    public async Task Generate_prints_the_text_as_it_is_generated()
    {
        // A million tokens take many minutes; the first ones must be on stdout long before that.
        using var process = Process.Start(CliProcess.Info("generate", "--checkpoint", checkpoint.Directory, "--prompt", "201102",
            "--tokens", "1000000", "--seed", "1"))!;
        try
        {
            var text = new StringBuilder();
            var read = Task.Run(() =>
            {
                var buffer = new char[64];
                while (text.Length < 40)
                {
                    int n = process.StandardOutput.Read(buffer, 0, buffer.Length);
                    if (n <= 0) break;
                    text.Append(buffer, 0, n);
                }
            });
            Assert.True(await Task.WhenAny(read, Task.Delay(TimeSpan.FromSeconds(60))) == read, $"after 60 s stdout had only '{text}'");
            Assert.True(text.Length >= 40, $"stdout ended early: '{text}'");
            Assert.StartsWith("201102", text.ToString());
            Assert.Matches("^[0-2]+$", text.ToString().Trim());
        }
        finally
        {
            process.Kill(entireProcessTree: true);
            process.WaitForExit();
        }
    }
}
