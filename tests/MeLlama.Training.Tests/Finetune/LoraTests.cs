using System.Text.Json.Nodes;
using MeLlama.Model;
using MeLlama.TestSupport;
using MeLlama.Training.Engine;
using MeLlama.Training.Finetune.Data;
using MeLlama.Training.Finetune.Engine;
using MeLlama.Training.Finetune.Lora;
using static TorchSharp.torch;

namespace MeLlama.Training.Tests.Finetune;

public class LoraTests
{
    public LoraTests() => FinetuneTestSupport.SingleThread();

    static readonly int[][] Inputs = FinetuneTestSupport.RandomRows(2, 12, 300, seed: 5);

    static Tensor Logits(LlamaForCausalLM model, int[][] rows)
    {
        using var _ = no_grad();
        model.eval();
        return model.forward(FinetuneTestSupport.Ids(rows));
    }

    /// <summary>Gives every B a random value so adapters really act.</summary>
    static void RandomizeB(LoraModel lora, int seed)
    {
        using var _ = no_grad();
        var generator = new TorchSharp.torch.Generator((ulong)seed);
        foreach (var layer in lora.Layers) layer.B.weight!.normal_(0, 0.05, generator);
    }

    [SkippableFact]
    public void FreshAdaptersLeaveTheFixtureModelsOutputsUnchanged()
    {
        using var model = HfCheckpoint.LoadModel(SharedData.Require(SharedData.TinyLlama));
        int[][] rows = [[1, 450, 16500, 338, 263, 2924, 29892, 541, 278, 11460]];
        using var before = Logits(model, rows);
        using var lora = LoraModel.Apply(model, new LoraConfig { Rank = 4, Alpha = 8, Dropout = 0.1 });
        using var after = Logits(model, rows);
        Assert.Equal(0.0, (after - before).abs().max().item<float>());
        // The adapters did run: A is random, B is zero.
        Assert.All(lora.Layers, l => Assert.True(l.A.weight!.abs().sum().item<float>() > 0));
        Assert.All(lora.Layers, l => Assert.Equal(0f, l.B.weight!.abs().sum().item<float>()));
        Assert.Equal(2 * 7, lora.Layers.Count);
    }

    [Fact]
    public void AdapterParametersCarryPeftNamesAndAreTheOnlyTrainableOnes()
    {
        using var model = new LlamaForCausalLM(FinetuneTestSupport.SmallConfig(), seed: 1);
        using var lora = LoraModel.Apply(model, new LoraConfig { Rank = 4, TargetModules = ["q_proj", "v_proj", "down_proj"] });
        var trainable = model.named_parameters().Where(p => p.parameter.requires_grad).Select(p => p.name).Order().ToList();
        var expected = new List<string>();
        for (int layer = 0; layer < 2; layer++)
            foreach (var path in new[] { "self_attn.q_proj", "self_attn.v_proj", "mlp.down_proj" })
                foreach (var m in new[] { "lora_A", "lora_B" })
                    expected.Add($"model.layers.{layer}.{path}.{m}.weight");
        Assert.Equal(expected.Order().ToList(), trainable);
        Assert.Equal(expected.Order(), lora.AdapterParameters().Select(p => p.Name).Order());
        // Shapes: A [r, in], B [out, r].
        var q = lora.Layers.First(l => l.Name.EndsWith("q_proj", StringComparison.Ordinal));
        Assert.Equal(new long[] { 4, 64 }, q.A.weight!.shape);
        Assert.Equal(new long[] { 64, 4 }, q.B.weight!.shape);
        // A ~ U(-1/sqrt(in), 1/sqrt(in)).
        Assert.True(q.A.weight!.abs().max().item<float>() <= 1 / Math.Sqrt(64) + 1e-6);
    }

    [Fact]
    public void MergedAndUnmergedAdaptersGiveTheSameLogits()
    {
        using var model = new LlamaForCausalLM(FinetuneTestSupport.SmallConfig(), seed: 2);
        var baseWeights = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        using var lora = LoraModel.Apply(model, new LoraConfig { Rank = 8, Alpha = 16, Dropout = 0.2 });
        RandomizeB(lora, 3);
        using var unmerged = Logits(model, Inputs);
        using var baseLogits = LogitsWithoutAdapters(model, baseWeights);
        Assert.True((unmerged - baseLogits).abs().max().item<float>() > 1e-3, "adapters must change the output for this test to mean anything");

        LoraExport.MergeInto(lora);
        Assert.True(lora.Merged);
        using var merged = Logits(model, Inputs);
        Assert.True(allclose(merged, unmerged, rtol: 1e-5, atol: 1e-5), $"max diff {(merged - unmerged).abs().max().item<float>()}");
        // The merged weight is W + (alpha/r)·B·A.
        var q = lora.Layers[0];
        using var expectedW = baseWeights[q.Name + ".weight"] + 2.0 * q.B.weight!.matmul(q.A.weight!);
        Assert.True(allclose(q.Base.weight!, expectedW, rtol: 1e-6, atol: 1e-6));

        lora.Unmerge();
        Assert.True(allclose(q.Base.weight!, baseWeights[q.Name + ".weight"], rtol: 1e-6, atol: 1e-6));
        using var again = Logits(model, Inputs);
        Assert.True(allclose(again, unmerged, rtol: 1e-5, atol: 1e-5));
    }

    static Tensor LogitsWithoutAdapters(LlamaForCausalLM model, Dictionary<string, Tensor> baseWeights)
    {
        using var plain = new LlamaForCausalLM(model.Config, initialize: false);
        using (no_grad())
            foreach (var (name, p) in plain.named_parameters()) p.copy_(baseWeights[name]);
        return Logits(plain, Inputs);
    }

