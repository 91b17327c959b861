using MeLlama.Model;
using MeLlama.TestSupport;
using MeLlama.Training.Engine;
using MeLlama.Training.Finetune.Config;
using MeLlama.Training.Finetune.Loop;
using MeLlama.Training.Loop;
using MeLlama.Training.Runtime;
using static TorchSharp.torch;

namespace MeLlama.Training.Tests.Finetune;

public class FinetuneResumeTests
{
    static string WriteData(string path)
    {
        var lines = Enumerable.Range(0, 10).Select(i =>
            $$"""{"instruction": "Patient {{i}} has a heart rate of {{60 + 7 * i}}. Classify it.", "output": "{{(60 + 7 * i > 100 ? "Tachycardia" : "Normal")}} (rate {{60 + 7 * i}})."}""");
        File.WriteAllLines(path, lines);
        return path;
    }

    static FinetuneConfig Config(string runDir, string data, string method) => FinetuneConfigLoader.Load("demo",
    [
        $"run_dir={runDir}", $"data.train=[\"{data}\"]", $"method={method}",
        "model.arch.hidden_size=32", "model.arch.num_hidden_layers=2", "model.arch.num_attention_heads=2", "model.arch.num_key_value_heads=1",
        "model.arch.intermediate_size=64", "model.arch.max_position_embeddings=64",
        "seq_len=63", "micro_batch=2", "grad_accum=2", "max_steps=8", "threads=1", "device=cpu",
        "lora.rank=4", "lora.alpha=8", "lora.dropout=0.1", "optimizer.lr=0.003",
        "eval.interval=0", "checkpoint.interval=100", "tensorboard=false", "data.eval_fraction=0.2",
    ]);

    static Dictionary<string, float[]> Weights(string checkpointDir)
    {
        using var reader = SafeTensorsReader.Open(Path.Combine(checkpointDir, CheckpointFiles.Model));
        return reader.Entries.Keys.ToDictionary(n => n, n =>
        {
            using var t = reader.ReadTensor(n, ScalarType.Float32);
            return t.data<float>().ToArray();
        });
    }

    [Theory]
    [InlineData("lora")]
    [InlineData("full")]
    public void PreemptedRunResumesToTheSameWeightsAsAnUninterruptedOne(string method)
    {
        using var dir = new TempDir();
        string data = WriteData(dir["data.jsonl"]);
        // Something else in the process keeps drawing from torch's global generator (as other tests, or another
        // model, do): the dropout masks must not depend on it.
        using var noise = new GlobalRngNoise();

        var straight = new FinetuneTrainer(Config(dir["a"], data, method), new FinetuneOptions()).Run();
        Assert.Equal(TrainEnd.Completed, straight.End);

        using (var signals = new StopSignals())
        {
            var first = new FinetuneTrainer(Config(dir["b"], data, method),
                new FinetuneOptions { Signals = signals, AfterStep = step => { if (step == 3) signals.Request("SIGUSR1"); } }).Run();
            Assert.Equal(TrainEnd.Preempted, first.End);
            Assert.Equal(3, first.Step);
            Assert.Equal(ExitCodes.Preempted, first.ExitCode);
        }
        var resumed = new FinetuneTrainer(Config(dir["b"], data, method), new FinetuneOptions()).Run();
        Assert.Equal(TrainEnd.Completed, resumed.End);
        Assert.Equal(8, resumed.Step);

        var expected = Weights(straight.Checkpoint!);
        var actual = Weights(resumed.Checkpoint!);
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        if (method == "lora") Assert.All(expected.Keys, k => Assert.Contains(".lora_", k));
        foreach (var (name, values) in expected) Assert.Equal(values, actual[name]);
        // A LoRA checkpoint on a random base also stores the frozen base so export can rebuild it anywhere.
        Assert.Equal(method == "lora", File.Exists(Path.Combine(resumed.Checkpoint!, FinetuneCheckpointFiles.BaseModel)));
    }

    sealed class GlobalRngNoise : IDisposable
    {
        readonly CancellationTokenSource _stop = new();
        readonly Thread _thread;

        public GlobalRngNoise()
        {
            _thread = new Thread(() =>
            {
                while (!_stop.IsCancellationRequested)
                {
                    using var t = rand(16);
                    Thread.Sleep(1);
                }
            }) { IsBackground = true };
            _thread.Start();
        }

        public void Dispose()
        {
            _stop.Cancel();
            _thread.Join();
            _stop.Dispose();
        }
    }

    [Fact]
    public void PeftExportFromACheckpointLoadsBackOnTheBase()
    {
        using var dir = new TempDir();
        var outcome = new FinetuneTrainer(Config(dir["run"], WriteData(dir["data.jsonl"]), "lora"), new FinetuneOptions()).Run();
        string merged = FinetuneExporter.Export(dir["run"], dir["merged"], ScalarType.Float32, AdapterExportMode.Merge);
        string adapter = FinetuneExporter.Export(dir["run"], dir["adapter"], ScalarType.Float32, AdapterExportMode.Peft);
        Assert.True(File.Exists(Path.Combine(adapter, "adapter_config.json")));
        Assert.True(File.Exists(Path.Combine(adapter, "mellama_chat_template.json")));

        // Base weights (stored in the checkpoint: random init) + PEFT adapter = merged model.
        using var baseModel = new MeLlama.Model.LlamaForCausalLM(MeLlama.Model.HfCheckpoint.LoadConfig(merged), initialize: false);
        using (var reader = SafeTensorsReader.Open(Path.Combine(outcome.Checkpoint!, FinetuneCheckpointFiles.BaseModel)))
        using (no_grad())
            foreach (var (name, p) in baseModel.named_parameters()) { using var t = reader.ReadTensor(name, ScalarType.Float32); p.copy_(t); }
        using var lora = MeLlama.Training.Finetune.Lora.LoraExport.LoadPeftAdapter(baseModel, adapter);
        using var mergedModel = MeLlama.Model.HfCheckpoint.LoadModel(merged);
        baseModel.eval();
        mergedModel.eval();
        using var ids = tensor(new long[] { 50256, 464, 5827, 468, 257, 2612, 2494 }, [1, 7]);
        using var _ = no_grad();
        Assert.True(allclose(baseModel.forward(ids), mergedModel.forward(ids), rtol: 1e-5, atol: 1e-5));
    }
}
