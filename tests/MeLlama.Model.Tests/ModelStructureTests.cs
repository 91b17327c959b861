using MeLlama.TestSupport;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Model.Tests;

public class ModelStructureTests
{
    static IEnumerable<(string Name, long[] Shape)> HfParameters(LlamaConfig c)
    {
        long d = c.HiddenSize, q = (long)c.NumHeads * c.HeadDim, kv = (long)c.NumKvHeads * c.HeadDim;
        yield return ("model.embed_tokens.weight", [c.VocabSize, d]);
        for (int i = 0; i < c.NumLayers; i++)
        {
            string p = $"model.layers.{i}.";
            yield return (p + "self_attn.q_proj.weight", [q, d]);
            yield return (p + "self_attn.k_proj.weight", [kv, d]);
            yield return (p + "self_attn.v_proj.weight", [kv, d]);
            yield return (p + "self_attn.o_proj.weight", [d, q]);
            yield return (p + "mlp.gate_proj.weight", [c.IntermediateSize, d]);
            yield return (p + "mlp.up_proj.weight", [c.IntermediateSize, d]);
            yield return (p + "mlp.down_proj.weight", [d, c.IntermediateSize]);
            yield return (p + "input_layernorm.weight", [d]);
            yield return (p + "post_attention_layernorm.weight", [d]);
        }
        yield return ("model.norm.weight", [d]);
        if (!c.TieWordEmbeddings) yield return ("lm_head.weight", [c.VocabSize, d]);
    }

    [Theory]
    [InlineData(2, false)]
    [InlineData(4, false)]
    [InlineData(1, true)]
    public void Parameter_names_and_shapes_are_hugging_face_ones(int kvHeads, bool tied)
    {
        var config = Fixtures.TinyConfig(kvHeads, tied);
        using var model = new LlamaForCausalLM(config);
        var actual = model.named_parameters().ToDictionary(p => p.name, p => p.parameter.shape);
        var expected = HfParameters(config).ToDictionary(p => p.Name, p => p.Shape);
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
        foreach (var (name, shape) in expected) Assert.Equal(shape, actual[name]);
        Assert.Equal(config.ParameterCount(), model.parameters().Sum(p => p.numel()));
        Assert.Equal(tied, model.LmHead is null);
        Assert.Equal(config.NumLayers, model.Layers.Count);
    }

    [SkippableFact]
    public void Parameter_names_match_the_fixture_checkpoint_exactly()
    {
        string dir = SharedData.Require(SharedData.TinyLlama);
        using var checkpoint = SafeTensorsCheckpoint.Open(dir);
        using var model = new LlamaForCausalLM(HfCheckpoint.LoadConfig(dir), device: META, initialize: false);
        Assert.Equal(checkpoint.Names.Order(), model.named_parameters().Select(p => p.name).Order());
        foreach (var (name, parameter) in model.named_parameters())
            Assert.Equal(checkpoint.Entry(name).Shape, parameter.shape);
    }

    [Fact]
    public void Presets_have_the_published_parameter_counts()
    {
        // Parameter counts of meta-llama/Llama-2-{7b,13b,70b}-hf as reported by transformers' num_parameters().
        Assert.Equal(6_738_415_616, LlamaConfig.Llama2_7B.ParameterCount());
        Assert.Equal(13_015_864_320, LlamaConfig.Llama2_13B.ParameterCount());
        Assert.Equal(68_976_648_192, LlamaConfig.Llama2_70B.ParameterCount());
        Assert.Equal(8, LlamaConfig.Llama2_70B.KvGroups);
        Assert.Equal(128, LlamaConfig.Llama2_13B.HeadDim);
    }

    [Fact]
    public void A_70B_shaped_model_can_be_built_on_the_meta_device_without_memory()
    {
        using var model = new LlamaForCausalLM(LlamaConfig.Llama2_70B, device: META, dtype: ScalarType.BFloat16);
        Assert.Equal(LlamaConfig.Llama2_70B.ParameterCount(), model.parameters().Sum(p => p.numel()));
        Assert.All(model.parameters(), p => Assert.True(p.is_meta));
    }

    [Fact]
    public void Decoder_layers_run_one_by_one_give_the_full_forward()
    {
        using var model = new LlamaForCausalLM(Fixtures.TinyConfig(), seed: 3);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = Fixtures.Ids(Fixtures.RandomTokens(12, 300, 1));
        var full = model.forward(ids);

        var hidden = model.Embedding.forward(ids);
        var rope = model.Rotary.Tables(0, 12, hidden.device, hidden.dtype);
        foreach (var layer in model.Layers) hidden = layer.call(hidden, rope);
        var unitByUnit = model.Logits(model.FinalNorm.forward(hidden));
        Assert.True(full.equal(unitByUnit).all().item<bool>());
    }

