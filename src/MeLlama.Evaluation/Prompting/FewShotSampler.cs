using System.Security.Cryptography;
using System.Text;
using MeLlama.Evaluation.Metrics;
using MeLlama.Evaluation.Tasks;

namespace MeLlama.Evaluation.Prompting;

/// <summary>
/// Draws k few-shot examples for an item, deterministically from (seed, task, item id) alone, so the
/// choice does not depend on evaluation order, --limit or a resumed run. The item itself (same id) is never
/// drawn; examples are distinct and kept in draw order.
/// </summary>
public sealed class FewShotSampler(IReadOnlyList<EvalItem> pool, ulong seed, string taskName)
{
    public IReadOnlyList<EvalItem> Sample(EvalItem item, int k)
    {
        if (k <= 0) return [];
        int available = pool.Count - pool.Count(p => p.Id == item.Id);
        if (available < k) throw new InvalidOperationException($"Task '{taskName}': {k}-shot needs {k} examples besides the item but the pool has {available}");
        var rng = new SplitMix64(ItemSeed(item.Id));
        var chosen = new List<EvalItem>(k);
        var used = new HashSet<int>();
        while (chosen.Count < k)
        {
            int i = (int)rng.NextBelow((ulong)pool.Count);
            if (pool[i].Id == item.Id || !used.Add(i)) continue;
            chosen.Add(pool[i]);
        }
        return chosen;
    }

    ulong ItemSeed(string itemId)
    {
        var hash = SHA256.HashData(Encoding.UTF8.GetBytes($"{seed}\u0000{taskName}\u0000{itemId}"));
        return BitConverter.ToUInt64(hash, 0);
    }
}
