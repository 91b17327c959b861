using System.CommandLine;
using MeLlama.Cli;

var root = new RootCommand("MeLlama: continual pretraining, instruction tuning and evaluation of LLaMA-2 medical models.");
foreach (var option in GlobalOptions.All) root.Options.Add(option);
foreach (var command in CommandCatalog.Create()) root.Subcommands.Add(command);
return await root.Parse(args).InvokeAsync();
