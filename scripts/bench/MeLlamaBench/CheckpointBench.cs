using System.Diagnostics;
using System.Runtime.InteropServices;
using MeLlama.Model;
using MeLlama.Training.Checkpointing;
using MeLlama.Training.Engine;
using MeLlama.Training.Loop;
using MeLlama.Training.Optim;
using static TorchSharp.torch;

namespace MeLlamaBench;

/// <summary>
/// Checkpoint write and read speed of the bench shape, against the disk's sequential speed that run.sh measures
/// with dd on the same folder:
/// <list type="bullet">
/// <item>HF export (<see cref="HfCheckpoint.Save(LlamaForCausalLM,string,ScalarType,long,Action{string}?)"/>, fp32, fsynced) and
/// <see cref="HfCheckpoint.LoadModel"/> (model built, weights read) with the files dropped from the page cache first;</item>
/// <item>the trainer's checkpoint (<see cref="CheckpointStore.Save"/> of <see cref="SingleProcessTrainStep.SaveState"/>:
/// fp32 weights + AdamW moments, fsync, xxh128 manifest) and its resume read (<see cref="CheckpointStore.FindLatestGood(out List{CheckpointCheck}, IReadOnlySet{string}?, IReadOnlyDictionary{long, string}?)"/>
/// + LoadState, which checks the large files' checksums as it reads them); "load only" is LoadState alone (it verifies too).</item>
/// </list>
/// </summary>
static class CheckpointBench
{
    public static Dictionary<string, object> Run(Args args)
    {
        var shape = BenchShape.FromArgs(args);
        string work = Path.GetFullPath(args.Get("work") ?? throw new ArgumentException("--work DIR is required"));
        int repeats = args.Int("repeats", 3);
        args.RejectUnknown();
        Directory.CreateDirectory(work);

        using var model = ModelFactory.RandomInit(shape.Config, CPU, ScalarType.Float32, seed: 7);
        string hfDir = Path.Combine(work, "hf");
        var save = new List<double>();
        var load = new List<double>();
        var loadCached = new List<double>();
        long hfBytes = 0;
        for (int i = 0; i < repeats; i++)
        {
            // A fresh save each time (replacing a folder would also time deleting the old one).
            if (Directory.Exists(hfDir)) Directory.Delete(hfDir, recursive: true);
            var sw = Stopwatch.StartNew();
            HfCheckpoint.Save(model, hfDir, ScalarType.Float32);
            save.Add(sw.Elapsed.TotalSeconds);
            hfBytes = FolderBytes(hfDir, "*.safetensors");
            bool evicted = DropFromPageCache(hfDir);
            sw.Restart();
            using (var loaded = HfCheckpoint.LoadModel(hfDir)) load.Add(sw.Elapsed.TotalSeconds);
            sw.Restart();
            using (var loaded = HfCheckpoint.LoadModel(hfDir)) loadCached.Add(sw.Elapsed.TotalSeconds);
            TrainBench.Log($"hf checkpoint {hfBytes / 1e9:F3} GB: save {hfBytes / save[^1] / 1e9:F2} GB/s, load (page cache dropped: {evicted}) {hfBytes / load[^1] / 1e9:F2} GB/s, load from page cache {hfBytes / loadCached[^1] / 1e9:F2} GB/s");
        }
        // How much of a load is building the (uninitialised) model rather than reading: construction alone.
        var construct = new List<double>();
        for (int i = 0; i < repeats; i++)
        {
            var sw = Stopwatch.StartNew();
            using var empty = new LlamaForCausalLM(shape.Config, CPU, ScalarType.Float32, initialize: false);
            construct.Add(sw.Elapsed.TotalSeconds);
        }
        TrainBench.Log($"building the empty model: {TrainBench.Median(construct):F3} s");
        Directory.Delete(hfDir, recursive: true);

        // The trainer's checkpoint: weights + optimizer state through CheckpointStore (fsync + xxh128 manifest).
        var options = new TrainStepOptions(0.9, 0.95, 1e-8, 0.1, 1.0, false);
        using var step = new SingleProcessTrainStep(model, options);
        string runDir = Path.Combine(work, "run");
        var store = new CheckpointStore(runDir);
        var trainerSave = new List<double>();
        var trainerResume = new List<double>();
        var trainerLoadOnly = new List<double>();
        long trainerBytes = 0;
        for (int i = 0; i < repeats; i++)
        {
            var sw = Stopwatch.StartNew();
            string dir = store.Save(i + 1, tmp => step.SaveState(tmp));
            trainerSave.Add(sw.Elapsed.TotalSeconds);
            trainerBytes = FolderBytes(dir, "*");
            DropFromPageCache(dir);
            sw.Restart();
            // What Trainer.Run does on one process: the small files are hashed up front, the weights and optimizer
            // state as they load (LoadState throws CheckpointCorruptException on a mismatch).
            var check = store.FindLatestGood(out _, OptimizerCheckpoint.FilesVerifiedWhileLoading);
            if (check?.Dir != dir) throw new InvalidOperationException($"checkpoint check failed: {check?.Problem ?? "no good checkpoint"}");
            double checkSeconds = sw.Elapsed.TotalSeconds;
            step.LoadState(dir, i + 1);
            trainerResume.Add(sw.Elapsed.TotalSeconds);
            TrainBench.Log($"resume: check of the small files {checkSeconds:F3} s, verified load {trainerResume[^1] - checkSeconds:F3} s");
            DropFromPageCache(dir);
            sw.Restart();
            var cpu = Process.GetCurrentProcess().TotalProcessorTime;
            step.LoadState(dir, i + 1);
            trainerLoadOnly.Add(sw.Elapsed.TotalSeconds);
            double loadCpu = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds;
            // The same load again from the page cache: when it is not much faster, the cold load is CPU-bound (hashing), not disk-bound.
            sw.Restart();
            step.LoadState(dir, i + 1);
            TrainBench.Log($"load only: cold {trainerLoadOnly[^1]:F3} s using {loadCpu:F3} CPU-s; from page cache {sw.Elapsed.TotalSeconds:F3} s");
            TrainBench.Log($"trainer checkpoint {trainerBytes / 1e9:F3} GB: save+fsync+checksum {trainerBytes / trainerSave[^1] / 1e9:F2} GB/s, check+load {trainerBytes / trainerResume[^1] / 1e9:F2} GB/s, load only {trainerBytes / trainerLoadOnly[^1] / 1e9:F2} GB/s");
            store.Prune(1);
        }
        // What a resume after preemption does: a new model and engine (never-touched memory, so the page faults of
        // filling it count), the check and the verified load, from a cold page cache. The runs above reuse one engine.
        var freshResume = new List<double>();
        string last = store.List()[0].Dir;
        for (int i = 0; i < repeats; i++)
        {
            DropFromPageCache(last);
            var sw = Stopwatch.StartNew();
            var check = store.FindLatestGood(out _, OptimizerCheckpoint.FilesVerifiedWhileLoading);
            if (check?.Dir != last) throw new InvalidOperationException($"checkpoint check failed: {check?.Problem ?? "no good checkpoint"}");
            using var fresh = ModelFactory.Empty(shape.Config, CPU, ScalarType.Float32);
            using var freshStep = new SingleProcessTrainStep(fresh, options);
            freshStep.LoadState(last, repeats);
            freshResume.Add(sw.Elapsed.TotalSeconds);
            TrainBench.Log($"resume into a fresh model and engine, cold: {freshResume[^1]:F3} s = {trainerBytes / freshResume[^1] / 1e9:F2} GB/s");
        }
        Directory.Delete(runDir, recursive: true);

        Dictionary<string, object> Rates(List<double> seconds, long bytes) => new()
        {
            ["seconds"] = seconds, ["best_gb_per_s"] = bytes / seconds.Min() / 1e9, ["median_gb_per_s"] = bytes / TrainBench.Median(seconds) / 1e9,
        };
        return new Dictionary<string, object>
        {
            ["impl"] = "mellama",
            ["shape"] = shape.Describe(),
            ["hf_bytes"] = hfBytes,
            ["hf_save"] = Rates(save, hfBytes),
            ["hf_load_cold"] = Rates(load, hfBytes),
            ["hf_load_page_cache"] = Rates(loadCached, hfBytes),
            ["hf_model_construction_seconds"] = construct,
            ["trainer_bytes"] = trainerBytes,
            ["trainer_save"] = Rates(trainerSave, trainerBytes),
            ["trainer_check_and_load_cold"] = Rates(trainerResume, trainerBytes),
            ["trainer_load_cold"] = Rates(trainerLoadOnly, trainerBytes),
            ["trainer_fresh_resume_cold"] = Rates(freshResume, trainerBytes),
        };
    }

    static long FolderBytes(string dir, string pattern) => Directory.EnumerateFiles(dir, pattern).Sum(f => new FileInfo(f).Length);

    /// <summary>
    /// Asks the kernel to drop the folder's (already fsynced, hence clean) pages from the page cache, so the next
    /// read comes from the disk. Per file (posix_fadvise DONTNEED), not machine-wide, so nothing else is disturbed.
    /// </summary>
    static bool DropFromPageCache(string dir)
    {
        if (!OperatingSystem.IsLinux()) return false;
        bool all = true;
        foreach (var file in Directory.EnumerateFiles(dir))
        {
            using var handle = File.OpenHandle(file, FileMode.Open, FileAccess.Read);
            all &= posix_fadvise((int)handle.DangerousGetHandle(), 0, 0, PosixFadvDontNeed) == 0;
        }
        return all;
    }

    const int PosixFadvDontNeed = 4;
    [DllImport("libc", SetLastError = true)] static extern int posix_fadvise(int fd, long offset, long len, int advice);
}
