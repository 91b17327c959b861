using MeLlama.Data.Config;
using MeLlama.Data.Readers;

namespace MeLlama.Data.Prepare;

/// <summary>Where reading stands: the next record is record <see cref="Records"/> (0-based) of file <see cref="File"/> of source <see cref="Source"/>.</summary>
public sealed record InputPosition(int Source, int File, long Records)
{
    public static InputPosition Start { get; } = new(0, 0, 0);
}

/// <summary>One thing the scanner met, in input order: a record (text or problem) or the end of a file.</summary>
public sealed class CorpusItem
{
    public int Source { get; init; }
    public int File { get; init; }
    /// <summary>0-based index of this record within its file (records and bad records alike).</summary>
    public long Ordinal { get; init; }
    public long Line { get; init; }
    public string? Text { get; init; }
    public string? Problem { get; init; }
    /// <summary>Set on the item that closes a file.</summary>
    public FileOutcome? FileEnd { get; init; }
}

/// <summary>How a file ended: size and sha256 of its raw bytes, "ok" or "failed", and the problem that ended it.</summary>
public sealed record FileOutcome(string Path, long Bytes, string? Sha256, string Status, string? Problem, long Line, string? Detail, long LastWriteTicks);

/// <summary>An input problem under the "fail" policy: names source, file, line and reason, never text.</summary>
public sealed class PrepareInputException(string source, string file, long line, string problem, string? detail)
    : Exception($"source '{source}': {file}{(line > 0 ? $" line {line}" : "")}: {problem}{(detail is null ? "" : $" ({detail})")} — onError is \"fail\"")
{
    public string Problem { get; } = problem;
}

/// <summary>
/// Reads all sources in config order, file by file (sorted), record by record, applying each source's error
/// policy. Runs on one thread; the items it yields carry raw text to the cleaning/tokenizing workers.
/// </summary>
public sealed class CorpusScanner(DataConfig config, IReadOnlyList<IReadOnlyList<string>> files)
{
    /// <summary>Raw (compressed) bytes read so far: for progress only.</summary>
    public long RawBytesRead => Interlocked.Read(ref _rawBytesDone) + (_current?.RawBytesRead ?? 0);
    long _rawBytesDone;
    volatile InputStreams? _current;

    public IEnumerable<CorpusItem> Scan(InputPosition from, CancellationToken cancel)
    {
        for (int s = from.Source; s < config.Sources.Count; s++)
        {
            var source = config.Sources[s];
            int maxBytes = (int)Math.Min(int.MaxValue - 64, (long)config.MaxChars * 4);
            var reader = RecordReaders.For(source, maxBytes);
            for (int f = s == from.Source ? from.File : 0; f < files[s].Count; f++)
            {
                cancel.ThrowIfCancellationRequested();
                long skip = s == from.Source && f == from.File ? from.Records : 0;
                foreach (var item in ScanFile(s, f, source, reader, files[s][f], skip, cancel)) yield return item;
            }
        }
    }

    IEnumerable<CorpusItem> ScanFile(int s, int f, SourceConfig source, IRecordReader reader, string path, long skip, CancellationToken cancel)
    {
        long lastWrite = 0;
        InputStreams? streams = null;
        Stream? parquetStream = null;
        string? problem = null, detail = null;
        long problemLine = 0;
        try
        {
            lastWrite = System.IO.File.GetLastWriteTimeUtc(path).Ticks;
            if (source.Format == "parquet")
                parquetStream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
            else
                _current = streams = InputStreams.Open(path);
        }
        catch (InputFileException e) { (problem, problemLine, detail) = (e.Problem, e.Line, e.Message); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { (problem, detail) = (Problems.UnreadableFile, $"cannot open ({e.GetType().Name})"); }

        bool readToEnd = false;
        try
        {
            if (problem == null)
            {
                using var records = reader.Read(streams?.Content ?? parquetStream!, path).GetEnumerator();
                long ordinal = 0;
                while (true)
                {
                    SourceRecord record;
                    try
                    {
                        if (!records.MoveNext()) break;
                        record = records.Current;
                    }
                    catch (InputFileException e) { (problem, problemLine, detail) = (e.Problem, e.Line, e.Message); break; }
                    catch (Exception e) when (e is not (OperationCanceledException or OutOfMemoryException or PrepareInputException))
                    {
                        (problem, detail) = (e is IOException or UnauthorizedAccessException ? Problems.UnreadableFile : "read_error", $"{e.GetType().Name} while reading");
                        break;
                    }
                    long o = ordinal++;
                    if (o < skip) continue;
                    if (record.Problem != null && source.FailOnError)
                        throw new PrepareInputException(source.Name, path, record.Line, record.Problem, null);
                    yield return new CorpusItem { Source = s, File = f, Ordinal = o, Line = record.Line, Text = record.Text, Problem = record.Problem };
                    if ((o & 1023) == 0) cancel.ThrowIfCancellationRequested();
                }
            }
            readToEnd = true;
        }
        finally
        {
            // The consumer stopped early (an error downstream): leave no file handle open.
            if (!readToEnd) { streams?.Dispose(); parquetStream?.Dispose(); _current = null; }
        }

        long bytes = 0;
        string? sha = null;
        try
        {
            if (streams != null) (bytes, sha) = streams.Finish();
            else if (parquetStream != null)
            {
                parquetStream.Dispose();
                parquetStream = null;
                bytes = new FileInfo(path).Length;
                sha = Core.IO.AtomicFile.Sha256File(path);
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            problem ??= Problems.UnreadableFile;
            detail ??= $"{e.GetType().Name} while hashing";
        }
        finally
        {
            streams?.Dispose();
            parquetStream?.Dispose();
            _current = null;
            Interlocked.Add(ref _rawBytesDone, bytes);
        }
        if (problem != null && source.FailOnError)
            throw new PrepareInputException(source.Name, path, problemLine, problem, detail);
        yield return new CorpusItem
        {
            Source = s, File = f, Line = problemLine, Problem = problem,
            FileEnd = new FileOutcome(path, bytes, sha, problem == null ? "ok" : "failed", problem, problemLine, detail, lastWrite),
        };
    }
}
