using System.Text;
using TorchSharp.Modules;

namespace PipeSharp.Runtime;

/// <summary>
/// PipeSharp's binary format for optimizer state, as stored in checkpoints (a byte tensor <c>optimizer/NAME</c> per
/// parameter). Per parameter: the magic, the optimizer's type name, then its parameter group's options and the
/// parameter's state, each as TorchSharp writes them, length-prefixed. An optimizer that keeps no state per parameter
/// is stored whole, under <c>&lt;stage N optimizer&gt;</c>: the magic + <c>/whole</c>, the stage's parameter names,
/// then the optimizer's own state.
/// </summary>
internal static class OptimizerStateFormat
{
    private const string Magic = "PipeSharp.OptimizerState/1";

    /// <summary>The key of a whole-optimizer blob for stage <paramref name="s"/>.</summary>
    public static string WholeOptimizerKey(int s) => $"<stage {s} optimizer>";

    public static byte[] ParameterBlob(OptimizerHelper helper, OptimizerOptions options, TorchSharp.Modules.OptimizerState state)
    {
        var optionBytes = new MemoryStream();
        using (var w = new BinaryWriter(optionBytes, Encoding.UTF8, leaveOpen: true)) options.SaveStateDict(w);
        var stateBytes = new MemoryStream();
        using (var w = new BinaryWriter(stateBytes, Encoding.UTF8, leaveOpen: true)) state.SaveStateDict(w);
        var blob = new MemoryStream();
        using (var w = new BinaryWriter(blob, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(Magic);
            w.Write(helper.GetType().Name);
            w.Write((int)optionBytes.Length);
            w.Write(optionBytes.GetBuffer(), 0, (int)optionBytes.Length);
            w.Write((int)stateBytes.Length);
            w.Write(stateBytes.GetBuffer(), 0, (int)stateBytes.Length);
        }
        return blob.ToArray();
    }

    public static (string Type, byte[] Options, byte[] State) ReadParameterBlob(byte[] blob, string name)
    {
        try
        {
            using var r = new BinaryReader(new MemoryStream(blob));
            if (r.ReadString() != Magic) throw new InvalidDataException("unknown format");
            var type = r.ReadString();
            var options = r.ReadBytes(r.ReadInt32());
            var state = r.ReadBytes(r.ReadInt32());
            if (r.BaseStream.Position != blob.Length) throw new InvalidDataException("trailing bytes");
            return (type, options, state);
        }
        catch (Exception e) when (e is InvalidDataException or EndOfStreamException or IOException or ArgumentException)
        {
            throw new ArgumentException($"the optimizer state of {name} is not a PipeSharp per-parameter optimizer state ({e.Message}).", nameof(blob), e);
        }
    }

    public static byte[] WholeOptimizerBlob(OptimizerHelper helper, IReadOnlyList<string> names)
    {
        var blob = new MemoryStream();
        using (var w = new BinaryWriter(blob, Encoding.UTF8, leaveOpen: true))
        {
            w.Write(Magic + "/whole");
            w.Write(names.Count);
            foreach (var n in names) w.Write(n);
            helper.save_state_dict(w);
        }
        return blob.ToArray();
    }

    public static (List<string> Names, byte[] Payload) ReadWholeOptimizerBlob(byte[] blob, string key)
    {
        try
        {
            using var r = new BinaryReader(new MemoryStream(blob));
            if (r.ReadString() != Magic + "/whole") throw new InvalidDataException("unknown format");
            var names = Enumerable.Range(0, r.ReadInt32()).Select(_ => r.ReadString()).ToList();
            return (names, blob[(int)r.BaseStream.Position..]);
        }
        catch (Exception e) when (e is InvalidDataException or EndOfStreamException or IOException)
        {
            throw new ArgumentException($"the optimizer state '{key}' is not a PipeSharp optimizer state ({e.Message}).", nameof(blob), e);
        }
    }
}
