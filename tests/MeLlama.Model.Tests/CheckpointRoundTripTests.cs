using System.Buffers.Binary;
using System.Text.Json;
using MeLlama.TestSupport;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Model.Tests;

public class CheckpointRoundTripTests
{
    [Theory]
    [InlineData(ScalarType.Float32)]
    [InlineData(ScalarType.BFloat16)]
    public void Save_then_load_is_bit_exact(ScalarType dtype)
    {
        using var dir = new TempDir();
        using var model = new LlamaForCausalLM(Fixtures.TinyConfig(), dtype: dtype, seed: 42);
        HfCheckpoint.Save(model, dir["hf"], dtype);
        using var loaded = HfCheckpoint.LoadModel(dir["hf"], CPU, dtype);
        Assert.Equal(model.Config, loaded.Config);
        AssertBitIdentical(model, loaded);
        Assert.True(File.Exists(dir["hf/model.safetensors"]));
        Assert.False(File.Exists(dir["hf/model.safetensors.index.json"]));
        string expectedName = dtype == ScalarType.Float32 ? "F32" : "BF16";
        foreach (var file in Directory.GetFiles(dir["hf"], "*.safetensors")) CheckHeaderIndependently(file, expectedName);
    }

    [Fact]
    public void Sharded_save_writes_an_index_and_loads_back_bit_exact()
    {
        using var dir = new TempDir();
        var config = Fixtures.TinyConfig(tied: true);
        using var model = new LlamaForCausalLM(config, seed: 43);
        HfCheckpoint.Save(model, dir["hf"], ScalarType.Float32, maxShardBytes: 40_000);

        var files = Directory.GetFiles(dir["hf"], "*.safetensors").Select(Path.GetFileName).Order().ToList();
        Assert.True(files.Count > 2);
        Assert.Equal($"model-00001-of-{files.Count:D5}.safetensors", files[0]);
        using var index = JsonDocument.Parse(File.ReadAllText(dir["hf/model.safetensors.index.json"]));
        var weightMap = index.RootElement.GetProperty("weight_map").EnumerateObject().ToDictionary(p => p.Name, p => p.Value.GetString()!);
        Assert.Equal(model.named_parameters().Select(p => p.name).Order(), weightMap.Keys.Order());
        Assert.DoesNotContain("lm_head.weight", weightMap.Keys);   // tied head is the embedding
        long dataBytes = files.Sum(f => CheckHeaderIndependently(Path.Combine(dir["hf"], f!), "F32"));
        Assert.Equal(index.RootElement.GetProperty("metadata").GetProperty("total_size").GetInt64(), dataBytes);
        Assert.Equal(config.ParameterCount() * 4, dataBytes);

        using var loaded = HfCheckpoint.LoadModel(dir["hf"]);
        AssertBitIdentical(model, loaded);
    }

    [Fact]
    public void Fp32_model_saved_as_bf16_loads_as_its_bf16_rounding()
    {
        using var dir = new TempDir();
        using var model = new LlamaForCausalLM(Fixtures.TinyConfig(), seed: 44);
        HfCheckpoint.Save(model, dir["hf"], ScalarType.BFloat16);
        using var loaded = HfCheckpoint.LoadModel(dir["hf"], CPU, ScalarType.Float32);
        var original = model.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        foreach (var (name, parameter) in loaded.named_parameters())
            Assert.True(parameter.equal(original[name].to(ScalarType.BFloat16).to(ScalarType.Float32)).all().item<bool>(), name);
        Assert.Contains("\"torch_dtype\": \"bfloat16\"", File.ReadAllText(dir["hf/config.json"]));
    }

