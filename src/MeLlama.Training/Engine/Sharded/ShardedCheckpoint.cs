using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using MeLlama.Core.IO;
using MeLlama.Distributed;
using MeLlama.Model;
using MeLlama.Training.Checkpointing;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Training.Engine.Sharded;

/// <summary><c>sharding.json</c>: how the flat unit buffers of a sharded checkpoint map to HF parameter names.</summary>
public sealed record ShardingMetadata
{
    public int FormatVersion { get; init; } = ShardedCheckpoint.FormatVersion;
    public int WorldSize { get; init; }
    public string Strategy { get; init; } = "";
    public List<ShardedUnitMetadata> Units { get; init; } = [];
}

/// <param name="Numel">Real elements of the flat buffer.</param>
/// <param name="PaddedNumel">WorldSize × ShardNumel.</param>
/// <param name="ShardNumel">Elements of each rank's slice (padding included).</param>
public sealed record ShardedUnitMetadata(string Name, long Numel, long PaddedNumel, long ShardNumel, List<ShardedParameterMetadata> Parameters);

public sealed record ShardedParameterMetadata(string Name, long[] Shape, long Offset, long Numel);

[JsonSourceGenerationOptions(PropertyNamingPolicy = JsonKnownNamingPolicy.SnakeCaseLower, WriteIndented = true)]
[JsonSerializable(typeof(ShardingMetadata))]
public sealed partial class ShardingMetadataJson : JsonSerializerContext;

/// <summary>
/// Sharded checkpoints of the FSDP engine. Each rank writes its slice of every unit's flat buffer
/// (<c>model-shard-RRRRR-of-WWWWW.safetensors</c>: fp32 master, tensor name = unit name;
/// <c>optim-shard-RRRRR-of-WWWWW.safetensors</c>: <c>exp_avg.UNIT</c>, <c>exp_avg_sq.UNIT</c>) and rank 0 writes
/// <c>sharding.json</c> (<see cref="ShardingMetadata"/>). Slices always follow the padded layout of the saving world
/// size, whatever the strategy, so a no-shard run's checkpoint is read exactly like a full-shard one.
/// Loading re-slices for any world size by reading, per unit, only the byte ranges of the old slices that overlap
/// the new rank's slice (memory: this rank's own state, no extra full buffers); <see cref="Consolidate"/>
/// rebuilds one unit at a time and hands out full tensors with HF names (for export). A single-process
/// checkpoint (<c>model.safetensors</c> + <c>optimizer.safetensors</c>) loads too, each rank reading its part.
/// </summary>
public static class ShardedCheckpoint
{
    public const int FormatVersion = 1;
    public const string MetadataFile = "sharding.json";

    public static string ModelShardFile(int rank, int world) => string.Create(CultureInfo.InvariantCulture, $"model-shard-{rank:D5}-of-{world:D5}.safetensors");
    public static string OptimizerShardFile(int rank, int world) => string.Create(CultureInfo.InvariantCulture, $"optim-shard-{rank:D5}-of-{world:D5}.safetensors");

    /// <summary>True when <paramref name="dir"/> holds a sharded checkpoint (its <c>sharding.json</c>).</summary>
    public static bool IsSharded(string dir) => File.Exists(Path.Combine(dir, MetadataFile));

    /// <summary>Writes rank <paramref name="rank"/>'s files (and, on rank 0, <c>sharding.json</c>) into <paramref name="dir"/>.</summary>
    public static void Save(string dir, IReadOnlyList<FlatParameterUnit> units, int rank, int world, ShardingStrategy strategy)
    {
        if (!Directory.Exists(dir)) throw new DirectoryNotFoundException($"checkpoint folder {dir} does not exist");
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var meta = new Dictionary<string, string>
        {
            ["format"] = "mellama-fsdp-shard", ["format_version"] = FormatVersion.ToString(CultureInfo.InvariantCulture),
            ["rank"] = rank.ToString(CultureInfo.InvariantCulture), ["world_size"] = world.ToString(CultureInfo.InvariantCulture),
        };
        SafeTensorsWriter.Write(Path.Combine(dir, ModelShardFile(rank, world)),
            units.Select(u => (u.Name, SliceOf(u, u.Master, rank))), meta);
        SafeTensorsWriter.Write(Path.Combine(dir, OptimizerShardFile(rank, world)),
            units.SelectMany(u => new[] { ("exp_avg." + u.Name, SliceOf(u, u.ExpAvg, rank)), ("exp_avg_sq." + u.Name, SliceOf(u, u.ExpAvgSq, rank)) }), meta);
        if (rank != 0) return;
        var metadata = new ShardingMetadata
        {
            WorldSize = world,
            Strategy = strategy.ToName(),
            Units = units.Select(u => new ShardedUnitMetadata(u.Name, u.Layout.Numel, u.Layout.PaddedNumel, u.Layout.ShardNumel,
                u.Segments.Select(s => new ShardedParameterMetadata(s.Name, s.Shape, s.Offset, s.Numel)).ToList())).ToList(),
        };
        AtomicFile.WriteAllText(Path.Combine(dir, MetadataFile), JsonSerializer.Serialize(metadata, ShardingMetadataJson.Default.ShardingMetadata));
    }

