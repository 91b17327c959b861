using System.Text;

namespace MeLlama.Data.Tests;

/// <summary>
/// A reader of Megatron .idx/.bin written only from the format description (magic, version, dtype code,
/// counts, lengths, pointers, document indices), sharing no code with MeLlama.Data, to check our writer.
/// </summary>
sealed class IndependentIdxReader
{
    public byte DTypeCode;
    public ulong Version;
    public ulong SequenceCount, DocumentIndexCount;
    public int[] Lengths = [];
    public long[] Pointers = [];
    public long[] DocumentIndices = [];
    public List<long[]> Sequences = [];

    public static IndependentIdxReader Read(string prefix)
    {
        var r = new IndependentIdxReader();
        using (var br = new BinaryReader(File.OpenRead(prefix + ".idx")))
        {
            var magic = br.ReadBytes(9);
            Assert.Equal("MMIDIDX\0\0", Encoding.ASCII.GetString(magic));
            r.Version = br.ReadUInt64();
            r.DTypeCode = br.ReadByte();
            r.SequenceCount = br.ReadUInt64();
            r.DocumentIndexCount = br.ReadUInt64();
            r.Lengths = [.. Enumerable.Range(0, (int)r.SequenceCount).Select(_ => br.ReadInt32())];
            r.Pointers = [.. Enumerable.Range(0, (int)r.SequenceCount).Select(_ => br.ReadInt64())];
            r.DocumentIndices = [.. Enumerable.Range(0, (int)r.DocumentIndexCount).Select(_ => br.ReadInt64())];
            Assert.Equal(br.BaseStream.Length, br.BaseStream.Position); // nothing after the document indices
        }
        int size = r.DTypeCode switch { 8 => 2, 4 => 4, _ => throw new InvalidDataException($"dtype code {r.DTypeCode}") };
        byte[] bin = File.ReadAllBytes(prefix + ".bin");
        for (int i = 0; i < r.Lengths.Length; i++)
        {
            var seq = new long[r.Lengths[i]];
            for (int j = 0; j < seq.Length; j++)
            {
                long at = r.Pointers[i] + (long)j * size;
                seq[j] = size == 2 ? BitConverter.ToUInt16(bin, (int)at) : BitConverter.ToInt32(bin, (int)at);
            }
            r.Sequences.Add(seq);
        }
        long end = r.Lengths.Length == 0 ? 0 : r.Pointers[^1] + (long)r.Lengths[^1] * size;
        Assert.Equal(bin.LongLength, end);
        return r;
    }
}