    [Fact]
    public void Writes_a_complete_hf_folder_atomically_replacing_the_old_one()
    {
        using var dir = new TempDir();
        using var model = new LlamaForCausalLM(Fixtures.TinyConfig(), seed: 45);
        Directory.CreateDirectory(dir["hf"]);
        File.WriteAllText(dir["hf/stale.txt"], "from an older export");
        HfCheckpoint.Save(model, dir["hf"] + Path.DirectorySeparatorChar, ScalarType.Float32, writeExtraFiles: folder => File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), "{}"));

        Assert.Equal(
            new[] { "config.json", "generation_config.json", "model.safetensors", "tokenizer_config.json" },
            Directory.GetFiles(dir["hf"]).Select(f => Path.GetFileName(f)).Order().ToArray());
        Assert.Equal(new[] { "hf" }, Directory.GetFileSystemEntries(dir.Path).Select(f => Path.GetFileName(f)).ToArray());   // no temporary left
        using var config = JsonDocument.Parse(File.ReadAllText(dir["hf/config.json"]));
        Assert.Equal("LlamaForCausalLM", config.RootElement.GetProperty("architectures")[0].GetString());
        Assert.Equal("llama", config.RootElement.GetProperty("model_type").GetString());
        Assert.Equal("float32", config.RootElement.GetProperty("torch_dtype").GetString());
        using var generation = JsonDocument.Parse(File.ReadAllText(dir["hf/generation_config.json"]));
        Assert.Equal(2, generation.RootElement.GetProperty("eos_token_id").GetInt32());
    }

    [SkippableFact]
    public void Fixture_reexported_as_sharded_bf16_still_matches_the_reference()
    {
        string fixture = SharedData.Require(SharedData.TinyLlamaBf16Sharded);
        using var dir = new TempDir();
        using var model = HfCheckpoint.LoadModel(fixture, CPU, ScalarType.BFloat16);
        HfCheckpoint.Save(model, dir["hf"], ScalarType.BFloat16, maxShardBytes: 4_000_000);
        using var reloaded = HfCheckpoint.LoadModel(dir["hf"], CPU, ScalarType.Float32);
        var sequence = Fixtures.ReadReference(fixture)[1];
        var logProbs = Scoring.NextTokenLogProbs(reloaded, sequence.Tokens);
        for (int i = 0; i < logProbs.Length; i++) Assert.True(Math.Abs(logProbs[i] - sequence.LogProbs[i]) < 1e-3);
    }

    [SkippableFact]
    public void Slices_of_a_stored_tensor_equal_the_same_elements_of_the_whole_one()
    {
        string fixture = SharedData.Require(SharedData.TinyLlamaBf16Sharded);
        using var checkpoint = SafeTensorsCheckpoint.Open(fixture);
        const string name = "model.layers.0.mlp.gate_proj.weight";   // [176, 64] BF16
        using var whole = checkpoint.ReadTensor(name, ScalarType.Float32).view(-1);
        using var slice = empty(1000, ScalarType.Float32);          // converted while reading
        checkpoint.ReadSlice(name, 777, slice);
        Assert.True(slice.equal(whole.narrow(0, 777, 1000)).all().item<bool>());
        using var raw = empty([10, 10], ScalarType.BFloat16);       // same dtype: read in place
        checkpoint.ReadSlice(name, whole.numel() - 100, raw);
        Assert.True(raw.view(-1).to(ScalarType.Float32).equal(whole.narrow(0, whole.numel() - 100, 100)).all().item<bool>());
        Assert.Throws<ArgumentOutOfRangeException>(() => checkpoint.ReadSlice(name, whole.numel() - 99, raw));
    }

    static void AssertBitIdentical(LlamaForCausalLM expected, LlamaForCausalLM actual)
    {
        var reference = expected.named_parameters().ToDictionary(p => p.name, p => p.parameter);
        var loaded = actual.named_parameters().ToList();
        Assert.Equal(reference.Count, loaded.Count);
        foreach (var (name, parameter) in loaded)
        {
            Assert.Equal(reference[name].dtype, parameter.dtype);
            Assert.True(reference[name].bytes.SequenceEqual(parameter.bytes), $"{name} differs after the round trip");
        }
    }

    /// <summary>
    /// A deliberately separate, minimal reading of the safetensors spec: 8-byte little-endian header length,
    /// JSON header, data offsets contiguous from 0 to the end of the file. Returns the data section size.
    /// </summary>
    static long CheckHeaderIndependently(string path, string expectedDtype)
    {
        byte[] file = File.ReadAllBytes(path);
        long headerLength = (long)BinaryPrimitives.ReadUInt64LittleEndian(file.AsSpan(0, 8));
        Assert.InRange(headerLength, 2, file.Length - 8);
        using var header = JsonDocument.Parse(file.AsMemory(8, (int)headerLength));
        Assert.Equal("pt", header.RootElement.GetProperty("__metadata__").GetProperty("format").GetString());
        var spans = new List<(long Begin, long End)>();
        foreach (var entry in header.RootElement.EnumerateObject().Where(e => e.Name != "__metadata__"))
        {
            Assert.Equal(expectedDtype, entry.Value.GetProperty("dtype").GetString());
            long elements = entry.Value.GetProperty("shape").EnumerateArray().Aggregate(1L, (a, d) => a * d.GetInt64());
            long begin = entry.Value.GetProperty("data_offsets")[0].GetInt64(), end = entry.Value.GetProperty("data_offsets")[1].GetInt64();
            Assert.Equal(elements * (expectedDtype == "F32" ? 4 : 2), end - begin);
            spans.Add((begin, end));
        }
        long cursor = 0;
        foreach (var (begin, end) in spans.OrderBy(s => s.Begin))
        {
            Assert.Equal(cursor, begin);
            cursor = end;
        }
        Assert.Equal(file.Length - 8 - headerLength, cursor);
        return cursor;
    }
}
