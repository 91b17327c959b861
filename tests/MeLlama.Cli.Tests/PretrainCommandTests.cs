using System.CommandLine;
using MeLlama.Cli.Commands;
using MeLlama.Distributed;

namespace MeLlama.Cli.Tests;

public class PretrainCommandTests
{
    static int Mellama(params string[] args)
    {
        var root = new RootCommand();
        foreach (var option in GlobalOptions.All) root.Options.Add(option);
        foreach (var command in CommandCatalog.Create()) root.Subcommands.Add(command);
        return root.Parse(args).Invoke(new InvocationConfiguration { Output = new StringWriter(), Error = new StringWriter() });
    }

    static DistributedEnvironment Rank(int rank, int world) => new(rank, world, rank, world, "127.0.0.1", 29500, LaunchSource.Torchrun);

    [Fact]
    public void Each_rank_logs_to_its_own_json_file_rank_zero_to_the_usual_one()
    {
        string path = Path.Combine("run", "logs", "pretrain.jsonl");
        Assert.Equal(path, PretrainCommand.RankLogFile(path, DistributedEnvironment.Single));
        Assert.Equal(path, PretrainCommand.RankLogFile(path, Rank(0, 4)));
        Assert.Equal(Path.Combine("run", "logs", "pretrain.rank3.jsonl"), PretrainCommand.RankLogFile(path, Rank(3, 4)));
    }

    [Theory]
    [InlineData("parallel.strategy=zero9")]
    [InlineData("parallel.stratgy=full_shard")]
    public void A_bad_parallel_setting_is_a_bad_recipe_exit_2(string assignment)
    {
        Assert.Equal(2, Mellama("pretrain", "--config", "demo", "--set", assignment, "--print-config", "-q"));
    }

    [Theory]
    [InlineData("full_shard")]
    [InlineData("shard_grad_op")]
    [InlineData("no_shard")]
    public void Every_documented_strategy_is_an_accepted_recipe_value(string strategy)
    {
        Assert.Equal(0, Mellama("pretrain", "--config", "demo", "--set", $"parallel.strategy={strategy}", "--print-config", "-q"));
    }
}