    [Fact]
    public void LoraTrainingChangesOnlyAdapterParameters()
    {
        using var model = new LlamaForCausalLM(FinetuneTestSupport.SmallConfig(), seed: 4);
        using var lora = LoraModel.Apply(model, new LoraConfig { Rank = 4, Alpha = 8, Dropout = 0.1 });
        var before = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.detach().clone());
        using var step = new SftTrainStep(model, new TrainStepOptions(0.9, 0.95, 1e-8, WeightDecay: 0.01, GradClip: 1.0, ActivationCheckpointing: false));
        Assert.Equal(lora.AdapterParameters().Select(p => p.Name).Order(), step.TrainedParameterNames.Order());

        // Rows: first half prompt (no loss), second half targets.
        var rows = FinetuneTestSupport.RandomRows(4, 17, 300, seed: 9)
            .Select(r => r.Select((id, i) => SftRows.Encode(id, target: i >= 8)).ToArray()).ToArray();
        using var batch = tensor(rows.SelectMany(r => r).ToArray(), [4, 17]);
        double first = 0, last = 0;
        for (int i = 0; i < 5; i++)
        {
            var result = step.Step([batch], lr: 1e-2);
            Assert.False(result.Skipped);
            Assert.Equal(4 * 9, result.Tokens);
            if (i == 0) first = result.Loss;
            last = result.Loss;
        }
        Assert.True(last < first, $"loss should fall ({first} → {last})");
        foreach (var (name, p) in model.named_parameters())
        {
            bool changed = (p.detach() - before[name]).abs().max().item<float>() != 0;
            Assert.True(changed == LoraModel.IsAdapterParameter(name), $"{name}: changed={changed}");
        }
    }

    [Fact]
    public void PeftAdapterRoundTripsAndHasPeftLayout()
    {
        using var dir = new TempDir();
        var config = FinetuneTestSupport.SmallConfig();
        using var model = new LlamaForCausalLM(config, seed: 6);
        using var lora = LoraModel.Apply(model, new LoraConfig { Rank = 4, Alpha = 16, Dropout = 0.05, TargetModules = ["q_proj", "k_proj", "v_proj", "o_proj"] });
        RandomizeB(lora, 7);
        using var expected = Logits(model, Inputs);
        LoraExport.WritePeftAdapter(lora, dir["adapter"], "meta-llama/Llama-2-13b-hf");

        var json = JsonNode.Parse(File.ReadAllText(dir["adapter/adapter_config.json"]))!;
        Assert.Equal("LORA", json["peft_type"]!.GetValue<string>());
        Assert.Equal("CAUSAL_LM", json["task_type"]!.GetValue<string>());
        Assert.Equal(4, json["r"]!.GetValue<int>());
        Assert.Equal(16, json["lora_alpha"]!.GetValue<int>());
        Assert.Equal(0.05, json["lora_dropout"]!.GetValue<double>());
        Assert.Equal("meta-llama/Llama-2-13b-hf", json["base_model_name_or_path"]!.GetValue<string>());
        Assert.Equal(["q_proj", "k_proj", "v_proj", "o_proj"], json["target_modules"]!.AsArray().Select(n => n!.GetValue<string>()));
        using (var reader = SafeTensorsReader.Open(dir["adapter/adapter_model.safetensors"]))
        {
            Assert.Contains("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", reader.Entries.Keys);
            Assert.Contains("base_model.model.model.layers.1.self_attn.o_proj.lora_B.weight", reader.Entries.Keys);
            Assert.Equal(2 * 4 * 2, reader.Entries.Count);
        }

        // A fresh copy of the base plus the adapter folder computes the same function.
        using var fresh = new LlamaForCausalLM(config, seed: 6);
        using var loaded = LoraExport.LoadPeftAdapter(fresh, dir["adapter"]);
        using var actual = Logits(fresh, Inputs);
        Assert.True(allclose(actual, expected, rtol: 1e-6, atol: 1e-6));
    }

    [Fact]
    public void MergedExportIsAPlainModelWithTheSameOutputs()
    {
        using var dir = new TempDir();
        using var model = new LlamaForCausalLM(FinetuneTestSupport.SmallConfig(), seed: 8);
        using var lora = LoraModel.Apply(model, new LoraConfig { Rank = 4 });
        RandomizeB(lora, 9);
        using var expected = Logits(model, Inputs);
        LoraExport.WriteMergedModel(lora, dir["merged"], ScalarType.Float32, tokenizer: null, template: null);
        Assert.False(lora.Merged);   // merged only for the write
        using var exported = HfCheckpoint.LoadModel(dir["merged"]);
        Assert.DoesNotContain(exported.named_parameters(), p => LoraModel.IsAdapterParameter(p.name));
        using var actual = Logits(exported, Inputs);
        Assert.True(allclose(actual, expected, rtol: 1e-5, atol: 1e-5));
    }

    [Fact]
    public void BadConfigsAndAdapterFilesAreRefused()
    {
        Assert.Throws<ArgumentException>(() => new LoraConfig { Rank = 0 }.Validate());
        Assert.Throws<ArgumentException>(() => new LoraConfig { TargetModules = ["lm_head"] }.Validate());
        Assert.Throws<ArgumentException>(() => new LoraConfig { Dropout = 1 }.Validate());
        using var dir = new TempDir();
        Directory.CreateDirectory(dir["a"]);
        File.WriteAllText(dir["a/adapter_config.json"], """{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], "use_dora": true}""");
        var e = Assert.Throws<InvalidDataException>(() => LoraExport.ReadPeftConfig(dir["a"]));
        Assert.Contains("use_dora", e.Message);
    }
}