    /// <summary>Rank <paramref name="rank"/>'s slice [ShardNumel] of the world layout, from what this rank owns.</summary>
    static Tensor SliceOf(FlatParameterUnit unit, Tensor owned, int rank)
    {
        long lo = unit.Layout.ShardOffset(rank), n = unit.Layout.ShardNumel;
        if (unit.OwnedOffset == lo && unit.OwnedNumel == n) return owned;
        var slice = zeros(n, device: owned.device);
        long a = Math.Max(lo, unit.OwnedOffset), b = Math.Min(lo + n, unit.OwnedOffset + unit.OwnedNumel);
        if (a < b) slice.narrow(0, a - lo, b - a).copy_(owned.narrow(0, a - unit.OwnedOffset, b - a));
        return slice;
    }

    /// <summary>Reads and checks <c>sharding.json</c>.</summary>
    public static ShardingMetadata ReadMetadata(string dir)
    {
        string path = Path.Combine(dir, MetadataFile);
        if (!File.Exists(path)) throw new FileNotFoundException($"{dir} is not a sharded checkpoint: {MetadataFile} is missing", path);
        ShardingMetadata? meta;
        try { meta = JsonSerializer.Deserialize(File.ReadAllText(path), ShardingMetadataJson.Default.ShardingMetadata); }
        catch (JsonException e) { throw new InvalidDataException($"{path} is unreadable: {e.Message}", e); }
        if (meta is null) throw new InvalidDataException($"{path} is empty");
        if (meta.FormatVersion != FormatVersion) throw new InvalidDataException($"{path} has format version {meta.FormatVersion}; this build reads {FormatVersion}");
        if (meta.WorldSize < 1) throw new InvalidDataException($"{path}: world size {meta.WorldSize}");
        foreach (var u in meta.Units)
            if (u.ShardNumel * meta.WorldSize != u.PaddedNumel || u.PaddedNumel < u.Numel)
                throw new InvalidDataException($"{path}: unit {u.Name} has numel {u.Numel}, padded {u.PaddedNumel}, shard {u.ShardNumel}: inconsistent with world size {meta.WorldSize}");
        return meta;
    }

    /// <summary>
    /// The files that <see cref="Load"/> on <paramref name="world"/> ranks with <paramref name="strategy"/> checks
    /// against the checkpoint's manifest as it reads them (each rank its own two slice files, when the checkpoint was
    /// saved on as many ranks and the strategy shards); an up-front check may leave these to the load. Names of other
    /// world sizes never match, so a re-slicing resume still has every file checked up front.
    /// </summary>
    public static IReadOnlySet<string> FilesVerifiedWhileLoading(int world, ShardingStrategy strategy) =>
        strategy == ShardingStrategy.NoShard ? new HashSet<string>()
            : Enumerable.Range(0, world).SelectMany(r => new[] { ModelShardFile(r, world), OptimizerShardFile(r, world) }).ToHashSet(StringComparer.Ordinal);

