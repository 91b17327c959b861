// MSBuild inline task (compiled by RoslynCodeTaskFactory from TorchSharpCompat.targets, against
// netstandard2.0: hence no spans, ranges or newer BCL helpers here).
//
// Why: TorchSharp 0.107's libLibTorchSharp.so was linked against GCC 13's libstdc++ and asks for
// version GLIBCXX_3.4.32, but the only symbol it takes from that version is
// std::ios_base_library_init(). Hosts with an older libstdc++ (Debian 12, Ubuntu 22.04, RHEL 8/9)
// refuse to load it. We patch the copy of the library in the build output (never the NuGet cache):
//   1. the symbol's version requirement is cleared (.gnu.version entry -> VER_NDX_GLOBAL),
//   2. the GLIBCXX_3.4.32 requirement in .gnu.version_r is marked VER_FLG_WEAK,
//   3. a DT_NEEDED entry naming a tiny shim library that defines the symbol is added, reusing the
//      redundant DT_SYMBOLIC slot (DT_FLAGS already carries DF_SYMBOLIC) and the bytes of the
//      build-machine RUNPATH string, which becomes "$ORIGIN/" followed by the shim's name.
// The result is written to a temporary file and renamed over the output copy, so a hard link into
// the package cache is broken rather than modified. Patching is idempotent.
#nullable enable
using System;
using System.Collections.Generic;
using System.Diagnostics;
using System.IO;
using System.Linq;
using System.Runtime.InteropServices;
using System.Text;
using Microsoft.Build.Framework;
using Microsoft.Build.Utilities;

public class PatchTorchSharpNative : Task
{
    const string MissingVersion = "GLIBCXX_3.4.32";
    const string ShimSymbol = "_ZSt21ios_base_library_initv";
    const string ShimFileName = "libmellama-stdcxx-compat.so";

    /// <summary>Folders that may hold libLibTorchSharp.so (build output, runtimes/linux-x64/native, publish dir).</summary>
    [Required] public string[] NativeDirs { get; set; } = Array.Empty<string>();
    /// <summary>The shim's C++ source.</summary>
    [Required] public string ShimSource { get; set; } = "";
    /// <summary>Folder for the compiled shim (intermediate output).</summary>
    [Required] public string WorkDir { get; set; } = "";
    /// <summary>auto (default), off, or force (patch even when the host libstdc++ is new: for tests).</summary>
    public string Mode { get; set; } = "auto";

    public override bool Execute()
    {
        if (!RuntimeInformation.IsOSPlatform(OSPlatform.Linux) || string.Equals(Mode, "off", StringComparison.OrdinalIgnoreCase))
            return true;
        var libs = NativeDirs.Select(d => Path.Combine(d, "libLibTorchSharp.so")).Where(File.Exists).Distinct().ToList();
        if (libs.Count == 0) return true;

        bool force = string.Equals(Mode, "force", StringComparison.OrdinalIgnoreCase);
        string? hostLib = FindHostLibStdCxx();
        if (!force && hostLib != null && FileContainsAscii(hostLib, MissingVersion + "\0"))
        {
            Log.LogMessage(MessageImportance.Low, $"{hostLib} provides {MissingVersion}; TorchSharp native library left as shipped.");
            return true;
        }

        string shim;
        try { shim = BuildShim(); }
        catch (Exception e)
        {
            Log.LogError($"TorchSharp's native library needs {MissingVersion} (GCC 13 libstdc++), which this host's " +
                         $"libstdc++ ({hostLib ?? "not found"}) lacks. MeLlama works around it by compiling a one-function shim, " +
                         $"but that failed: {e.Message}. Fix: install a C++ compiler (Debian/Ubuntu: apt-get install g++; " +
                         "RHEL: dnf install gcc-c++) and rebuild, or install libstdc++ from GCC 13 or newer.");
            return false;
        }

        foreach (var lib in libs)
        {
            try
            {
                string dir = Path.GetDirectoryName(lib)!;
                string shimDest = Path.Combine(dir, ShimFileName);
                if (!File.Exists(shimDest) || !File.ReadAllBytes(shimDest).SequenceEqual(File.ReadAllBytes(shim)))
                    File.Copy(shim, shimDest, overwrite: true);
                var result = ElfPatch.Apply(lib, MissingVersion, ShimSymbol, ShimFileName);
                Log.LogMessage(MessageImportance.Normal, $"MeLlama native compat: {lib}: {result}");
            }
            catch (Exception e)
            {
                Log.LogError($"MeLlama native compat: cannot patch {lib}: {e.Message}");
                return false;
            }
        }
        return true;
    }

