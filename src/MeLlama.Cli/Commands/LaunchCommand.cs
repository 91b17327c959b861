using System.CommandLine;
using MeLlama.Core.Logging;
using MeLlama.Distributed.Launch;

namespace MeLlama.Cli.Commands;

/// <summary>
/// `mellama launch --nproc N -- &lt;command...&gt;`: N local ranks of a mellama command, like
/// `torchrun --standalone --nproc-per-node N`. Under Slurm, use one srun task per GPU instead.
/// </summary>
public static class LaunchCommand
{
    public static Command Create()
    {
        var nproc = new Option<int>("--nproc") { Description = "Number of ranks to start on this machine (one per GPU, or a few on CPU)", Required = true };
        var masterAddr = new Option<string>("--master-addr") { Description = "Address of rank 0's rendezvous store", DefaultValueFactory = _ => "127.0.0.1" };
        var masterPort = new Option<int?>("--master-port") { Description = "Port of rank 0's rendezvous store (default: a free port)" };
        var grace = new Option<double>("--stop-grace-s") { Description = "After a rank fails, seconds the others get to exit after SIGTERM before SIGKILL", DefaultValueFactory = _ => 30 };
        var arguments = new Argument<string[]>("command") { Description = "The mellama command each rank runs, after --", Arity = ArgumentArity.OneOrMore };

        var command = new Command("launch", "Start N local ranks of a mellama command (torchrun-style), forward signals, stop all if one fails");
        foreach (var o in new Option[] { nproc, masterAddr, masterPort, grace }) command.Options.Add(o);
        command.Arguments.Add(arguments);
        command.SetAction(parse =>
        {
            int n = parse.GetValue(nproc);
            var args = parse.GetValue(arguments) ?? [];
            int? port = parse.GetValue(masterPort);
            if (n < 1) return Usage("--nproc must be at least 1");
            if (args.Length == 0) return Usage("give the command to run after --, e.g. `mellama launch --nproc 2 -- collectives-selftest`");
            if (args[0] == "launch") return Usage("launch cannot launch itself");
            if (port is < 1 or > 65535) return Usage($"--master-port {port} is not a TCP port");
            if (parse.GetValue(grace) < 0) return Usage("--stop-grace-s must not be negative");

            using var log = LogSetup.Create(GlobalOptions.LogOptions(parse));
            var options = new LaunchOptions
            {
                ProcessCount = n,
                Arguments = args,
                MasterAddr = parse.GetValue(masterAddr)!,
                MasterPort = port,
                StopGrace = TimeSpan.FromSeconds(parse.GetValue(grace)),
            };
            return new LocalLauncher(options, Console.Out, Console.Error, log).Run();
        });
        return command;
    }

    static int Usage(string message)
    {
        Console.Error.WriteLine($"launch: {message}");
        return 2;
    }
}
