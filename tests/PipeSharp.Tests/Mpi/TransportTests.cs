namespace PipeSharp.Tests.Mpi;

/// <summary>
/// MpiTransport message by message, between two ranks (the program PipeSharp.Tests.TransportRanks): every message
/// arrives with its shape, dtype and values, whatever the shapes (more than a channel's slots, a shorter batch, empty),
/// dtypes (1 to 8 bytes), sizes (up to the receive-buffer pool) and layout (a non-contiguous view), in send order under
/// one key, and matched by key when received in another order.
/// </summary>
[Collection(MpiCollection.Name)]
public class TransportTests
{
    [MpiFact]
    public void Every_message_arrives_whole_under_its_key_whatever_its_shape_dtype_size_or_layout()
    {
        var run = MpiJob.Run(2, "", TimeSpan.FromMinutes(2), program: MpiJob.Built("tests", "PipeSharp.Tests.TransportRanks"));
        Assert.True(run.ExitCode == 0, run.Output);
        Assert.Contains("rank 0: 38 messages checked", run.Output);
        Assert.Contains("rank 1: 38 messages checked", run.Output);
    }
}