    string BuildShim()
    {
        Directory.CreateDirectory(WorkDir);
        string src = File.ReadAllText(ShimSource);
        string stamp;
        using (var sha = System.Security.Cryptography.SHA256.Create())
            stamp = BitConverter.ToString(sha.ComputeHash(Encoding.UTF8.GetBytes(src))).Replace("-", "").Substring(0, 16);
        string output = Path.Combine(WorkDir, $"stdcxx-compat-{stamp}.so");
        if (File.Exists(output)) return output;

        var candidates = new List<string>();
        var cxx = Environment.GetEnvironmentVariable("CXX");
        if (!string.IsNullOrWhiteSpace(cxx)) candidates.Add(cxx);
        candidates.AddRange(new[] { "c++", "g++", "clang++" });
        var errors = new StringBuilder();
        foreach (var compiler in candidates)
        {
            string tmp = output + ".tmp" + Process.GetCurrentProcess().Id;
            try
            {
                var psi = new ProcessStartInfo(compiler, $"-shared -fPIC -O2 -o \"{tmp}\" \"{ShimSource}\"")
                { RedirectStandardError = true, RedirectStandardOutput = true, UseShellExecute = false };
                using var p = Process.Start(psi)!;
                string err = p.StandardError.ReadToEnd();
                p.WaitForExit();
                if (p.ExitCode == 0 && File.Exists(tmp)) { Replace(tmp, output); return output; }
                errors.Append($"{compiler}: exit {p.ExitCode} {err.Trim()}; ");
            }
            catch (System.ComponentModel.Win32Exception) { errors.Append($"{compiler}: not found; "); }
            finally { if (File.Exists(tmp)) File.Delete(tmp); }
        }
        throw new InvalidOperationException("no working C++ compiler (" + errors.ToString().TrimEnd(' ', ';') + ")");
    }

    static string? FindHostLibStdCxx()
    {
        // The build runs in dotnet, which links the same libstdc++ the application will load.
        try
        {
            foreach (var line in File.ReadLines("/proc/self/maps"))
            {
                int i = line.IndexOf('/');
                if (i >= 0 && line.Contains("libstdc++.so")) return line.Substring(i).Trim();
            }
        }
        catch (IOException) { }
        foreach (var p in new[] { "/usr/lib/x86_64-linux-gnu/libstdc++.so.6", "/usr/lib64/libstdc++.so.6", "/usr/lib/aarch64-linux-gnu/libstdc++.so.6", "/usr/lib/libstdc++.so.6" })
            if (File.Exists(p)) return p;
        return null;
    }

    static bool FileContainsAscii(string path, string text)
    {
        byte[] data = File.ReadAllBytes(path), pat = Encoding.ASCII.GetBytes(text);
        for (int i = 0; i + pat.Length <= data.Length; i++)
        {
            int k = 0;
            while (k < pat.Length && data[i + k] == pat[k]) k++;
            if (k == pat.Length) return true;
        }
        return false;
    }

    /// <summary>rename(2) over the destination: atomic, and never writes into the old inode.</summary>
    internal static void Replace(string tmp, string dest)
    {
        if (File.Exists(dest)) File.Replace(tmp, dest, null);
        else File.Move(tmp, dest);
    }
}