    [Fact]
    public void Initialization_is_deterministic_per_seed_and_follows_hf()
    {
        var config = Fixtures.TinyConfig();
        using var a = new LlamaForCausalLM(config, seed: 7);
        using var b = new LlamaForCausalLM(config, seed: 7);
        using var c = new LlamaForCausalLM(config, seed: 8);
        var pa = a.named_parameters().ToList();
        var pb = b.named_parameters().ToList();
        var pc = c.named_parameters().ToList();
        for (int i = 0; i < pa.Count; i++)
        {
            Assert.True(pa[i].parameter.equal(pb[i].parameter).all().item<bool>(), pa[i].name);
            if (pa[i].name.EndsWith("norm.weight")) Assert.Equal(1f, pa[i].parameter.min().item<float>());
            else Assert.False(pa[i].parameter.equal(pc[i].parameter).all().item<bool>(), pa[i].name);
        }
        var embedding = a.Embedding.Weight;
        Assert.InRange(embedding.std().item<float>(), 0.019, 0.021);
    }

    [Fact]
    public void Gqa_equals_multi_head_attention_with_repeated_key_value_heads()
    {
        // A GQA model is the MHA model whose k/v projections repeat each KV head for its group of query heads.
        var gqaConfig = Fixtures.TinyConfig(kvHeads: 2);
        var mhaConfig = gqaConfig with { NumKvHeads = gqaConfig.NumHeads };
        using var gqa = new LlamaForCausalLM(gqaConfig, seed: 11);
        using var mha = new LlamaForCausalLM(mhaConfig, initialize: false);
        int groups = gqaConfig.KvGroups, headDim = gqaConfig.HeadDim;
        using (no_grad())
        {
            var source = gqa.named_parameters().ToDictionary(p => p.name, p => (Tensor)p.parameter);
            foreach (var (name, target) in mha.named_parameters())
            {
                var weight = source[name];
                if (name.EndsWith("k_proj.weight") || name.EndsWith("v_proj.weight"))
                    weight = weight.view(gqaConfig.NumKvHeads, 1, headDim, -1).expand(-1, groups, -1, -1).reshape(target.shape);
                target.copy_(weight);
            }
        }
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = Fixtures.Ids(Fixtures.RandomTokens(16, 300, 2));
        var difference = (gqa.forward(ids) - mha.forward(ids)).abs().max().item<float>();
        Assert.True(difference < 1e-5, $"max |GQA − MHA| = {difference}");
    }

    [Fact]
    public void Logits_depend_only_on_earlier_tokens()
    {
        using var model = new LlamaForCausalLM(Fixtures.TinyConfig(), seed: 5);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var tokens = Fixtures.RandomTokens(10, 300, 3);
        var changed = (int[])tokens.Clone();
        changed[7] = (changed[7] + 1) % 300;
        var a = model.forward(Fixtures.Ids(tokens));
        var b = model.forward(Fixtures.Ids(changed));
        Assert.True(a.narrow(1, 0, 7).allclose(b.narrow(1, 0, 7), rtol: 0, atol: 1e-6));
        Assert.False(a.narrow(1, 7, 3).allclose(b.narrow(1, 7, 3), rtol: 0, atol: 1e-6));
    }

    [Fact]
    public void Batched_forward_equals_row_by_row_forward()
    {
        using var model = new LlamaForCausalLM(Fixtures.TinyConfig(), seed: 6);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var rows = new[] { Fixtures.RandomTokens(9, 300, 4), Fixtures.RandomTokens(9, 300, 5) };
        var batch = cat(rows.Select(r => Fixtures.Ids(r)).ToArray(), 0);
        var together = model.forward(batch);
        for (int i = 0; i < rows.Length; i++)
            Assert.True(together[i].allclose(model.forward(Fixtures.Ids(rows[i]))[0], rtol: 0, atol: 1e-5));
    }

    [Fact]
    public void Module_to_converts_every_parameter_and_keeps_the_accessors_in_sync()
    {
        using var model = new LlamaForCausalLM(Fixtures.TinyConfig(), seed: 9);
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var ids = Fixtures.Ids(Fixtures.RandomTokens(8, 300, 6));
        var before = model.forward(ids);
        model.to(ScalarType.BFloat16);
        Assert.All(model.parameters(), p => Assert.Equal(ScalarType.BFloat16, p.dtype));
        Assert.Equal(ScalarType.BFloat16, model.Embedding.Weight.dtype);
        Assert.Equal(ScalarType.BFloat16, model.Dtype);
        var after = model.forward(ids);
        Assert.Equal(ScalarType.BFloat16, after.dtype);
        Assert.True((after.to(ScalarType.Float32) - before).abs().max().item<float>() < 0.1);
    }
}
