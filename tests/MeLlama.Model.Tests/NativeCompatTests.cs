using System.Diagnostics;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Model.Tests;

/// <summary>TorchSharp must load and compute through the normal build output on this host.</summary>
public class NativeCompatTests
{
    [Fact]
    public void TorchSharp_runs_a_matmul_and_a_backward_pass()
    {
        using var scope = NewDisposeScope();
        var a = randn(64, 64, requires_grad: true);
        var b = randn(64, 64);
        var loss = a.matmul(b).pow(2).sum();
        loss.backward();
        var expected = 2 * a.matmul(b).matmul(b.t());
        Assert.True(a.grad!.allclose(expected.detach(), rtol: 1e-4, atol: 1e-4));
    }

    [SkippableFact]
    public void Output_copy_is_patched_only_when_the_host_libstdcxx_is_old()
    {
        var native = Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        Skip.IfNot(OperatingSystem.IsLinux() && File.Exists(native), "Linux build output with TorchSharp-cpu natives only");
        bool hostIsNew = HostLibStdCxx() is { } host && File.ReadAllText(host, System.Text.Encoding.Latin1).Contains("GLIBCXX_3.4.32\0");
        var shim = Path.Combine(Path.GetDirectoryName(native)!, "libmellama-stdcxx-compat.so");
        bool patched = File.ReadAllText(native, System.Text.Encoding.Latin1).Contains("libmellama-stdcxx-compat.so\0");
        Assert.Equal(!hostIsNew, patched);
        Assert.Equal(!hostIsNew, File.Exists(shim));
        // Whatever the host, the library loads: this process already ran torch code.
        using var t = ones(2, 2);
        Assert.Equal(4f, t.sum().item<float>());
    }

    [SkippableFact]
    public void Package_cache_copy_is_never_modified()
    {
        var cache = Environment.GetEnvironmentVariable("NUGET_PACKAGES") ?? Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".nuget", "packages");
        var original = Path.Combine(cache, "torchsharp", "0.107.0", "runtimes", "linux-x64", "native", "libLibTorchSharp.so");
        Skip.IfNot(File.Exists(original), "TorchSharp package cache not at the default location");
        Assert.DoesNotContain("libmellama-stdcxx-compat.so\0", File.ReadAllText(original, System.Text.Encoding.Latin1));
    }

    static string? HostLibStdCxx()
    {
        foreach (var line in File.ReadLines("/proc/self/maps"))
            if (line.Contains("libstdc++.so") && line.IndexOf('/') is var i and >= 0) return line[i..].Trim();
        return null;
    }
}
