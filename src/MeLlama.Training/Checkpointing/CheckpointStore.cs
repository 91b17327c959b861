using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;
using MeLlama.Core.IO;
using MeLlama.Training.Loop;
using Serilog;

namespace MeLlama.Training.Checkpointing;

/// <summary>Outcome of checking one checkpoint folder against its manifest.</summary>
public sealed record CheckpointCheck(string Dir, long Step, bool Ok, string? Problem);

/// <summary>
/// A checkpoint file did not match its manifest while it was being loaded (the load verifies as it reads): the state
/// it was loaded into is not usable, and the caller falls back to an older checkpoint.
/// </summary>
public sealed class CheckpointCorruptException(string dir, string problem)
    : IOException($"checkpoint {Path.GetFileName(dir.TrimEnd('/'))}: {problem}")
{
    public string Dir { get; } = dir;
    public string Problem { get; } = problem;
}

/// <summary>
/// The checkpoints of one run: <c>RUN/checkpoints/step-00000100/</c> folders plus a <c>latest</c> pointer.
/// A save writes every file into a hidden temporary folder, fsyncs each, records size and checksum in
/// <c>manifest.json</c> (written last), renames the folder into place, fsyncs the parent and only then rewrites
/// <c>latest</c>. A crash at any point leaves the previous checkpoints intact; a folder that is missing a file or
/// fails a checksum is never loaded: <see cref="FindLatestGood"/> falls back to the newest complete one.
/// </summary>
public sealed partial class CheckpointStore(string runDir, ILogger? log = null)
{
    public const string ManifestName = "manifest.json";
    public const string LatestName = "latest";
    readonly ILogger _log = log ?? Serilog.Core.Logger.None;

    public string Root { get; } = Path.Combine(runDir, "checkpoints");

    public static string DirName(long step) => "step-" + step.ToString("D8", CultureInfo.InvariantCulture);

    [GeneratedRegex(@"^step-(\d{8,})$")]
    private static partial Regex StepDirPattern();

    /// <summary>Checkpoint folders present (complete or not), newest step first.</summary>
    public IReadOnlyList<(long Step, string Dir)> List()
    {
        if (!Directory.Exists(Root)) return [];
        return Directory.EnumerateDirectories(Root)
            .Select(d => (Dir: d, M: StepDirPattern().Match(Path.GetFileName(d))))
            .Where(x => x.M.Success)
            .Select(x => (long.Parse(x.M.Groups[1].Value, CultureInfo.InvariantCulture), x.Dir))
            .OrderByDescending(x => x.Item1).ToList();
    }

