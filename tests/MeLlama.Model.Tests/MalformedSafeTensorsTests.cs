using System.Buffers.Binary;
using System.Text;
using MeLlama.TestSupport;
using static TorchSharp.torch;

namespace MeLlama.Model.Tests;

/// <summary>Broken or hostile safetensors files fail with an InvalidDataException naming the file and tensor.</summary>
public class MalformedSafeTensorsTests
{
    static string WriteRaw(TempDir dir, string header, int dataBytes, ulong? declaredHeaderLength = null)
    {
        byte[] json = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + json.Length + dataBytes];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, declaredHeaderLength ?? (ulong)json.Length);
        json.CopyTo(bytes, 8);
        string path = dir["bad.safetensors"];
        File.WriteAllBytes(path, bytes);
        return path;
    }

    static InvalidDataException Refused(string path, params string[] expectedInMessage)
    {
        var error = Assert.Throws<InvalidDataException>(() =>
        {
            using var reader = SafeTensorsReader.Open(path);
        });
        Assert.Contains(Path.GetFileName(path), error.Message);
        foreach (var text in expectedInMessage) Assert.Contains(text, error.Message);
        return error;
    }

    [Fact]
    public void Truncated_file_is_refused_naming_the_cut_tensor()
    {
        using var dir = new TempDir();
        string path = dir["t.safetensors"];
        SafeTensorsWriter.Write(path, [("a", ones(10)), ("b", ones(20))]);
        byte[] whole = File.ReadAllBytes(path);
        File.WriteAllBytes(path, whole[..^12]);
        Refused(path, "\"b\"", "past the data section");
    }

    [Fact]
    public void File_shorter_than_the_length_prefix_is_refused()
    {
        using var dir = new TempDir();
        File.WriteAllBytes(dir["bad.safetensors"], [1, 2, 3]);
        Refused(dir["bad.safetensors"], "too short");
    }

    [Fact]
    public void Header_length_past_the_end_of_file_is_refused()
    {
        using var dir = new TempDir();
        Refused(WriteRaw(dir, """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", 4, declaredHeaderLength: 5000), "runs past the end");
    }

    [Fact]
    public void Huge_header_length_is_refused_before_allocating()
    {
        using var dir = new TempDir();
        Refused(WriteRaw(dir, "{}", 0, declaredHeaderLength: ulong.MaxValue), "limit");
    }

    [Fact]
    public void Overlapping_offsets_are_refused()
    {
        using var dir = new TempDir();
        string header = """{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[4],"data_offsets":[8,24]}}""";
        Refused(WriteRaw(dir, header, 24), "\"b\"", "overlap");
    }

    [Fact]
    public void Unknown_dtype_is_refused()
    {
        using var dir = new TempDir();
        Refused(WriteRaw(dir, """{"w":{"dtype":"F7","shape":[2],"data_offsets":[0,8]}}""", 8), "\"w\"", "F7");
    }

    [Theory]
    [InlineData("""{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}""", 8, "needs 12 bytes")]
    [InlineData("""{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}""", 8, "non-negative")]
    [InlineData("""{"w":{"dtype":"F32","shape":[4611686018427387904, 4],"data_offsets":[0,8]}}""", 8, "bytes but data_offsets span")]
    [InlineData("""{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}""", 8, "begin ≤ end")]
    [InlineData("""{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 16, "trailing bytes")]
    [InlineData("""{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}""", 16, "gap")]
    [InlineData("""{"w":{"dtype":"F32","shape":[2]}}""", 8, "data_offsets")]
    [InlineData("""{"w":{"dtype":"F32","shape":[2],"data_offsets":["0",8]}}""", 8, "data_offsets")]
    [InlineData("""{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8,16]}}""", 8, "data_offsets")]
    [InlineData("""{"w":{"dtype":"F32","shape":"2","data_offsets":[0,8]}}""", 8, "shape")]
    [InlineData("""{"w":{"dtype":5,"shape":[2],"data_offsets":[0,8]}}""", 8, "dtype")]
    [InlineData("""{"__metadata__":{"format":1},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 8, "__metadata__")]
    [InlineData("""{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}""", 16, "twice")]
    [InlineData("""{"w":{"dtype":"F32",""", 8, "not valid JSON")]
    [InlineData("""[1,2,3]""", 8, "JSON object")]
    public void Inconsistent_headers_are_refused(string header, int dataBytes, string expected)
    {
        using var dir = new TempDir();
        Refused(WriteRaw(dir, header, dataBytes), expected);
    }

    [Fact]
    public void Loading_a_checkpoint_with_a_wrong_shape_or_missing_tensor_names_it()
    {
        using var dir = new TempDir();
        var config = Fixtures.TinyConfig();
        using var model = new LlamaForCausalLM(config, seed: 1);
        HfCheckpoint.Save(model, dir["hf"], ScalarType.Float32);

        // Same weights, config claiming a wider MLP.
        File.WriteAllText(dir["hf/config.json"], (config with { IntermediateSize = 128 }).ToHfJson("float32"));
        var shape = Assert.Throws<InvalidDataException>(() => HfCheckpoint.LoadModel(dir["hf"]));
        Assert.Contains("mlp.", shape.Message);
        Assert.Contains("shape", shape.Message);

        // Config claiming an extra layer: its tensors are missing.
        File.WriteAllText(dir["hf/config.json"], (config with { NumLayers = 3 }).ToHfJson("float32"));
        var missing = Assert.Throws<InvalidDataException>(() => HfCheckpoint.LoadModel(dir["hf"]));
        Assert.Contains("model.layers.2.", missing.Message);
        Assert.Contains("missing", missing.Message);
    }

    [Theory]
    [InlineData("[1, 2]", "weight_map")]
    [InlineData("{\"weight_map\": {\"a\": \"x.safetensors\", \"a\": \"y.safetensors\"}}", "not valid JSON")]
    [InlineData("{\"weight_map\": {\"a\": 3}}", "must be a file name")]
    [InlineData("{\"weight_map\": {\"a\": \"absent.safetensors\"}}", "absent.safetensors")]
    public void Bad_index_files_are_refused(string index, string expected)
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir["hf"]);
        File.WriteAllText(dir["hf/model.safetensors.index.json"], index);
        var error = Assert.ThrowsAny<Exception>(() => SafeTensorsCheckpoint.Open(dir["hf"]));
        Assert.True(error is InvalidDataException or FileNotFoundException, error.ToString());
        Assert.Contains(expected, error.Message);
    }

    [Fact]
    public void Index_pointing_outside_the_folder_is_refused()
    {
        using var dir = new TempDir();
        Directory.CreateDirectory(dir["hf"]);
        File.WriteAllText(dir["hf/model.safetensors.index.json"], """{"weight_map": {"model.norm.weight": "../elsewhere.safetensors"}}""");
        var error = Assert.Throws<InvalidDataException>(() => SafeTensorsCheckpoint.Open(dir["hf"]));
        Assert.Contains("not a file name inside the folder", error.Message);
    }

    [Fact]
    public void Random_corruption_of_header_or_length_gives_only_clean_errors()
    {
        using var dir = new TempDir();
        string valid = dir["valid.safetensors"];
        SafeTensorsWriter.Write(valid, [("a", ones(3, 4)), ("b", zeros(5, dtype: ScalarType.BFloat16)), ("c", arange(6, dtype: ScalarType.Int64))],
            new Dictionary<string, string> { ["format"] = "pt" });
        byte[] original = File.ReadAllBytes(valid);
        int headerEnd = 8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(original);
        var random = new Random(1234);
        int refused = 0;
        for (int trial = 0; trial < 400; trial++)
        {
            byte[] bytes = trial % 4 == 0
                ? original[..random.Next(original.Length)]                       // truncated anywhere
                : (byte[])original.Clone();
            if (trial % 4 != 0)
                for (int flips = 1 + random.Next(3); flips > 0; flips--)
                    bytes[random.Next(headerEnd)] = (byte)random.Next(256);     // length prefix or JSON damaged
            string path = dir[$"c{trial}.safetensors"];
            File.WriteAllBytes(path, bytes);
            try
            {
                using var reader = SafeTensorsReader.Open(path);
                foreach (var name in reader.Entries.Keys) reader.ReadTensor(name).Dispose();
            }
            catch (InvalidDataException e)
            {
                Assert.Contains(Path.GetFileName(path), e.Message);
                refused++;
            }
            File.Delete(path);
        }
        Assert.True(refused > 300, $"only {refused} of 400 corruptions were detected");
    }
}
