using System.Text;
using MeLlama.Core.IO;

namespace MeLlama.Cli.Commands;

/// <summary>
/// The line-in / line-out plumbing of the JSON-lines commands (tokenize, score): read the input file or stdin; write to
/// stdout, or atomically to an output file so that a failure leaves nothing half-written.
/// </summary>
static class JsonLinesStreams
{
    public static T Transform<T>(FileInfo? input, FileInfo? output, TextWriter stdout, Func<TextReader, TextWriter, T> run)
    {
        using var file = input is null ? null : new StreamReader(input.FullName, Encoding.UTF8, true, 1 << 20);
        var reader = file ?? Console.In;
        if (output is null)
        {
            var result = run(reader, stdout);
            stdout.Flush();
            return result;
        }
        T written = default!;
        AtomicFile.Write(output.FullName, stream =>
        {
            using var writer = new StreamWriter(stream, new UTF8Encoding(false), 1 << 20, leaveOpen: true);
            written = run(reader, writer);
        });
        return written;
    }
}
