using System.Text.Json.Nodes;
using MeLlama.Training.Sources;

namespace MeLlama.Training.Finetune.Data;

/// <summary>
/// Training rows in epochs: each epoch visits every row once in an order shuffled from (seed, epoch), so a run is
/// reproducible and its position is two integers (<see cref="State"/>), restored exactly on resume.
/// </summary>
public sealed class SftSampleStream : ISampleSource
{
    readonly SftDataset _data;
    readonly ulong _seed;
    int[] _order = [];

    public SftSampleStream(SftDataset data, ulong seed, JsonNode? resume = null)
    {
        if (data.Rows.Count == 0) throw new ArgumentException("no training rows (every example was dropped or the data is empty)");
        _data = data;
        _seed = seed;
        if (resume is not null)
        {
            Epoch = resume["epoch"]?.GetValue<int>() ?? throw new InvalidDataException("sampler state has no epoch");
            Position = resume["position"]?.GetValue<int>() ?? throw new InvalidDataException("sampler state has no position");
            int rows = resume["rows"]?.GetValue<int>() ?? data.Rows.Count;
            if (rows != data.Rows.Count)
                throw new InvalidDataException($"the checkpoint was trained on {rows} rows but the data now gives {data.Rows.Count}: the instruction files or settings changed since");
        }
        _order = Shuffle(Epoch);
    }

    public int SeqLen => _data.SeqLen;
    public int Epoch { get; private set; }
    /// <summary>Rows of the current epoch already served.</summary>
    public int Position { get; private set; }
    /// <summary>Epochs completed, fractional.</summary>
    public double EpochProgress => Epoch + Position / (double)_data.Rows.Count;

    public JsonNode State => new JsonObject { ["epoch"] = Epoch, ["position"] = Position, ["rows"] = _data.Rows.Count };

    public void NextBatch(int microBatch, Span<long> tokens)
    {
        int width = _data.SampleTokens;
        if (tokens.Length != microBatch * width) throw new ArgumentException($"buffer holds {tokens.Length} tokens, expected {microBatch} × {width}");
        for (int i = 0; i < microBatch; i++)
        {
            if (Position == _order.Length)
            {
                Epoch++;
                Position = 0;
                _order = Shuffle(Epoch);
            }
            _data.Rows[_order[Position++]].CopyTo(tokens.Slice(i * width, width));
        }
    }

    int[] Shuffle(int epoch)
    {
        var order = Enumerable.Range(0, _data.Rows.Count).ToArray();
        new Random(unchecked((int)(_seed * 1_000_003UL + (ulong)epoch))).Shuffle(order);
        return order;
    }

    public void Dispose() { }
}
