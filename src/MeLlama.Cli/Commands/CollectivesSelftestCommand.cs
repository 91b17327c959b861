using System.CommandLine;
using System.Runtime.InteropServices;
using MeLlama.Core.Logging;
using MeLlama.Distributed;
using MeLlama.Distributed.Diagnostics;
using MeLlama.Distributed.Launch;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Cli.Commands;

/// <summary>
/// `mellama collectives-selftest`: a cluster health check (like nccl-tests). Run it under `mellama launch`
/// or srun; every rank checks every collective on known data and rank 0 prints timings and bandwidths.
/// </summary>
public static class CollectivesSelftestCommand
{
    public static Command Create()
    {
        var sizes = new Option<string>("--sizes") { Description = "Comma-separated buffer sizes (4K, 1M, 64M, ...)", DefaultValueFactory = _ => "4K,1M,16M" };
        var dtypes = new Option<string>("--dtypes") { Description = "Comma-separated dtypes: float32, bfloat16, float16, float64, int64, int32", DefaultValueFactory = _ => "float32,bfloat16" };
        var iterations = new Option<int>("--iterations") { Description = "Timed repetitions per case", DefaultValueFactory = _ => 5 };
        var warmup = new Option<int>("--warmup") { Description = "Untimed repetitions per case", DefaultValueFactory = _ => 1 };
        var ops = new Option<string>("--ops") { Description = "Comma-separated collectives: all_reduce, reduce_scatter, all_gather, broadcast", DefaultValueFactory = _ => string.Join(',', SelfTestOptions.AllOps) };
        var loops = new Option<int>("--loops") { Description = "Repeat the suite (0 = until SIGTERM/SIGUSR1, then exit 75)", DefaultValueFactory = _ => 1 };
        var device = new Option<string>("--device") { Description = "cpu or cuda (cuda uses NCCL on the rank's local GPU)", DefaultValueFactory = _ => "cpu" };
        var backend = new Option<string>("--backend") { Description = "auto, tcp, nccl or single", DefaultValueFactory = _ => "auto" };
        var timeout = new Option<double?>("--timeout-s") { Description = "Bound on each collective, seconds (default MELLAMA_COLLECTIVE_TIMEOUT_S or 600)" };
        var failRank = new Option<int?>("--fail-rank") { Description = "Diagnostics: this rank exits with code 3 after joining, as a crash would", Hidden = true };

        var command = new Command("collectives-selftest", "Check every collective across the job's ranks on known data and report timings (a cluster health check)");
        foreach (var o in new Option[] { sizes, dtypes, ops, iterations, warmup, loops, device, backend, timeout, failRank }) command.Options.Add(o);
        command.SetAction(parse =>
        {
            DistributedEnvironment env;
            SelfTestOptions test;
            CollectivesOptions options;
            try
            {
                env = Rendezvous.FromEnvironment();
                test = new SelfTestOptions
                {
                    SizesBytes = parse.GetValue(sizes)!.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(CollectivesSelfTest.ParseSize).ToArray(),
                    DTypes = parse.GetValue(dtypes)!.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(CollectivesSelfTest.ParseDType).ToArray(),
                    Iterations = parse.GetValue(iterations),
                    Warmup = parse.GetValue(warmup),
                    Loops = parse.GetValue(loops),
                    Ops = parse.GetValue(ops)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                        .Select(op => SelfTestOptions.AllOps.Contains(op) ? op : throw new FormatException($"--ops: unknown collective '{op}' ({string.Join(", ", SelfTestOptions.AllOps)})"))
                        .ToHashSet(),
                };
                options = CollectivesOptions.FromEnvironment();
                if (parse.GetValue(timeout) is double seconds)
                    options = seconds > 0 ? options with { Timeout = TimeSpan.FromSeconds(seconds) } : throw new FormatException("--timeout-s must be positive");
                options = options with
                {
                    Backend = parse.GetValue(backend)!.ToLowerInvariant() switch
                    {
                        "auto" => CollectiveBackend.Auto, "tcp" => CollectiveBackend.Tcp, "nccl" => CollectiveBackend.Nccl, "single" => CollectiveBackend.Single,
                        var other => throw new FormatException($"--backend '{other}' is not auto, tcp, nccl or single"),
                    },
                };
                string deviceName = parse.GetValue(device)!.ToLowerInvariant();
                if (deviceName is not ("cpu" or "cuda")) throw new FormatException($"--device '{deviceName}' is not cpu or cuda");
                if (deviceName == "cuda")
                {
                    if (!cuda.is_available()) throw new FormatException("--device cuda: no CUDA device is available (is this the CUDA build of mellama?)");
                    test = test with { Device = new Device(DeviceType.CUDA, env.CudaDeviceIndex(cuda.device_count())) };
                }
            }
            catch (Exception e) when (e is DistributedEnvironmentException or FormatException)
            {
                return CommandFailures.Report(e, parse.InvocationConfiguration.Error, "collectives-selftest");
            }

            using var log = LogSetup.Create(GlobalOptions.LogOptions(parse, env.IsDistributed ? env.Rank : null));
            int stopSignal = 0;
            using var term = PosixSignalRegistration.Create(PosixSignal.SIGTERM, c => { c.Cancel = true; stopSignal = PosixSignals.SIGTERM; });
            using var usr1 = PosixSignalRegistration.Create(PosixSignals.AsPosixSignal(PosixSignals.SIGUSR1), c => { c.Cancel = true; stopSignal = PosixSignals.SIGUSR1; });
            try
            {
                using var comm = Collectives.Create(env, options with { Logger = log }, test.Device);
                log.Information("Rank {Rank} of {World} ready on the {Backend} backend", comm.Rank, comm.WorldSize, comm.Backend);
                if (parse.GetValue(failRank) == env.Rank)
                {
                    log.Error("Simulating a crash of rank {Rank} (--fail-rank)", env.Rank);
                    Console.Out.Flush();
                    Environment.Exit(3);
                }
                int code = CollectivesSelfTest.Run(comm, test, Console.Out, log, () => stopSignal != 0);
                if (code == CollectivesSelfTest.StoppedExitCode) log.Warning("Stopped on {Signal}", PosixSignals.Name(stopSignal));
                return code;
            }
            catch (Exception e)
            {
                return CommandFailures.Report(e, log, "collectives-selftest");
            }
        });
        return command;
    }
}
