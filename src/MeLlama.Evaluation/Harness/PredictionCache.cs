using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using MeLlama.Core.IO;

namespace MeLlama.Evaluation.Harness;

/// <summary>
/// Append-only JSONL store of per-item predictions, keyed by task + item id + run fingerprint, which makes
/// a long evaluation resumable: finished items are skipped on restart. Each batch is appended and fsynced
/// before the next starts, so a kill loses at most the batch in flight. A torn last line (killed mid-write)
/// is cut off when the cache is opened. With <c>restricted</c> (credentialed data: outputs may echo clinical
/// text) the file is created owner-only. The file is locked while open, so two runs cannot interleave writes.
/// </summary>
public sealed class PredictionCache : IDisposable
{
    static readonly JsonSerializerOptions Json = new() { PropertyNamingPolicy = JsonNamingPolicy.CamelCase, DefaultIgnoreCondition = System.Text.Json.Serialization.JsonIgnoreCondition.WhenWritingNull };
    readonly Dictionary<string, PredictionRecord> _records = new(StringComparer.Ordinal);
    readonly FileStream _stream;

    public string Path { get; }
    public int LoadedCount { get; }
    public int DroppedTornLines { get; }

    public PredictionCache(string path, bool restricted)
    {
        Path = path;
        var options = new FileStreamOptions { Mode = FileMode.OpenOrCreate, Access = FileAccess.ReadWrite, Share = FileShare.None };
        if (!OperatingSystem.IsWindows()) options.UnixCreateMode = restricted ? RestrictedPaths.OwnerFile : UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.GroupRead | UnixFileMode.OtherRead;
        _stream = new FileStream(path, options);
        if (restricted && !OperatingSystem.IsWindows()) File.SetUnixFileMode(path, RestrictedPaths.OwnerFile);
        (LoadedCount, DroppedTornLines) = Load();
        _stream.Seek(0, SeekOrigin.End);
    }

    public static string KeyOf(string task, string item, string run) =>
        Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes($"{task}\u0000{item}\u0000{run}")))[..32];

    public bool TryGet(string key, out PredictionRecord record) => _records.TryGetValue(key, out record!);

    public void Append(IReadOnlyList<PredictionRecord> records)
    {
        if (records.Count == 0) return;
        var sb = new StringBuilder();
        foreach (var r in records) sb.Append(JsonSerializer.Serialize(r, Json)).Append('\n');
        _stream.Write(Encoding.UTF8.GetBytes(sb.ToString()));
        _stream.Flush(flushToDisk: true);
        foreach (var r in records) _records[r.Key] = r;
    }

    (int Loaded, int Dropped) Load()
    {
        if (_stream.Length == 0) return (0, 0);
        var bytes = new byte[_stream.Length];
        _stream.ReadExactly(bytes);
        // Everything after the last newline is a line whose write was interrupted: cut it off so the next
        // append starts on a fresh line.
        int lastNewline = Array.LastIndexOf(bytes, (byte)'\n');
        int dropped = 0;
        if (lastNewline < bytes.Length - 1)
        {
            _stream.SetLength(lastNewline + 1);
            _stream.Flush(flushToDisk: true);
            dropped = 1;
        }
        if (lastNewline < 0) return (0, dropped);
        int loaded = 0, lineNumber = 0;
        foreach (var line in Encoding.UTF8.GetString(bytes, 0, lastNewline + 1).Split('\n'))
        {
            lineNumber++;
            if (line.Length == 0) continue;
            PredictionRecord? record;
            try { record = JsonSerializer.Deserialize<PredictionRecord>(line, Json); }
            catch (JsonException e) { throw new InvalidDataException($"{Path}, line {lineNumber}: not a prediction record ({e.Message}); move the file away to start afresh", e); }
            if (record == null) continue;
            _records[record.Key] = record;
            loaded++;
        }
        return (loaded, dropped);
    }

    public void Dispose() => _stream.Dispose();
}
