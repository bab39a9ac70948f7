// MSBuild task (compiled by RoslynCodeTaskFactory against netstandard2.0, see PipeSharp.targets).
//
// TorchSharp 0.107.0's libLibTorchSharp.so was linked with GCC 13 and asks libstdc++ for version
// GLIBCXX_3.4.32 for exactly one symbol, std::ios_base_library_init(), which GCC 13 emits to make sure
// the standard streams are set up. Older libstdc++ (Debian 12 stops at GLIBCXX_3.4.30) refuses to load it.
//
// Where, and only where, the system libstdc++ lacks GLIBCXX_3.4.32, this task rewrites the build output's
// copy of the library (never the NuGet cache):
//   1. that one import is renamed to std::ios_base::Init::Init() at version GLIBCXX_3.4, which does the
//      same work (it initialises the standard streams once, reference counted) and exists in every libstdc++;
//   2. the GLIBCXX_3.4.32 version requirement is marked weak, so the loader only warns if it is missing.
// The edit is in place (same size), idempotent, and refuses any file whose layout it does not recognise.
#nullable disable
using System;
using System.IO;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public class PatchLibTorchSharp : Microsoft.Build.Utilities.Task
{
    /// <summary>Copies of libLibTorchSharp.so in the build or publish output.</summary>
    [Required] public ITaskItem[] Files { get; set; } = Array.Empty<ITaskItem>();

    const string MissingVersion = "GLIBCXX_3.4.32";
    const string OldSymbol = "_ZSt21ios_base_library_initv";
    const string NewSymbol = "_ZNSt8ios_base4InitC1Ev";
    const string NewSymbolVersion = "GLIBCXX_3.4";

    static readonly string[] LibStdCxxCandidates =
    {
        "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/lib/x86_64-linux-gnu/libstdc++.so.6",
        "/usr/lib/aarch64-linux-gnu/libstdc++.so.6", "/lib/aarch64-linux-gnu/libstdc++.so.6",
        "/usr/lib64/libstdc++.so.6", "/lib64/libstdc++.so.6", "/usr/lib/libstdc++.so.6",
    };

    public override bool Execute()
    {
        string libstdcxx = Array.Find(LibStdCxxCandidates, File.Exists);
        if (libstdcxx == null)
        {
            Log.LogMessage(MessageImportance.Low, "PipeSharp: no system libstdc++ found; TorchSharp native library left as is.");
            return true;
        }
        if (Contains(File.ReadAllBytes(libstdcxx), Encoding.ASCII.GetBytes(MissingVersion + "\0")))
        {
            Log.LogMessage(MessageImportance.Low, $"PipeSharp: {libstdcxx} provides {MissingVersion}; no patch needed.");
            return true;
        }
        foreach (var item in Files)
        {
            string path = item.ItemSpec;
            if (!File.Exists(path)) continue;
            try
            {
                byte[] data = File.ReadAllBytes(path);
                string outcome = Patch(data);
                if (outcome == "patched")
                {
                    string tmp = path + ".pipesharp-tmp";
                    File.WriteAllBytes(tmp, data);
                    File.Delete(path); // replaces the file, so a hard link to the NuGet cache is never written through
                    File.Move(tmp, path);
                    Log.LogMessage(MessageImportance.High,
                        $"PipeSharp: patched {path} to load with this system's libstdc++ (no {MissingVersion}).");
                }
                else
                {
                    Log.LogMessage(MessageImportance.Low, $"PipeSharp: {path}: {outcome}.");
                }
            }
            catch (Exception e)
            {
                Log.LogWarning($"PipeSharp: could not patch {path}: {e.Message}. TorchSharp may fail to load on this system.");
            }
        }
        return true;
    }

    static bool Contains(byte[] hay, byte[] needle)
    {
        for (int i = 0; i + needle.Length <= hay.Length; i++)
        {
            if (hay[i] != needle[0]) continue;
            int k = 1;
            while (k < needle.Length && hay[i + k] == needle[k]) k++;
            if (k == needle.Length) return true;
        }
        return false;
    }

    // ---- minimal ELF64 little-endian reader/writer ----
    const uint ShtDynsym = 11, ShtVerneed = 0x6ffffffe, ShtVersym = 0x6fffffff;

    struct Section { public uint Type; public long Offset, Size; public uint Link, Info; }

    static string CString(byte[] d, long offset)
    {
        int end = Array.IndexOf(d, (byte)0, (int)offset);
        return Encoding.ASCII.GetString(d, (int)offset, end - (int)offset);
    }

    /// <summary>Edits <paramref name="d"/> in place; returns "patched" or why nothing was changed.</summary>
    public static string Patch(byte[] d)
    {
        if (d.Length < 64 || d[0] != 0x7f || d[1] != (byte)'E' || d[2] != (byte)'L' || d[3] != (byte)'F')
            return "not an ELF file";
        if (d[4] != 2 || d[5] != 1) return "not a 64-bit little-endian ELF file";
        long shoff = BitConverter.ToInt64(d, 0x28);
        int shentsize = BitConverter.ToUInt16(d, 0x3A), shnum = BitConverter.ToUInt16(d, 0x3C);
        var secs = new Section[shnum];
        for (int i = 0; i < shnum; i++)
        {
            int o = (int)(shoff + (long)i * shentsize);
            secs[i] = new Section
            {
                Type = BitConverter.ToUInt32(d, o + 4), Offset = BitConverter.ToInt64(d, o + 24),
                Size = BitConverter.ToInt64(d, o + 32), Link = BitConverter.ToUInt32(d, o + 40),
                Info = BitConverter.ToUInt32(d, o + 44),
            };
        }
        int dynsymIx = Array.FindIndex(secs, s => s.Type == ShtDynsym);
        int verneedIx = Array.FindIndex(secs, s => s.Type == ShtVerneed);
        int versymIx = Array.FindIndex(secs, s => s.Type == ShtVersym);
        if (dynsymIx < 0 || verneedIx < 0 || versymIx < 0) return "no symbol versioning tables";
        Section dynsym = secs[dynsymIx], verneed = secs[verneedIx], versym = secs[versymIx];
        long dynstr = secs[dynsym.Link].Offset;

        // Version requirements: find the entry of the missing version and the index of the replacement.
        int missingAux = -1, replacementIndex = -1;
        bool alreadyWeak = false;
        long vn = verneed.Offset;
        for (uint n = 0; n < verneed.Info; n++)
        {
            int cnt = BitConverter.ToUInt16(d, (int)vn + 2);
            long aux = vn + BitConverter.ToUInt32(d, (int)vn + 8);
            for (int k = 0; k < cnt; k++)
            {
                string name = CString(d, dynstr + BitConverter.ToUInt32(d, (int)aux + 8));
                if (name == MissingVersion)
                {
                    missingAux = (int)aux;
                    alreadyWeak = (BitConverter.ToUInt16(d, (int)aux + 4) & 2) != 0;
                }
                if (name == NewSymbolVersion) replacementIndex = BitConverter.ToUInt16(d, (int)aux + 6);
                aux += BitConverter.ToUInt32(d, (int)aux + 12);
            }
            vn += BitConverter.ToUInt32(d, (int)vn + 12);
        }
        if (missingAux < 0) return $"does not require {MissingVersion}";
        if (replacementIndex < 0) return $"does not require {NewSymbolVersion}; layout not recognised";

        // The symbol: rename in .dynstr (the new name is shorter) and re-point its version.
        int symCount = (int)(dynsym.Size / 24), oldSym = -1;
        for (int i = 0; i < symCount; i++)
        {
            long nameOff = dynstr + BitConverter.ToUInt32(d, (int)(dynsym.Offset + i * 24));
            string name = CString(d, nameOff);
            if (name == OldSymbol) oldSym = i;
        }
        if (oldSym < 0)
            return alreadyWeak ? "already patched" : $"{MissingVersion} is required for a symbol other than {OldSymbol}; layout not recognised";
        uint oldName = BitConverter.ToUInt32(d, (int)(dynsym.Offset + oldSym * 24));
        // No other string may share the tail of the old name (linkers merge string suffixes).
        for (int i = 0; i < symCount; i++)
        {
            uint other = BitConverter.ToUInt32(d, (int)(dynsym.Offset + i * 24));
            if (other > oldName && other <= oldName + OldSymbol.Length) return "symbol name shares storage; layout not recognised";
        }
        byte[] newName = Encoding.ASCII.GetBytes(NewSymbol + "\0");
        Array.Copy(newName, 0, d, dynstr + oldName, newName.Length);
        BitConverter.GetBytes((ushort)replacementIndex).CopyTo(d, (int)(versym.Offset + oldSym * 2));
        ushort flags = BitConverter.ToUInt16(d, missingAux + 4);
        BitConverter.GetBytes((ushort)(flags | 2)).CopyTo(d, missingAux + 4); // VER_FLG_WEAK
        return "patched";
    }
}
