using System.CommandLine;
using MeLlama.Core.Logging;
using MeLlama.Training.Export;
using static TorchSharp.torch;

namespace MeLlama.Cli.Commands;

/// <summary>`mellama export`: a training checkpoint → a Hugging Face model folder.</summary>
public static class ExportCommand
{
    public static Command Create()
    {
        var checkpoint = new Option<string>("--checkpoint") { Description = "Checkpoint folder (RUN/checkpoints/step-N) or run folder (uses its newest good checkpoint)", Required = true };
        var output = new Option<string>("--out", "-o") { Description = "HF model folder to write (replaced atomically)", Required = true };
        var dtype = new Option<string>("--dtype") { Description = "bf16 (default, as LLaMA-2 ships) or fp32", DefaultValueFactory = _ => "bf16" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer to ship (gpt2, a tokenizer.model, an HF folder); default: the run's" };
        var adapterMode = new Option<string>("--adapter-mode") { Description = "Fine-tuning (LoRA) checkpoints: merge (adapters folded into the weights, default) or peft (adapter_config.json + adapter_model.safetensors)", DefaultValueFactory = _ => "merge" };
        var command = new Command("export", "Write a complete Hugging Face model folder (config, safetensors, index, tokenizer) from a training checkpoint")
        {
            checkpoint, output, dtype, tokenizer, adapterMode,
        };
        command.SetAction(parse =>
        {
            using var log = LogSetup.Create(GlobalOptions.LogOptions(parse));
            ScalarType type;
            switch (parse.GetValue(dtype))
            {
                case "bf16" or "bfloat16": type = ScalarType.BFloat16; break;
                case "fp32" or "float32": type = ScalarType.Float32; break;
                case var other:
                    log.Error("--dtype must be bf16 or fp32, not '{Dtype}'", other);
                    return 2;
            }
            try
            {
                // Fine-tuning runs (finetune_config.json) are rebuilt from their base model + trained weights.
                string dir = Training.Finetune.Loop.FinetuneExporter.IsFinetune(parse.GetValue(checkpoint)!)
                    ? Training.Finetune.Loop.FinetuneExporter.Export(parse.GetValue(checkpoint)!, parse.GetValue(output)!, type,
                        Training.Finetune.Loop.FinetuneExporter.ParseMode(parse.GetValue(adapterMode)!), parse.GetValue(tokenizer), log)
                    : HfExporter.Export(parse.GetValue(checkpoint)!, parse.GetValue(output)!, type, parse.GetValue(tokenizer), log);
                Console.WriteLine(dir);
                return 0;
            }
            catch (Exception e)
            {
                // As before the mapping: a checkpoint or output folder that cannot be read or written is the user's to fix.
                return CommandFailures.Report(e, log, "export", readingInput: true);
            }
        });
        return command;
    }
}