    /// <summary>
    /// Fills every unit's master weights and moments (this rank's part) from the checkpoint in <paramref name="dir"/>,
    /// whatever world size and strategy saved it. Checks that units and parameters match the model.
    /// <para>When the checkpoint was saved on <paramref name="world"/> ranks, this rank's slices are exactly its
    /// saved files, and the folder has a manifest, the two files are read whole, once, and checked against the
    /// manifest as they load (<see cref="VerifiedLoad"/>; <see cref="FilesVerifiedWhileLoading"/>): a mismatch throws
    /// <see cref="CheckpointCorruptException"/> on this rank (<see cref="FsdpTrainStep.LoadState"/> makes every rank throw).</para>
    /// </summary>
    public static void Load(string dir, IReadOnlyList<FlatParameterUnit> units, int rank, int world)
    {
        if (!IsSharded(dir) && File.Exists(Path.Combine(dir, CheckpointFiles.Model)))
        {
            LoadSingleProcess(dir, units);
            return;
        }
        var meta = ReadMetadata(dir);
        var saved = meta.Units.ToDictionary(u => u.Name);
        foreach (var unit in units)
        {
            if (!saved.TryGetValue(unit.Name, out var s)) throw new InvalidDataException($"sharded checkpoint {dir} has no unit {unit.Name} (it has {string.Join(", ", saved.Keys)})");
            var expected = unit.Segments.Select(x => $"{x.Name}[{string.Join(",", x.Shape)}]@{x.Offset}");
            var stored = s.Parameters.Select(x => $"{x.Name}[{string.Join(",", x.Shape)}]@{x.Offset}");
            if (s.Numel != unit.Layout.Numel || !expected.SequenceEqual(stored))
                throw new InvalidDataException($"sharded checkpoint {dir}, unit {unit.Name}: stored parameters {string.Join(" ", stored)} do not match the model's {string.Join(" ", expected)}");
        }
        if (units.Count != meta.Units.Count)
            throw new InvalidDataException($"sharded checkpoint {dir} has {meta.Units.Count} units, the model {units.Count}");
        if (meta.WorldSize == world && units.All(u => u.OwnedNumel == saved[u.Name].ShardNumel && u.OwnedOffset == rank * saved[u.Name].ShardNumel)
            && File.Exists(Path.Combine(dir, ModelShardFile(rank, world))) && File.Exists(Path.Combine(dir, OptimizerShardFile(rank, world)))
            && CheckpointStore.ManifestFiles(dir) is { } manifest)
        {
            using var noGrad = no_grad();
            VerifiedLoad.Run(dir, manifest,
            [
                new VerifiedFile(ModelShardFile(rank, world), units.ToDictionary(u => u.Name, u => u.Master), r => CheckShardFile(dir, meta, r, rank, optimizer: false)),
                new VerifiedFile(OptimizerShardFile(rank, world),
                    units.SelectMany(u => new[] { ("exp_avg." + u.Name, u.ExpAvg), ("exp_avg_sq." + u.Name, u.ExpAvgSq) }).ToDictionary(x => x.Item1, x => x.Item2),
                    r => CheckShardFile(dir, meta, r, rank, optimizer: true)),
            ]);
            return;
        }
        // A sharded strategy on as many ranks as saved: FilesVerifiedWhileLoading named this rank's files, so the store's check left them
        // to the load: if the layouts still differ (not one whole file per rank), check them here before re-slicing.
        if (meta.WorldSize == world && units.All(u => u.OwnedNumel == u.Layout.ShardNumel) && CheckpointStore.ManifestFiles(dir) is { } listed)
            foreach (var own in new[] { ModelShardFile(rank, world), OptimizerShardFile(rank, world) })
                if (listed.TryGetValue(own, out var entry) && File.Exists(Path.Combine(dir, own)) && entry.Verify(own, Path.Combine(dir, own)) is { } problem)
                    throw new CheckpointCorruptException(dir, problem);
        using var model = ShardSet.Open(dir, meta, optimizer: false);
        using var optim = ShardSet.Open(dir, meta, optimizer: true);
        using var _ = no_grad();
        foreach (var unit in units)
        {
            var s = saved[unit.Name];
            model.ReadRange(unit.Name, s, unit.OwnedOffset, unit.Master);
            optim.ReadRange("exp_avg." + unit.Name, s, unit.OwnedOffset, unit.ExpAvg);
            optim.ReadRange("exp_avg_sq." + unit.Name, s, unit.OwnedOffset, unit.ExpAvgSq);
        }
    }

