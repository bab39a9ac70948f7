using PipeSharp.Native;
using System.Runtime.InteropServices;
using PipeSharp.Transport;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Tests;

/// <summary>MPI reads and writes tensors at the address TensorMemory gives: it must be the first element's.</summary>
public class TensorMemoryTests
{
    [Fact]
    public void The_address_is_that_of_the_first_element_storage_offset_included()
    {
        using var scope = NewDisposeScope();
        var whole = arange(1, 25, dtype: ScalarType.Float32).reshape(4, 6); // 1 .. 24
        Assert.Equal(1f, Read(TensorMemory.Pointer(whole)));

        var rows = whole[2..]; // a view two rows in
        Assert.Equal(TensorMemory.Pointer(whole) + 2 * 6 * sizeof(float), TensorMemory.Pointer(rows));
        Assert.Equal(13f, Read(TensorMemory.Pointer(rows)));

        Marshal.WriteInt32(TensorMemory.Pointer(rows), BitConverter.SingleToInt32Bits(-1f)); // a write there is the tensor's
        Assert.Equal(-1f, whole[2, 0].item<float>());
    }

    [Fact]
    public void An_empty_tensor_has_no_address()
    {
        using var empty = zeros(0, 5);
        Assert.Equal(IntPtr.Zero, TensorMemory.Pointer(empty));
    }

    [Fact]
    public void A_wrapped_block_is_handed_to_its_deleter_when_the_last_view_is_gone()
    {
        var freed = new List<IntPtr>();
        TensorMemory.Deleter deleter = freed.Add;
        IntPtr block = Marshal.AllocHGlobal(6 * sizeof(long));
        try
        {
            var tensor = TensorMemory.Wrap(block, [2, 3], ScalarType.Int64, deleter);
            Assert.Equal([2L, 3L], tensor.shape);
            tensor.fill_(7L);
            var view = tensor[1];
            tensor.Dispose();
            Assert.Empty(freed);
            Assert.Equal(7L, Marshal.ReadInt64(block, 5 * sizeof(long)));
            view.Dispose();
            Assert.Equal([block], freed);
        }
        finally
        {
            Marshal.FreeHGlobal(block);
            GC.KeepAlive(deleter);
        }
    }

    private static float Read(IntPtr address) => BitConverter.Int32BitsToSingle(Marshal.ReadInt32(address));
}