/// <summary>Minimal ELF64 little-endian editor for the three changes described at the top of the file.</summary>
public static class ElfPatch
{
    const uint SHT_DYNAMIC = 6, SHT_DYNSYM = 11, SHT_GNU_VERNEED = 0x6ffffffe, SHT_GNU_VERSYM = 0x6fffffff;
    const long DT_NULL = 0, DT_NEEDED = 1, DT_SONAME = 14, DT_RPATH = 15, DT_SYMBOLIC = 16, DT_RUNPATH = 29, DT_FLAGS = 30;
    const ushort VER_FLG_WEAK = 2, VER_NDX_GLOBAL = 1;
    const ulong DF_SYMBOLIC = 2;

    sealed class Section
    {
        public Section(uint type, long offset, long size, uint link) { Type = type; Offset = offset; Size = size; Link = link; }
        public uint Type { get; }
        public long Offset { get; }
        public long Size { get; }
        public uint Link { get; }
    }

    public static string Apply(string path, string version, string symbol, string shimName)
    {
        byte[] b = File.ReadAllBytes(path);
        if (b.Length < 64 || b[0] != 0x7f || b[1] != (byte)'E' || b[2] != (byte)'L' || b[3] != (byte)'F')
            throw new InvalidDataException("not an ELF file");
        if (b[4] != 2 || b[5] != 1) throw new InvalidDataException("only 64-bit little-endian ELF is supported");

        long shoff = (long)U64(b, 0x28);
        int shentsize = U16(b, 0x3A), shnum = U16(b, 0x3C);
        var sections = new List<Section>();
        for (int i = 0; i < shnum; i++)
        {
            long o = shoff + (long)i * shentsize;
            sections.Add(new Section(U32(b, o + 4), (long)U64(b, o + 24), (long)U64(b, o + 32), U32(b, o + 40)));
        }
        Section Find(uint type) => sections.FirstOrDefault(s => s.Type == type && s.Size > 0)
            ?? throw new InvalidDataException($"section type 0x{type:x} not found");
        var dynsym = Find(SHT_DYNSYM);
        var dynstr = sections[(int)dynsym.Link];
        var versym = Find(SHT_GNU_VERSYM);
        var verneed = Find(SHT_GNU_VERNEED);
        var dynamic = Find(SHT_DYNAMIC);
        string Str(long off) => CString(b, dynstr.Offset + off);

        // 1. Find the vernaux entry for the missing version.
        long vernauxAt = -1; ushort versionIndex = 0;
        var stringRefs = new List<long>();
        for (long vn = verneed.Offset; ;)
        {
            int cnt = U16(b, vn + 2);
            stringRefs.Add(U32(b, vn + 4));
            long aux = vn + U32(b, vn + 8);
            for (int k = 0; k < cnt; k++)
            {
                stringRefs.Add(U32(b, aux + 8));
                if (Str(U32(b, aux + 8)) == version) { vernauxAt = aux; versionIndex = (ushort)(U16(b, aux + 6) & 0x7fff); }
                uint next = U32(b, aux + 12);
                if (next == 0) break;
                aux += next;
            }
            uint vnNext = U32(b, vn + 12);
            if (vnNext == 0) break;
            vn += vnNext;
        }

        // Dynamic entries (and the strings they reference).
        int ndyn = (int)(dynamic.Size / 16);
        long symbolicAt = -1, runpathAt = -1, firstNull = -1; ulong flags = 0; bool hasShim = false;
        for (int i = 0; i < ndyn; i++)
        {
            long o = dynamic.Offset + i * 16L;
            long tag = (long)U64(b, o); ulong val = U64(b, o + 8);
            if (tag == DT_NULL) { firstNull = o; break; }
            if (tag == DT_SYMBOLIC) symbolicAt = o;
            if (tag == DT_FLAGS) flags = val;
            if (tag == DT_RUNPATH || tag == DT_RPATH) runpathAt = o;
            if (tag is DT_NEEDED or DT_SONAME or DT_RPATH or DT_RUNPATH) stringRefs.Add((long)val);
            if (tag == DT_NEEDED && Str((long)val) == shimName) hasShim = true;
        }

        if (vernauxAt < 0)
            return hasShim ? "already patched" : $"does not require {version}; left unchanged";

        // 2. Symbols bound to that version: only the one the shim provides may be.
        int nsym = (int)(dynsym.Size / 24);
        var bound = new List<int>();
        for (int i = 0; i < nsym; i++)
        {
            stringRefs.Add(U32(b, dynsym.Offset + i * 24L));
            if ((U16(b, versym.Offset + i * 2L) & 0x7fff) == versionIndex) bound.Add(i);
        }
        if (hasShim && bound.Count == 0 && (U16(b, vernauxAt + 4) & VER_FLG_WEAK) != 0)
            return "already patched";
        foreach (int i in bound)
        {
            string name = Str(U32(b, dynsym.Offset + i * 24L));
            if (name != symbol)
                throw new InvalidDataException($"requires {name} from {version}; only {symbol} can be supplied by the shim");
        }

        // 3. Make room for DT_NEEDED(shim).
        if (!hasShim)
        {
            long slot;
            if (symbolicAt >= 0 && (flags & DF_SYMBOLIC) != 0) slot = symbolicAt;
            else if (firstNull >= 0 && firstNull + 32 <= dynamic.Offset + dynamic.Size) slot = firstNull; // a spare DT_NULL remains after it
            else throw new InvalidDataException("no free slot in .dynamic for the shim's DT_NEEDED entry");
            if (runpathAt < 0) throw new InvalidDataException("no RUNPATH string to hold the shim's name");

            long rpOff = (long)U64(b, runpathAt + 8);
            string runpath = Str(rpOff);
            const string origin = "$ORIGIN/";
            if (!runpath.StartsWith("$ORIGIN", StringComparison.Ordinal))
                throw new InvalidDataException($"RUNPATH '{runpath}' does not start with $ORIGIN");
            long nameOff = rpOff + origin.Length + 1;
            if (origin.Length + 1 + shimName.Length + 1 > runpath.Length + 1)
                throw new InvalidDataException("RUNPATH string too short to hold the shim's name");
            // Nothing else may point into the bytes we overwrite (string tables share suffixes).
            long lo = rpOff + origin.Length, hi = rpOff + runpath.Length;
            if (stringRefs.Any(r => r > lo && r <= hi))
                throw new InvalidDataException("another string shares the RUNPATH bytes");

            long abs = dynstr.Offset + rpOff;
            Array.Clear(b, (int)abs, runpath.Length);
            Encoding.ASCII.GetBytes(origin).CopyTo(b, abs);
            Encoding.ASCII.GetBytes(shimName).CopyTo(b, dynstr.Offset + nameOff);
            W64(b, slot, (ulong)DT_NEEDED);
            W64(b, slot + 8, (ulong)nameOff);
        }

        foreach (int i in bound) W16(b, versym.Offset + i * 2L, VER_NDX_GLOBAL);
        W16(b, vernauxAt + 4, (ushort)(U16(b, vernauxAt + 4) | VER_FLG_WEAK));

        string tmp = path + ".patching";
        File.WriteAllBytes(tmp, b);
        PatchTorchSharpNative.Replace(tmp, path);
        return $"patched ({bound.Count} symbol(s) unversioned, {version} weak, needs {shimName})";
    }

    static ushort U16(byte[] b, long o) => BitConverter.ToUInt16(b, (int)o);
    static uint U32(byte[] b, long o) => BitConverter.ToUInt32(b, (int)o);
    static ulong U64(byte[] b, long o) => BitConverter.ToUInt64(b, (int)o);
    static void W16(byte[] b, long o, ushort v) => BitConverter.GetBytes(v).CopyTo(b, (int)o);
    static void W64(byte[] b, long o, ulong v) => BitConverter.GetBytes(v).CopyTo(b, (int)o);
    static string CString(byte[] b, long o)
    {
        int end = Array.IndexOf(b, (byte)0, (int)o);
        return Encoding.ASCII.GetString(b, (int)o, end - (int)o);
    }
}
