namespace PipeSharp.Tests;

/// <summary>
/// Tests that draw from TorchSharp's global random generator after seeding it: they run alone, since a test running
/// beside them could draw from it or seed it in between.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class GlobalRandomCollection
{
    public const string Name = "global random generator";
}
