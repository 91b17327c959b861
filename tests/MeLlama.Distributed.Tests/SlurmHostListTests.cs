using System.Globalization;
using System.Text;
using MeLlama.Distributed.Slurm;

namespace MeLlama.Distributed.Tests;

public class SlurmHostListTests
{
    [Theory]
    [InlineData("gpu[001-004,010],login1", "gpu001 gpu002 gpu003 gpu004 gpu010 login1")]
    [InlineData("node[1-2,5],gpu-a[01-03]", "node1 node2 node5 gpu-a01 gpu-a02 gpu-a03")]
    [InlineData("single", "single")]
    [InlineData("n[8-11]", "n8 n9 n10 n11")]
    [InlineData("n[08-11]", "n08 n09 n10 n11")]
    [InlineData("rack[1-2]-n[01-02]", "rack1-n01 rack1-n02 rack2-n01 rack2-n02")]
    [InlineData("a,b[3],c", "a b3 c")]
    [InlineData("x[0]y", "x0y")]
    public void ExpandsSlurmNotation(string list, string expected) =>
        Assert.Equal(expected.Split(' '), SlurmHostList.Expand(list));

    [Theory]
    [InlineData("gpu[001-004")]
    [InlineData("gpu]1[")]
    [InlineData("gpu[4-1]")]
    [InlineData("gpu[a-b]")]
    [InlineData("gpu[1-2],,x")]
    [InlineData("gpu[1-2]],x")]
    [InlineData("gpu[[1]]")]
    [InlineData("gpu[]")]
    [InlineData("n[0-99999999]")]
    public void RejectsMalformedLists(string list)
    {
        var e = Assert.Throws<FormatException>(() => SlurmHostList.Expand(list));
        Assert.Contains(list, e.Message);
    }

    /// <summary>
    /// Property: for random host sets (prefixes with dashes and digits, zero-padded numbers, singletons),
    /// compressing them the way Slurm may (random grouping into ranges and brackets) and expanding gives back
    /// the same hosts in the same order.
    /// </summary>
    [Fact]
    public void RandomCompressedListsExpandToTheirHosts()
    {
        var random = new Random(20240601);
        for (int trial = 0; trial < 500; trial++)
        {
            var expected = new List<string>();
            var compressed = new List<string>();
            int groups = random.Next(1, 5);
            for (int g = 0; g < groups; g++)
            {
                string prefix = RandomPrefix(random);
                if (random.Next(4) == 0)
                {
                    // A plain host name, no brackets.
                    string host = prefix + (random.Next(2) == 0 ? "" : random.Next(100).ToString(CultureInfo.InvariantCulture));
                    expected.Add(host);
                    compressed.Add(host);
                    continue;
                }
                int width = random.Next(1, 5);
                var ranges = new List<string>();
                long next = random.Next(0, 20);
                int pieces = random.Next(1, 4);
                for (int p = 0; p < pieces; p++)
                {
                    long lo = next, hi = lo + random.Next(0, 6);
                    if (hi >= Pow10(width)) break;
                    for (long v = lo; v <= hi; v++) expected.Add(prefix + Format(v, width));
                    ranges.Add(lo == hi && random.Next(2) == 0 ? Format(lo, width) : $"{Format(lo, width)}-{Format(hi, width)}");
                    next = hi + random.Next(1, 5);
                }
                if (ranges.Count == 0) { expected.Add(prefix + "0"); compressed.Add(prefix + "0"); continue; }
                compressed.Add($"{prefix}[{string.Join(',', ranges)}]");
            }
            string list = string.Join(',', compressed);
            Assert.Equal(expected, SlurmHostList.Expand(list));
            Assert.Equal(expected[0], SlurmHostList.First(list));
        }
    }

    static string RandomPrefix(Random random)
    {
        const string letters = "abcdefghijklmnopqrstuvwxyz";
        var sb = new StringBuilder();
        int n = random.Next(1, 6);
        for (int i = 0; i < n; i++) sb.Append(letters[random.Next(letters.Length)]);
        if (random.Next(3) == 0) sb.Append('-').Append(letters[random.Next(letters.Length)]);
        if (random.Next(4) == 0) sb.Append(random.Next(10)).Append('-');
        return sb.ToString();
    }

    // Slurm pads to the width of the written lower bound: numbers that need more digits than the width keep them.
    static string Format(long v, int width) => v.ToString(CultureInfo.InvariantCulture).PadLeft(width, '0');
    static long Pow10(int width) => (long)Math.Pow(10, width);

    [Theory]
    [InlineData("4(x2),2", new[] { 4, 4, 2 })]
    [InlineData("8", new[] { 8 })]
    [InlineData("2,3(x3)", new[] { 2, 3, 3, 3 })]
    public void ExpandsTasksPerNode(string value, int[] expected) => Assert.Equal(expected, SlurmTasksPerNode.Expand(value));

    [Theory]
    [InlineData("4(x0)")]
    [InlineData("4(2)")]
    [InlineData("0")]
    [InlineData("x")]
    [InlineData("4(x2")]
    public void RejectsMalformedTasksPerNode(string value) => Assert.Throws<FormatException>(() => SlurmTasksPerNode.Expand(value));
}
