using static TorchSharp.torch;

namespace PipeSharp.Native;

/// <summary>
/// Tells whether two parameter objects are the same parameter. TorchSharp may hand out a new wrapper object for the
/// same tensor on every access (e.g. <c>Embedding.weight</c>), so neither reference equality nor the handle says
/// so; the storage address, shape and type do.
/// </summary>
internal static class ParameterIdentity
{
    /// <summary>A key equal for two tensors exactly when they are the same tensor.</summary>
    public static (IntPtr Data, string Shape, ScalarType Type, string Device) Key(Tensor t) =>
        (TensorMemory.StorageAddress(t), $"{string.Join(",", t.shape)}/{string.Join(",", t.stride())}@{t.storage_offset()}", t.dtype, t.device.ToString());

    /// <summary>The parameters with every parameter listed once (an optimizer must not step a shared one twice).</summary>
    public static List<T> Distinct<T>(IEnumerable<T> parameters) where T : Tensor => parameters.DistinctBy(Key).ToList();
}
