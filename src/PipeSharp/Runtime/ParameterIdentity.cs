using static TorchSharp.torch;

namespace PipeSharp.Runtime;

/// <summary>
/// Tells whether two parameter objects are the same parameter. TorchSharp may hand out a new wrapper object for the
/// same tensor on every access (e.g. <c>Embedding.weight</c>), so neither reference equality nor the handle says
/// so; the storage address, shape and type do.
/// </summary>
public static class ParameterIdentity
{
    /// <summary>A key equal for two tensors exactly when they are the same tensor.</summary>
    public static (IntPtr Data, string Shape, ScalarType Type, string Device) Key(Tensor t) =>
        (DataAddress(t), $"{string.Join(",", t.shape)}/{string.Join(",", t.stride())}@{t.storage_offset()}", t.dtype, t.device.ToString());

    private static IntPtr DataAddress(Tensor t) => t.dtype switch
    {
        ScalarType.Float32 => t.storage<float>().data_ptr(),
        ScalarType.Float64 => t.storage<double>().data_ptr(),
        ScalarType.Float16 => t.storage<Half>().data_ptr(),
        ScalarType.Int64 => t.storage<long>().data_ptr(),
        ScalarType.Int32 => t.storage<int>().data_ptr(),
        _ => t.Handle, // other types: fall back to the wrapper's handle
    };

    /// <summary>The parameters with every parameter listed once (an optimizer must not step a shared one twice).</summary>
    public static List<T> Distinct<T>(IEnumerable<T> parameters) where T : Tensor => parameters.DistinctBy(Key).ToList();
}