    /// <summary>
    /// Fills the units from a single-process checkpoint (<see cref="CheckpointFiles.Model"/> and
    /// <see cref="CheckpointFiles.Optimizer"/> with HF names), reading only the parts of each tensor this rank owns:
    /// a run started on one process continues sharded.
    /// </summary>
    static void LoadSingleProcess(string dir, IReadOnlyList<FlatParameterUnit> units)
    {
        using var model = SafeTensorsReader.Open(Path.Combine(dir, CheckpointFiles.Model));
        string optimizerPath = Path.Combine(dir, CheckpointFiles.Optimizer);
        if (!File.Exists(optimizerPath)) throw new FileNotFoundException($"checkpoint {dir} has {CheckpointFiles.Model} but no {CheckpointFiles.Optimizer}", optimizerPath);
        using var optim = SafeTensorsReader.Open(optimizerPath);
        using var _ = no_grad();
        foreach (var unit in units)
        {
            foreach (var (prefix, reader, target) in new[] { ("", model, unit.Master), ("exp_avg.", optim, unit.ExpAvg), ("exp_avg_sq.", optim, unit.ExpAvgSq) })
            {
                target.zero_(); // padding
                foreach (var segment in unit.Segments)
                {
                    string name = prefix + segment.Name;
                    var entry = reader.Entry(name);
                    if (!entry.Shape.SequenceEqual(segment.Shape))
                        throw new InvalidDataException($"checkpoint {dir}: {name} is {entry.ShapeText}, the model's is [{string.Join(", ", segment.Shape)}]");
                    long a = Math.Max(segment.Offset, unit.OwnedOffset), b = Math.Min(segment.Offset + segment.Numel, unit.OwnedOffset + unit.OwnedNumel);
                    if (a >= b) continue;
                    using var part = target.narrow(0, a - unit.OwnedOffset, b - a);
                    reader.ReadSlice(name, a - segment.Offset, part);
                }
            }
        }
    }

    /// <summary>
    /// Rebuilds the full fp32 weights of a sharded checkpoint, one unit at a time, and hands each parameter to
    /// <paramref name="sink"/> with its HF name (the tensor is only valid during the call: copy it to keep it).
    /// </summary>
    public static void Consolidate(string dir, Action<string, Tensor> sink) => Consolidate(dir, ReadMetadata(dir), optimizer: false, sink);

    static void Consolidate(string dir, ShardingMetadata meta, bool optimizer, Action<string, Tensor> sink)
    {
        using var files = ShardSet.Open(dir, meta, optimizer);
        using var _ = no_grad();
        foreach (var unit in meta.Units)
            foreach (var prefix in optimizer ? new[] { "exp_avg.", "exp_avg_sq." } : [""])
            {
                using var scope = NewDisposeScope();
                var flat = empty(unit.Numel);
                files.ReadRange(prefix + unit.Name, unit, 0, flat);
                foreach (var p in unit.Parameters) sink(prefix + p.Name, flat.narrow(0, p.Offset, p.Numel).view(p.Shape));
            }
    }

    /// <summary>
    /// Converts a sharded checkpoint into the single-process engine's files in <paramref name="outDir"/>
    /// (<see cref="CheckpointFiles.Model"/> and <see cref="CheckpointFiles.Optimizer"/>, as <see cref="SingleProcessTrainStep.SaveState"/>
    /// writes them), so a run can continue on one process without the FSDP engine. Holds the full state in memory.
    /// </summary>
    public static void WriteSingleProcessState(string dir, string outDir)
    {
        var meta = ReadMetadata(dir);
        using var scope = NewDisposeScope();
        var weights = new List<(string, Tensor)>();
        var moments = new List<(string, Tensor)>();
        Consolidate(dir, meta, optimizer: false, (name, t) => weights.Add((name, t.clone().MoveToOuterDisposeScope())));
        Consolidate(dir, meta, optimizer: true, (name, t) => moments.Add((name, t.clone().MoveToOuterDisposeScope())));
        SafeTensorsWriter.Write(Path.Combine(outDir, CheckpointFiles.Model), weights, new Dictionary<string, string> { ["format"] = "pt" });
        SafeTensorsWriter.Write(Path.Combine(outDir, CheckpointFiles.Optimizer), moments);
    }