    /// <summary>
    /// Writes checkpoint <paramref name="step"/>: <paramref name="writeFiles"/> fills the (temporary) folder it is
    /// given; this method makes it durable and verifiable. Returns the final folder.
    /// </summary>
    public string Save(long step, Action<string> writeFiles)
    {
        Directory.CreateDirectory(Root);
        string final = Path.Combine(Root, DirName(step));
        string tmp = Path.Combine(Root, $".{DirName(step)}.tmp-{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(tmp);
        try
        {
            writeFiles(tmp);
            var manifest = new CheckpointManifest { Step = step, CreatedUtc = DateTimeOffset.UtcNow };
            var files = Directory.EnumerateFiles(tmp).Where(f => Path.GetFileName(f) != ManifestName).Order(StringComparer.Ordinal).ToList();
            // Files are fsynced and hashed on several threads (weights and optimizer state hash at the same time).
            var hashes = HashAll(files, fsyncFirst: true);
            for (int i = 0; i < files.Count; i++)
                manifest.Files[Path.GetFileName(files[i])] = ManifestFile.Of(new FileInfo(files[i]).Length, CheckpointManifest.Digest, hashes[i]);
            AtomicFile.WriteAllText(Path.Combine(tmp, ManifestName), JsonSerializer.Serialize(manifest, CheckpointManifestJson.Default.CheckpointManifest));
            AtomicFile.FsyncDirectory(tmp);
            AtomicFile.Commit(tmp, final);
            AtomicFile.WriteAllText(Path.Combine(Root, LatestName), DirName(step) + "\n");
            return final;
        }
        catch
        {
            TryDeleteDir(tmp);
            throw;
        }
    }

    /// <summary>
    /// Writes checkpoint <paramref name="step"/> together with every rank of <paramref name="world"/> (each rank calls
    /// this with the same step). All ranks write into one temporary folder on the shared file system:
    /// <paramref name="writeEveryRank"/> runs on every rank (its shard files), <paramref name="writeRootOnly"/> on rank 0
    /// (trainer state, RNG, configs). After all ranks have written, every rank fsyncs the folder's files (only the writer's
    /// fsync flushes a network file system's client cache) and hashes its share of them; rank 0 writes a manifest that
    /// covers every rank's files and renames the folder into place. A failure on any rank fails the save on every rank and
    /// commits nothing, so a torn multi-rank save never becomes a checkpoint. Returns the final folder on every rank.
    /// On one rank this is <see cref="Save"/>.
    /// </summary>
    public string SaveCoordinated(long step, TrainingWorld world, Action<string> writeEveryRank, Action<string> writeRootOnly)
    {
        if (!world.IsDistributed) return Save(step, tmp => { writeEveryRank(tmp); writeRootOnly(tmp); });
        string final = Path.Combine(Root, DirName(step));

        // 1. Rank 0 creates the temporary folder and tells the others its name (pid + nonce; -1 = it could not).
        long[] id = [-1, 0];
        Exception? failure = null;
        if (world.IsRoot)
        {
            try
            {
                Directory.CreateDirectory(Root);
                long nonce = BitConverter.ToInt64(Guid.NewGuid().ToByteArray()) & long.MaxValue;
                Directory.CreateDirectory(TempDir(step, Environment.ProcessId, nonce));
                id = [Environment.ProcessId, nonce];
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException) { failure = e; }
        }
        id = world.Broadcast(id);
        if (id[0] < 0)
        {
            if (failure != null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(failure).Throw();
            throw new IOException($"checkpoint {DirName(step)}: rank 0 could not create the temporary folder under {Root}");
        }
        string tmp = TempDir(step, id[0], id[1]);

        try
        {
            // 2. Every rank writes its files; the reduction doubles as the barrier after which the folder is complete.
            try
            {
                WaitForDirectory(tmp, TimeSpan.FromSeconds(60));
                writeEveryRank(tmp);
                if (world.IsRoot) writeRootOnly(tmp);
            }
            catch (Exception e) { failure = e; }
            if (world.Any(failure != null))
            {
                if (failure != null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(failure).Throw();
                throw new IOException($"checkpoint {DirName(step)}: another rank failed to write its files; nothing was committed");
            }

            // 3. Every rank must see the same files (a lagging shared file system would otherwise give a short manifest).
            // Subfolders count too: the manifest names files by their path relative to the checkpoint folder.
            var files = Directory.EnumerateFiles(tmp, "*", SearchOption.AllDirectories)
                .Where(f => Path.GetRelativePath(tmp, f) != ManifestName).Order(StringComparer.Ordinal).ToList();
            string Name(string file) => Path.GetRelativePath(tmp, file).Replace(Path.DirectorySeparatorChar, '/');
            if (!world.Agree(string.Join('\n', files.Select(Name))))
                throw new IOException($"checkpoint {DirName(step)}: the ranks see different files in {tmp} (shared file system not coherent?); nothing was committed");

            // 4. Rank r hashes files r, r + N, ...; the digests meet on every rank through an exact int64 sum (one writer per row).
            int digestLongs = ContentDigest.Size(CheckpointManifest.Digest) / 8, Row = 1 + digestLongs; // size + the checksum's bytes
            var table = new long[files.Count * Row];
            foreach (var f in files) FsyncFile(f);
            var mine = Enumerable.Range(0, files.Count).Where(i => i % world.Size == world.Rank).ToList();
            var hashes = HashAll(mine.Select(i => files[i]).ToList(), fsyncFirst: false);
            for (int k = 0; k < mine.Count; k++)
            {
                int i = mine[k];
                table[i * Row] = new FileInfo(files[i]).Length;
                var bytes = Convert.FromHexString(hashes[k]);
                for (int w = 0; w < digestLongs; w++) table[i * Row + 1 + w] = BitConverter.ToInt64(bytes, 8 * w);
            }
            table = world.SumExact(table);

            // 5. Rank 0 commits; the final reduction tells everyone whether it did.
            failure = null;
            if (world.IsRoot)
            {
                try
                {
                    var manifest = new CheckpointManifest { Step = step, CreatedUtc = DateTimeOffset.UtcNow, WorldSize = world.Size };
                    for (int i = 0; i < files.Count; i++)
                    {
                        var bytes = new byte[8 * digestLongs];
                        for (int w = 0; w < digestLongs; w++) BitConverter.TryWriteBytes(bytes.AsSpan(8 * w), table[i * Row + 1 + w]);
                        manifest.Files[Name(files[i])] = ManifestFile.Of(table[i * Row], CheckpointManifest.Digest, Convert.ToHexStringLower(bytes));
                    }
                    foreach (var sub in Directory.EnumerateDirectories(tmp, "*", SearchOption.AllDirectories)) AtomicFile.FsyncDirectory(sub);
                    AtomicFile.WriteAllText(Path.Combine(tmp, ManifestName), JsonSerializer.Serialize(manifest, CheckpointManifestJson.Default.CheckpointManifest));
                    AtomicFile.FsyncDirectory(tmp);
                    AtomicFile.Commit(tmp, final);
                    AtomicFile.WriteAllText(Path.Combine(Root, LatestName), DirName(step) + "\n");
                }
                catch (Exception e) { failure = e; }
            }
            if (world.Any(failure != null))
            {
                if (failure != null) System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(failure).Throw();
                throw new IOException($"checkpoint {DirName(step)}: rank 0 could not commit it; nothing was committed");
            }
            return final;
        }
        catch
        {
            // Only rank 0 removes the folder: the others may still be writing into it when this rank fails.
            if (world.IsRoot) TryDeleteDir(tmp);
            throw;
        }
    }

    string TempDir(long step, long pid, long nonce) => Path.Combine(Root, $".{DirName(step)}.tmp-{pid}-{nonce:x16}");

    /// <summary>Rank 0 created the folder before the broadcast; on a shared file system other nodes may see it a moment later.</summary>
    static void WaitForDirectory(string dir, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (!Directory.Exists(dir))
        {
            if (DateTime.UtcNow > deadline) throw new IOException($"{dir} (created by rank 0) did not appear within {timeout.TotalSeconds:F0} s");
            Thread.Sleep(50);
        }
    }

    /// <summary>
    /// Checks one folder: manifest present and readable, every listed file present with its size and (when <paramref name="full"/>) checksum.
    /// Files named in <paramref name="hashedWhileLoading"/> get the presence and size check only: the caller's loader
    /// verifies their checksum as it reads them (and throws <see cref="CheckpointCorruptException"/>), so they are read once.
    /// </summary>
    public static CheckpointCheck Check(string dir, bool full = true, IReadOnlySet<string>? hashedWhileLoading = null)
    {
        var m = StepDirPattern().Match(Path.GetFileName(dir.TrimEnd('/')));
        long step = m.Success ? long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : -1;
        string manifestPath = Path.Combine(dir, ManifestName);
        if (!File.Exists(manifestPath)) return new(dir, step, false, "manifest.json is missing (save did not finish)");
        CheckpointManifest? manifest;
        try { manifest = JsonSerializer.Deserialize(File.ReadAllText(manifestPath), CheckpointManifestJson.Default.CheckpointManifest); }
        catch (JsonException e) { return new(dir, step, false, $"manifest.json is unreadable: {e.Message}"); }
        if (manifest is null || manifest.Files.Count == 0) return new(dir, step, false, "manifest.json lists no files");
        var listed = manifest.Files.OrderBy(f => f.Key, StringComparer.Ordinal).ToList();
        foreach (var (name, expected) in listed)
        {
            string path = Path.Combine(dir, name);
            if (!File.Exists(path)) return new(dir, step, false, $"{name} is missing");
            long size = new FileInfo(path).Length;
            if (size != expected.Size) return new(dir, step, false, $"{name} has {size} bytes, manifest says {expected.Size}");
        }
        if (full)
        {
            var toHash = listed.Where(f => hashedWhileLoading?.Contains(f.Key) != true).ToList();
            if (VerifyAll(dir, toHash) is { } problem) return new(dir, step, false, problem);
        }
        return new(dir, m.Success ? step : manifest.Step, true, null);
    }

    /// <summary>
    /// The newest checkpoint that passes a full check, or null. Every newer folder that fails is reported
    /// (logged as a warning and returned in <paramref name="skipped"/>) so the user sees why an older one was used.
    /// </summary>
    /// <param name="hashedWhileLoading">Files whose checksum the caller's loader checks as it reads them (see <see cref="Check"/>).</param>
    /// <param name="rejected">Steps already found corrupt by such a loader: skipped like a failed check.</param>
    public CheckpointCheck? FindLatestGood(out List<CheckpointCheck> skipped, IReadOnlySet<string>? hashedWhileLoading = null, IReadOnlyDictionary<long, string>? rejected = null)
    {
        skipped = [];
        foreach (var (step, dir) in List())
        {
            var check = rejected?.TryGetValue(step, out var problem) == true
                ? new CheckpointCheck(dir, step, false, problem)
                : Check(dir, full: true, hashedWhileLoading);
            if (check.Ok)
            {
                if (skipped.Count > 0)
                    _log.Warning("Falling back to checkpoint {Checkpoint} because {Count} newer one(s) are incomplete or corrupt", Path.GetFileName(dir), skipped.Count);
                return check;
            }
            _log.Warning("Checkpoint {Checkpoint} is not usable: {Problem}", Path.GetFileName(dir), check.Problem);
            skipped.Add(check);
        }
        return null;
    }

    /// <summary>
    /// <see cref="FindLatestGood(out List{CheckpointCheck})"/> for all ranks together (each rank calls it): rank 0's
    /// listing is the candidate list, every rank checks presence and sizes, and the checksum work is split across ranks
    /// (rank r hashes files r, r + N, ...), so verifying a 70B checkpoint does not keep the other ranks waiting in a
    /// collective for as long as one rank takes to read all of it. Every rank returns the same checkpoint.
    /// </summary>
    /// <remarks>
    /// <paramref name="hashedWhileLoading"/> and <paramref name="rejected"/> are as in the one-process overload; every
    /// rank must pass the same ones (the sharded engine's <c>FilesVerifiedWhileLoading</c>, and the steps its
    /// <c>LoadState</c> rejected on all ranks together).
    /// </remarks>
    public CheckpointCheck? FindLatestGood(TrainingWorld world, out List<CheckpointCheck> skipped,
        IReadOnlySet<string>? hashedWhileLoading = null, IReadOnlyDictionary<long, string>? rejected = null)
    {
        if (!world.IsDistributed) return FindLatestGood(out skipped, hashedWhileLoading, rejected);
        skipped = [];
        long[] mine = world.IsRoot ? [.. List().Select(c => c.Step)] : [];
        long count = world.Broadcast(mine.Length)[0];
        long[] steps = count == 0 ? [] : world.Broadcast(world.IsRoot ? mine : new long[count]);
        foreach (long step in steps)
        {
            string dir = Path.Combine(Root, DirName(step));
            if (rejected?.TryGetValue(step, out var known) == true)
            {
                _log.Warning("Checkpoint {Checkpoint} is not usable: {Problem}", Path.GetFileName(dir), known);
                skipped.Add(new CheckpointCheck(dir, step, false, known));
                continue;
            }
            var quick = Check(dir, full: false);
            string? problem = quick.Ok ? CheckShare(dir, world, hashedWhileLoading) : quick.Problem;
            if (!world.Any(problem != null))
            {
                if (skipped.Count > 0)
                    _log.Warning("Falling back to checkpoint {Checkpoint} because {Count} newer one(s) are incomplete or corrupt", Path.GetFileName(dir), skipped.Count);
                return quick;
            }
            problem ??= "a file failed its checksum on another rank";
            _log.Warning("Checkpoint {Checkpoint} is not usable: {Problem}", Path.GetFileName(dir), problem);
            skipped.Add(new CheckpointCheck(dir, step, false, problem));
        }
        return null;
    }

    /// <summary>Size and checksum of every file the folder's manifest lists, or null when the folder has no manifest.</summary>
    public static IReadOnlyDictionary<string, ManifestFile>? ManifestFiles(string dir)
    {
        string path = Path.Combine(dir, ManifestName);
        if (!File.Exists(path)) return null;
        // Null only for a folder without a manifest (not a store checkpoint); an empty one must not mean "nothing to check".
        try { return JsonSerializer.Deserialize(File.ReadAllText(path), CheckpointManifestJson.Default.CheckpointManifest)?.Files ?? throw new CheckpointCorruptException(dir, "manifest.json is empty"); }
        catch (JsonException e) { throw new CheckpointCorruptException(dir, $"manifest.json is unreadable: {e.Message}"); }
    }

    /// <summary>Checksums of this rank's share of a checkpoint's files against its manifest; the first mismatch, or null.</summary>
    static string? CheckShare(string dir, TrainingWorld world, IReadOnlySet<string>? hashedWhileLoading)
    {
        try
        {
            var manifest = JsonSerializer.Deserialize(File.ReadAllText(Path.Combine(dir, ManifestName)), CheckpointManifestJson.Default.CheckpointManifest)!;
            var listed = manifest.Files.Where(f => hashedWhileLoading?.Contains(f.Key) != true).OrderBy(f => f.Key, StringComparer.Ordinal)
                .Where((_, i) => i % world.Size == world.Rank).ToList();
            return VerifyAll(dir, listed);
        }
        catch (Exception e) when (e is IOException or JsonException or UnauthorizedAccessException)
        {
            return e.Message; // vanished or unreadable between the quick check and hashing
        }
    }

    /// <summary>
    /// Deletes complete checkpoints beyond the newest <paramref name="keepLast"/> complete ones, and leftovers of
    /// interrupted saves. Only folders older than the K-th newest complete checkpoint are touched, so the newest good
    /// checkpoint always survives (incomplete folders newer than it are kept for inspection).
    /// </summary>
    public void Prune(int keepLast)
    {
        if (keepLast < 1) throw new ArgumentOutOfRangeException(nameof(keepLast));
        var all = List();
        var good = all.Where(c => Check(c.Dir, full: false).Ok).ToList();
        if (good.Count <= keepLast) { CleanTemporaries(); return; }
        long oldestKept = good[keepLast - 1].Step;
        foreach (var (step, dir) in all)
        {
            if (step >= oldestKept) continue;
            _log.Debug("Deleting old checkpoint {Checkpoint}", Path.GetFileName(dir));
            TryDeleteDir(dir);
        }
        CleanTemporaries();
    }

    /// <summary>Removes hidden folders left by saves of processes that are gone (killed mid-save).</summary>
    public void CleanTemporaries()
    {
        if (!Directory.Exists(Root)) return;
        foreach (var dir in Directory.EnumerateDirectories(Root, ".step-*.tmp-*"))
        {
            var parts = Path.GetFileName(dir).Split(".tmp-");
            if (parts.Length == 2 && int.TryParse(parts[1].Split('-')[0], out int pid) && pid != Environment.ProcessId && ProcessAlive(pid)) continue;
            if (parts.Length == 2 && int.TryParse(parts[1].Split('-')[0], out int own) && own == Environment.ProcessId) continue;
            TryDeleteDir(dir);
        }
    }

    static bool ProcessAlive(int pid)
    {
        try { using var p = System.Diagnostics.Process.GetProcessById(pid); return !p.HasExited; }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }

    /// <summary>The checksum new manifests record (<see cref="CheckpointManifest.Digest"/>) of each file, in the given order.</summary>
    static string[] HashAll(IReadOnlyList<string> files, bool fsyncFirst)
    {
        var hashes = new string[files.Count];
        InParallel(files.Count, i =>
        {
            if (fsyncFirst) FsyncFile(files[i]);
            hashes[i] = ContentDigest.OfFile(files[i], CheckpointManifest.Digest);
        });
        return hashes;
    }

    /// <summary>Each listed file of <paramref name="dir"/> against its manifest checksum; the first problem in list order, or null.</summary>
    static string? VerifyAll(string dir, IReadOnlyList<KeyValuePair<string, ManifestFile>> listed)
    {
        var problems = new string?[listed.Count];
        InParallel(listed.Count, i => problems[i] = listed[i].Value.Verify(listed[i].Key, Path.Combine(dir, listed[i].Key)));
        return problems.FirstOrDefault(p => p is not null);
    }

    /// <summary>Runs <paramref name="body"/> for 0..count-1 on up to one thread per core (the weights and optimizer files hash at the same time).</summary>
    static void InParallel(int count, Action<int> body)
    {
        try
        {
            Parallel.For(0, count, new ParallelOptions { MaxDegreeOfParallelism = Environment.ProcessorCount }, body);
        }
        catch (AggregateException e)
        {
            // Callers see the I/O error itself, as with a sequential loop.
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw();
        }
    }

    static void FsyncFile(string path)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.ReadWrite, FileShare.Read);
        fs.Flush(flushToDisk: true);
    }

    static void TryDeleteDir(string dir)
    {
        try { if (Directory.Exists(dir)) Directory.Delete(dir, recursive: true); }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }
}
