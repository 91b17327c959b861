using System.Text.Json;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace MeLlama.Model;

/// <summary>
/// The weights of an HF model folder: either one <c>model.safetensors</c>, or several files listed by
/// <c>model.safetensors.index.json</c> ({"weight_map": {tensor name: file name}}). Every file is opened and
/// its header validated up front; tensors are then read one at a time.
/// </summary>
public sealed class SafeTensorsCheckpoint : IDisposable
{
    public const string SingleFileName = "model.safetensors";
    public const string IndexFileName = "model.safetensors.index.json";

    readonly Dictionary<string, SafeTensorsReader> readerByTensor;
    readonly List<SafeTensorsReader> readers;

    SafeTensorsCheckpoint(string directory, Dictionary<string, SafeTensorsReader> readerByTensor, List<SafeTensorsReader> readers)
    {
        Directory = directory;
        this.readerByTensor = readerByTensor;
        this.readers = readers;
    }

    public string Directory { get; }
    public IReadOnlyCollection<string> Names => readerByTensor.Keys;
    public IReadOnlyList<SafeTensorsReader> Files => readers;

    public static SafeTensorsCheckpoint Open(string hfDir)
    {
        string index = Path.Combine(hfDir, IndexFileName);
        string single = Path.Combine(hfDir, SingleFileName);
        if (File.Exists(index)) return OpenIndexed(hfDir, index);
        if (File.Exists(single))
        {
            var reader = SafeTensorsReader.Open(single);
            return new SafeTensorsCheckpoint(hfDir, reader.Entries.Keys.ToDictionary(n => n, _ => reader), [reader]);
        }
        throw new FileNotFoundException($"{hfDir} holds neither {SingleFileName} nor {IndexFileName} (only safetensors checkpoints are supported)");
    }

    static SafeTensorsCheckpoint OpenIndexed(string hfDir, string indexPath)
    {
        var weightMap = ReadWeightMap(indexPath);
        var readers = new List<SafeTensorsReader>();
        try
        {
            var byFile = new Dictionary<string, SafeTensorsReader>(StringComparer.Ordinal);
            var byTensor = new Dictionary<string, SafeTensorsReader>(StringComparer.Ordinal);
            foreach (var (tensor, fileName) in weightMap)
            {
                if (!byFile.TryGetValue(fileName, out var reader))
                {
                    reader = SafeTensorsReader.Open(Path.Combine(hfDir, fileName));
                    readers.Add(reader);
                    byFile[fileName] = reader;
                }
                if (!reader.Entries.ContainsKey(tensor))
                    throw new InvalidDataException($"{indexPath}: tensor \"{tensor}\" is mapped to {fileName}, which does not contain it");
                byTensor[tensor] = reader;
            }
            foreach (var reader in readers)
                foreach (var name in reader.Entries.Keys)
                    if (!byTensor.ContainsKey(name))
                        throw new InvalidDataException($"{indexPath}: tensor \"{name}\" in {Path.GetFileName(reader.Path)} is missing from weight_map");
            return new SafeTensorsCheckpoint(hfDir, byTensor, readers);
        }
        catch
        {
            foreach (var reader in readers) reader.Dispose();
            throw;
        }
    }

    static Dictionary<string, string> ReadWeightMap(string indexPath)
    {
        if (new FileInfo(indexPath).Length > SafeTensorsHeader.MaxHeaderBytes)
            throw new InvalidDataException($"{indexPath}: larger than {SafeTensorsHeader.MaxHeaderBytes} bytes; not an index");
        JsonNode? root;
        try { root = JsonNode.Parse(File.ReadAllText(indexPath), documentOptions: NoDuplicates); }
        catch (JsonException e)
        { throw new InvalidDataException($"{indexPath}: not valid JSON ({e.Message})", e); }
        if (root is not JsonObject rootObject || rootObject["weight_map"] is not JsonObject map)
            throw new InvalidDataException($"{indexPath}: missing object \"weight_map\"");
        var result = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (var (tensor, node) in map)
        {
            if (node is null || node.GetValueKind() != JsonValueKind.String)
                throw new InvalidDataException($"{indexPath}: weight_map[\"{tensor}\"] must be a file name");
            string file = node.GetValue<string>();
            // Only plain names inside the folder: an index must not point elsewhere on disk.
            if (file.Length == 0 || file != Path.GetFileName(file) || file is "." or "..")
                throw new InvalidDataException($"{indexPath}: weight_map[\"{tensor}\"] = \"{file}\" is not a file name inside the folder");
            result[tensor] = file;
        }
        return result;
    }

    static readonly JsonDocumentOptions NoDuplicates = new() { AllowDuplicateProperties = false };

    public bool Contains(string name) => readerByTensor.ContainsKey(name);

    public SafeTensorEntry Entry(string name) => ReaderOf(name).Entry(name);

    public void ReadInto(string name, Tensor destination) => ReaderOf(name).ReadInto(name, destination);

    /// <inheritdoc cref="SafeTensorsReader.ReadSlice"/>
    public void ReadSlice(string name, long firstElement, Tensor destination) => ReaderOf(name).ReadSlice(name, firstElement, destination);

    public Tensor ReadTensor(string name, ScalarType? dtype = null, Device? device = null) => ReaderOf(name).ReadTensor(name, dtype, device);

    SafeTensorsReader ReaderOf(string name) =>
        readerByTensor.TryGetValue(name, out var reader) ? reader
            : throw new KeyNotFoundException($"checkpoint {Directory} has no tensor \"{name}\"");

    public void Dispose()
    {
        foreach (var reader in readers) reader.Dispose();
    }
}