    /// <summary>The full fp32 weights of a sharded checkpoint with HF names, in model order (new tensors in the caller's dispose scope).</summary>
    public static List<(string Name, Tensor Tensor)> ReadConsolidated(string dir)
    {
        var list = new List<(string, Tensor)>();
        Consolidate(dir, (name, t) => list.Add((name, t.clone().MoveToOuterDisposeScope())));
        return list;
    }

    /// <summary>Checks that an opened slice file is rank <paramref name="rank"/>'s of the saved world and holds every unit's fp32 slice.</summary>
    static void CheckShardFile(string dir, ShardingMetadata meta, SafeTensorsReader reader, int rank, bool optimizer)
    {
        int world = meta.WorldSize;
        string file = Path.GetFileName(reader.Path);
        string? savedRank = reader.Metadata.GetValueOrDefault("rank"), size = reader.Metadata.GetValueOrDefault("world_size");
        if (savedRank != rank.ToString(CultureInfo.InvariantCulture) || size != world.ToString(CultureInfo.InvariantCulture))
            throw new InvalidDataException($"sharded checkpoint {dir}: {file} says rank {savedRank ?? "?"} of {size ?? "?"}");
        foreach (var u in meta.Units)
            foreach (var name in optimizer ? new[] { "exp_avg." + u.Name, "exp_avg_sq." + u.Name } : [u.Name])
            {
                if (!reader.Entries.TryGetValue(name, out var e))
                    throw new InvalidDataException($"sharded checkpoint {dir}: {file} has no tensor {name}");
                if (e.Dtype != ScalarType.Float32 || e.ElementCount != u.ShardNumel)
                    throw new InvalidDataException($"sharded checkpoint {dir}: {file}, tensor {name} is {e.Dtype} {e.ShapeText}; expected fp32 [{u.ShardNumel}]");
            }
    }

    /// <summary>One reader per saved rank for the model (or optimizer) files, opened and checked up front.</summary>
    sealed class ShardSet : IDisposable
    {
        readonly SafeTensorsReader[] _readers;
        readonly int _world;

        ShardSet(SafeTensorsReader[] readers, int world)
        {
            _readers = readers;
            _world = world;
        }

        public static ShardSet Open(string dir, ShardingMetadata meta, bool optimizer)
        {
            int world = meta.WorldSize;
            var readers = new SafeTensorsReader[world];
            try
            {
                for (int r = 0; r < world; r++)
                {
                    string file = optimizer ? OptimizerShardFile(r, world) : ModelShardFile(r, world);
                    string path = Path.Combine(dir, file);
                    if (!File.Exists(path))
                        throw new FileNotFoundException($"sharded checkpoint {dir} is incomplete: {file} (rank {r} of {world}) is missing", path);
                    try { readers[r] = SafeTensorsReader.Open(path); }
                    catch (InvalidDataException e) { throw new InvalidDataException($"sharded checkpoint {dir}: {file} (rank {r} of {world}) is damaged: {e.Message}", e); }
                    CheckShardFile(dir, meta, readers[r], r, optimizer);
                }
                return new ShardSet(readers, world);
            }
            catch
            {
                foreach (var r in readers) r?.Dispose();
                throw;
            }
        }

        /// <summary>
        /// Fills the contiguous 1-D <paramref name="destination"/> with the unpadded flat elements
        /// [<paramref name="first"/>, first + destination.numel()) of tensor <paramref name="name"/>, reading only the
        /// overlapping parts of the saved slices; elements at or past the unit's numel (padding) become zero.
        /// </summary>
        public void ReadRange(string name, ShardedUnitMetadata unit, long first, Tensor destination)
        {
            long n = destination.numel(), end = Math.Min(first + n, unit.Numel);
            if (end < first + n) destination.narrow(0, Math.Max(0, end - first), first + n - Math.Max(end, first)).zero_();
            for (int r = 0; r < _world; r++)
            {
                long lo = r * unit.ShardNumel;
                long a = Math.Max(first, lo), b = Math.Min(end, lo + unit.ShardNumel);
                if (a >= b) continue;
                using var part = destination.narrow(0, a - first, b - a);
                _readers[r].ReadSlice(name, a - lo, part);
            }
        }

        public void Dispose()
        {
            foreach (var r in _readers) r.Dispose();
        }
    }
}
