using MeLlama.Model;
using static TorchSharp.torch;

namespace MeLlama.Training.Checkpointing;

/// <summary>One safetensors file of a checkpoint to load while verifying it: where its tensors go, and checks of its header.</summary>
/// <param name="File">Path relative to the checkpoint folder, as the manifest names it.</param>
/// <param name="Destinations">Tensor name → the tensor to fill (same shape); tensors without one are only hashed.</param>
/// <param name="CheckHeader">Runs on the opened file before any data is read (throw InvalidDataException for a wrong file).</param>
public sealed record VerifiedFile(string File, IReadOnlyDictionary<string, Tensor> Destinations, Action<SafeTensorsReader>? CheckHeader = null);

/// <summary>
/// Loads checkpoint files and checks them against the folder's manifest in the same pass: each file is read once,
/// front to back, its checksum computed from the bytes as they land in the tensors
/// (<see cref="SafeTensorsReader.ReadAllIntoHashing"/>), instead of a hashing pass followed by a second read.
/// Files load on parallel threads, each front to back, so kernel readahead keeps working and the copies share the cores.
/// A file that does not match its manifest throws <see cref="CheckpointCorruptException"/>; the destinations then hold
/// partly loaded data that the caller must replace (e.g. by loading an older checkpoint).
/// </summary>
public static class VerifiedLoad
{
    public static void Run(string checkpointDir, IReadOnlyDictionary<string, ManifestFile> manifest, IReadOnlyList<VerifiedFile> files)
    {
        var digests = new string[files.Count];
        try
        {
            Parallel.For(0, files.Count, new ParallelOptions { MaxDegreeOfParallelism = Math.Max(files.Count, 1) }, i =>
            {
                var f = files[i];
                // A file the manifest does not list is still read (and then rejected as unlisted below).
                var algorithm = manifest.TryGetValue(f.File, out var e) && e.Checksum is { } c ? c.Algorithm : CheckpointManifest.Digest;
                using var reader = SafeTensorsReader.Open(Path.Combine(checkpointDir, f.File));
                f.CheckHeader?.Invoke(reader);
                digests[i] = reader.ReadAllIntoHashing(f.Destinations, algorithm);
            });
        }
        catch (AggregateException e)
        {
            var first = e.InnerExceptions[0];
            // A damaged header (or one whose names or shapes changed) fails before the digest is complete; it is
            // corruption, with the resume falling back, when the file's bytes differ from the manifest's. When they
            // match, the file is what was saved and the error (e.g. a different model) is the caller's to see.
            if (first is InvalidDataException or KeyNotFoundException)
                foreach (var f in files)
                {
                    string? problem = manifest.TryGetValue(f.File, out var entry) ? entry.Verify(f.File, Path.Combine(checkpointDir, f.File)) : $"{f.File} is not listed in its manifest";
                    if (problem is not null) throw new CheckpointCorruptException(checkpointDir, $"{problem} ({first.Message})");
                }
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(first).Throw();
        }
        for (int i = 0; i < files.Count; i++)
        {
            string file = files[i].File;
            if (!manifest.TryGetValue(file, out var entry) || entry.Checksum is not { } checksum)
                throw new CheckpointCorruptException(checkpointDir, $"{file} is not listed in its manifest");
            if (!entry.Matches(digests[i]))
                throw new CheckpointCorruptException(checkpointDir, $"{file} fails its {Core.IO.ContentDigest.Name(checksum.Algorithm)} checksum");
        }
    }
}
