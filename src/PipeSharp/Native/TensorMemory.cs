using System.Runtime.InteropServices;
using TorchSharp;
using static TorchSharp.torch;

namespace PipeSharp.Native;

/// <summary>
/// A tensor's native memory: the address of a CPU tensor's elements (for MPI to read and write in place), the address
/// of any tensor's storage (which tells whether two parameters are one), and tensors made over memory that PipeSharp
/// owns. These call TorchSharp's native library (LibTorchSharp) directly, where the managed API costs too much:
/// <c>Tensor.bytes</c> checks and wraps the memory in a span, a tenth of a microsecond per call (a message pays it);
/// <c>Tensor.storage&lt;T&gt;()</c> makes a tensor handle that keeps the memory alive until the garbage collector
/// finalises it; and there is no managed way to give a tensor memory with a function that frees it.
/// </summary>
internal static class TensorMemory
{
    /// <summary>Frees a tensor's memory once libtorch has released its storage.</summary>
    [UnmanagedFunctionPointer(CallingConvention.Cdecl)]
    public delegate void Deleter(IntPtr memory);

    /// <summary>
    /// The address of a CPU tensor's first element (its storage offset included); zero for an empty tensor. Only for
    /// contiguous CPU tensors, which the callers make sure of: the address of another tensor is not where its elements
    /// lie one after another.
    /// </summary>
    public static IntPtr Pointer(Tensor tensor)
    {
        if (tensor.NumberOfElements == 0) return IntPtr.Zero;
        IntPtr data = Data(tensor.Handle);
        if (data == IntPtr.Zero) torch.CheckForErrors();
        return data;
    }

    /// <summary>
    /// The address of the start of a tensor's storage (the memory it shares with all its views; the storage offset not
    /// included), on any device and of any dtype. Unlike <c>Tensor.storage&lt;T&gt;()</c>, it makes no new tensor
    /// handle that would keep the memory alive until the garbage collector finalises it.
    /// </summary>
    public static IntPtr StorageAddress(Tensor tensor)
    {
        IntPtr data = StorageData(tensor.Handle);
        if (data == IntPtr.Zero) torch.CheckForErrors();
        return data;
    }

    /// <summary>
    /// A CPU tensor of <paramref name="shape"/> and <paramref name="dtype"/> over <paramref name="memory"/>, which
    /// libtorch hands to <paramref name="deleter"/> when the tensor's storage is released (whatever views there were).
    /// The caller keeps <paramref name="deleter"/> alive as long as any such tensor may exist.
    /// </summary>
    public static unsafe Tensor Wrap(IntPtr memory, long[] shape, ScalarType dtype, Deleter deleter)
    {
        IntPtr handle;
        fixed (long* dims = shape)
            handle = NewTensor(memory, deleter, (IntPtr)dims, shape.Length, (sbyte)dtype, (sbyte)dtype, (int)DeviceType.CPU, -1, false);
        if (handle == IntPtr.Zero) torch.CheckForErrors();
        return Tensor.UnsafeCreateTensor(handle);
    }

    [DllImport("LibTorchSharp", EntryPoint = "THSTensor_data")]
    private static extern IntPtr Data(IntPtr tensor);

    [DllImport("LibTorchSharp", EntryPoint = "THSStorage_data_ptr")]
    private static extern IntPtr StorageData(IntPtr tensor);

    [DllImport("LibTorchSharp", EntryPoint = "THSTensor_new")]
    private static extern IntPtr NewTensor(IntPtr data, Deleter deleter, IntPtr dimensions, int dimensionCount,
        sbyte type, sbyte dtype, int deviceType, int deviceIndex, [MarshalAs(UnmanagedType.U1)] bool requiresGrad);
}
