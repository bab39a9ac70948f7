using PipeSharp.Native;
using PipeSharp.Mpi;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Tests.Mpi;

/// <summary>Memory of large received messages is used again, but only once libtorch has let go of it.</summary>
[Collection(ProcessWideCollection.Name)] // reads a process-wide pool
public class ReceiveBuffersTests
{
    private static readonly long[] Shape = [2048, 1024]; // 8 MB of float32

    [Fact]
    public void A_large_buffer_comes_back_only_when_its_last_view_is_gone_and_is_then_used_again()
    {
        long before = ReceiveBuffers.PooledBytes;
        var first = ReceiveBuffers.Rent(Shape, ScalarType.Float32, 4);
        first.fill_(3f);
        IntPtr memory = Pointer(first);
        var view = first[10]; // shares the storage
        first.Dispose();
        Assert.Equal(before, ReceiveBuffers.PooledBytes); // the view still holds it
        using (NewDisposeScope()) Assert.Equal(3f, view[0].item<float>());
        view.Dispose();
        Assert.Equal(before + 8 * 1024 * 1024, ReceiveBuffers.PooledBytes);

        using var second = ReceiveBuffers.Rent(Shape, ScalarType.Float32, 4);
        Assert.Equal(memory, Pointer(second));
        Assert.Equal(before, ReceiveBuffers.PooledBytes);
        Assert.Equal(Shape, second.shape);
        Assert.Equal(ScalarType.Float32, second.dtype);
        second.fill_(1f);
        using (NewDisposeScope()) Assert.Equal(8 * 1024 * 1024f / 4, second.sum().item<float>());
    }

    [Fact]
    public void A_small_buffer_is_an_ordinary_tensor()
    {
        long before = ReceiveBuffers.PooledBytes;
        using (var small = ReceiveBuffers.Rent([16, 16], ScalarType.Float64, 8))
        {
            Assert.Equal(ScalarType.Float64, small.dtype);
            Assert.Equal([16L, 16L], small.shape);
        }
        Assert.Equal(before, ReceiveBuffers.PooledBytes);
    }

    private static IntPtr Pointer(Tensor t) => TensorMemory.Pointer(t);
}
