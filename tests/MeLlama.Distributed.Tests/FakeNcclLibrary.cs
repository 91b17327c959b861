using System.Diagnostics;
using System.Runtime.InteropServices;

namespace MeLlama.Distributed.Tests;

/// <summary>Compiles Native/fake_nccl.c into a shared library once per test class (needs a C compiler, like the build's native shim).</summary>
public sealed unsafe class FakeNcclLibrary : IDisposable
{
    readonly string directory = Directory.CreateTempSubdirectory("mellama-fake-nccl-").FullName;
    readonly IntPtr handle;

    public string? Path { get; }
    public string? Unavailable { get; }

    public FakeNcclLibrary()
    {
        string source = System.IO.Path.Combine(AppContext.BaseDirectory, "Native", "fake_nccl.c");
        string output = System.IO.Path.Combine(directory, "libfake_nccl.so");
        string? compiler = new[] { "cc", "gcc", "clang" }.FirstOrDefault(c => Which(c) != null);
        if (compiler == null) { Unavailable = "no C compiler (cc/gcc/clang) to build the fake NCCL library"; return; }
        var psi = new ProcessStartInfo(compiler, ["-shared", "-fPIC", "-O1", "-o", output, source]) { RedirectStandardError = true };
        using var p = Process.Start(psi)!;
        string err = p.StandardError.ReadToEnd();
        p.WaitForExit();
        if (p.ExitCode != 0) throw new InvalidOperationException($"compiling the fake NCCL failed: {err}");
        Path = output;
        handle = NativeLibrary.Load(output);
    }

    static string? Which(string name) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Select(d => System.IO.Path.Combine(d, name)).FirstOrDefault(File.Exists);

    [StructLayout(LayoutKind.Sequential)]
    public struct Call
    {
        public fixed byte NameBytes[32];
        public ulong Count;
        public int DataType, Op, Root, NRanks, Rank;
        public uint IdChecksum;
        public IntPtr Send, Recv, Comm, Stream;
        public int Calls;

        public readonly string Name
        {
            get { fixed (byte* p = NameBytes) return Marshal.PtrToStringUTF8((IntPtr)p) ?? ""; }
        }
    }

    public Call Last => *((delegate* unmanaged<Call*>)Export("fake_nccl_last_call"))();
    public void FailNext(NcclResultCode code) => ((delegate* unmanaged<int, void>)Export("fake_nccl_fail_next"))((int)code);
    public void SetAsyncError(NcclResultCode code) => ((delegate* unmanaged<int, void>)Export("fake_nccl_set_async_error"))((int)code);
    public void SetVersion(int code) => ((delegate* unmanaged<int, void>)Export("fake_nccl_set_version"))(code);
    public void Reset() => ((delegate* unmanaged<void>)Export("fake_nccl_reset"))();

    IntPtr Export(string name) => NativeLibrary.GetExport(handle, name);

    public void Dispose()
    {
        try { Directory.Delete(directory, recursive: true); } catch (IOException) { }
    }

    public enum NcclResultCode { Success = 0, InvalidArgument = 4, InvalidUsage = 5, RemoteError = 6 }
}
