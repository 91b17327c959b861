using MeLlama.Core.IO;
using MeLlama.Model;
using MeLlama.Training.Checkpointing;
using MeLlama.Training.Engine;

namespace MeLlama.Training.Optim;

/// <summary>
/// The on-disk form of a <see cref="MasterAdamW"/>: fp32 master weights under their HF names in
/// <see cref="CheckpointFiles.Model"/> (so a checkpoint's weights load like any HF shard) and the moments in
/// <see cref="CheckpointFiles.Optimizer"/>. Shared by every single-process engine (pretraining and fine-tuning).
/// </summary>
public static class OptimizerCheckpoint
{
    public static void SaveTo(this MasterAdamW optimizer, string checkpointDir)
    {
        // The writer copies one tensor at a time to the host, so GPU state never needs a second full copy.
        SafeTensorsWriter.Write(Path.Combine(checkpointDir, CheckpointFiles.Model), optimizer.MasterWeights(), new Dictionary<string, string> { ["format"] = "pt" });
        SafeTensorsWriter.Write(Path.Combine(checkpointDir, CheckpointFiles.Optimizer), optimizer.StateTensors());
    }

    /// <summary>The files <see cref="LoadFrom"/> checks against the folder's manifest while reading them.</summary>
    public static readonly IReadOnlySet<string> FilesVerifiedWhileLoading = new HashSet<string>(StringComparer.Ordinal) { CheckpointFiles.Model, CheckpointFiles.Optimizer };

    /// <summary>
    /// Restores master weights, model weights and moments from <paramref name="checkpointDir"/>. When the folder has
    /// a manifest (every checkpoint a <see cref="CheckpointStore"/> wrote), each file's checksum is computed from the
    /// bytes as they are read and compared with it: a resume then reads each byte once instead of hashing the files
    /// first and reading them again. On a mismatch this throws <see cref="CheckpointCorruptException"/> and the
    /// optimizer (and model) hold partly loaded state that the caller must replace, e.g. by loading an older checkpoint.
    /// </summary>
    public static void LoadFrom(this MasterAdamW optimizer, string checkpointDir, long optimizerSteps)
    {
        string modelPath = Path.Combine(checkpointDir, CheckpointFiles.Model), statePath = Path.Combine(checkpointDir, CheckpointFiles.Optimizer);
        var expected = CheckpointStore.ManifestFiles(checkpointDir);
        if (expected is null)
        {
            // Not a store checkpoint (e.g. files written straight by SaveTo): nothing to check against.
            // Straight from the files into the master weights and moments (no temporary copies).
            using var model = SafeTensorsReader.Open(modelPath);
            using var state = SafeTensorsReader.Open(statePath);
            optimizer.LoadState((name, into) => model.ReadInto(name, into), (name, into) => state.ReadInto(name, into), optimizerSteps);
            return;
        }
        var masters = optimizer.MasterWeights().ToDictionary(t => t.Name, t => t.Tensor);
        var moments = optimizer.StateTensors().ToDictionary(t => t.Name, t => t.Tensor);
        // A file the manifest does not list is still read (and then rejected by Verify as unlisted).
        DigestAlgorithm AlgorithmOf(string file) => expected.TryGetValue(file, out var e) && e.Checksum is { } c ? c.Algorithm : CheckpointManifest.Digest;
        var digests = new string[2];
        try
        {
            // Both files at once, each on its own thread and front to back, which keeps kernel readahead working (the
            // slot-by-slot order of LoadState alternates between the two files) and puts both cores on the copies.
            // Each file is checked with the algorithm its manifest entry names (sha256 for format-1 checkpoints).
            Parallel.Invoke(
                () => { using var r = SafeTensorsReader.Open(modelPath); digests[0] = r.ReadAllIntoHashing(masters, AlgorithmOf(CheckpointFiles.Model)); },
                () => { using var r = SafeTensorsReader.Open(statePath); digests[1] = r.ReadAllIntoHashing(moments, AlgorithmOf(CheckpointFiles.Optimizer)); });
        }
        catch (AggregateException e)
        {
            var first = e.InnerExceptions[0];
            // A damaged header (or one whose names or shapes changed) fails before the digest is complete; it is
            // corruption, with the resume falling back, when the file's bytes differ from the manifest's. When they
            // match, the file is what was saved and the error (e.g. a different model) is the caller's to see.
            if (first is InvalidDataException or KeyNotFoundException)
                foreach (var file in FilesVerifiedWhileLoading.Order(StringComparer.Ordinal))
                {
                    string? problem = expected.TryGetValue(file, out var entry) ? entry.Verify(file, Path.Combine(checkpointDir, file)) : $"{file} is not listed in its manifest";
                    if (problem is not null) throw new CheckpointCorruptException(checkpointDir, $"{problem} ({first.Message})");
                }
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(first).Throw();
        }
        Verify(checkpointDir, CheckpointFiles.Model, digests[0], expected);
        Verify(checkpointDir, CheckpointFiles.Optimizer, digests[1], expected);
        optimizer.CompleteInPlaceLoad(optimizerSteps);
    }

    static void Verify(string dir, string file, string digest, IReadOnlyDictionary<string, ManifestFile> expected)
    {
        if (!expected.TryGetValue(file, out var entry) || entry.Checksum is not { } checksum)
            throw new CheckpointCorruptException(dir, $"{file} is not listed in its manifest");
        if (!entry.Matches(digest))
            throw new CheckpointCorruptException(dir, $"{file} fails its {ContentDigest.Name(checksum.Algorithm)} checksum");
    }
}
