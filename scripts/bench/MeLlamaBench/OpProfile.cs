using MeLlama.Model;
using MeLlama.Training.Loop;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlamaBench;

/// <summary>
/// `ops`: CPU seconds of each building block of one training step of the bench shape, forward and backward, in
/// isolation (the model's own modules on activations of the right shape), next to its matmul FLOPs. Shows how
/// much of a step is matmul at near-peak speed and what the rest (norms, RoPE, attention, loss, elementwise) costs.
/// Meant for --threads 1 on a busy machine: CPU seconds then measure the work, not the machine's contention.
/// </summary>
static class OpProfile
{
    public static Dictionary<string, object> Run(Args args)
    {
        var shape = BenchShape.FromArgs(args);
        int threads = args.Int("threads", 1);
        int repeats = args.Int("repeats", 3);
        bool gemmOnly = args.Flag("gemm-only");
        bool experiments = args.Flag("experiments");
        args.RejectUnknown();
        set_num_threads(threads);
        var c = shape.Config;
        long b = shape.Batch, t = shape.SeqLen, d = c.HiddenSize;
        using var model = ModelFactory.RandomInit(c, CPU, ScalarType.Float32, seed: 3);
        var layer = model.Layers[0];
        var rope = model.Rotary.Tables(0, t, CPU, ScalarType.Float32);
        var peak = PeakFlops.Measure(CPU, ScalarType.Float32, 2048, trials: 3);
        TrainBench.Log($"ops profile: {shape.Name}, {threads} thread(s), peak {peak.BestFlops / 1e9:F1} GFLOP/s, {peak.BestFlopsPerCpuSecond / 1e9:F1} GFLOP/CPU-s");

        var rows = new List<Dictionary<string, object>>();
        void Measure(string name, double matmulFlopsForward, Func<Tensor, Tensor> op, long[] inputShape, int perStep, Func<Tensor>? makeInput = null)
        {
            var fw = new List<double>();
            var bw = new List<double>();
            for (int r = 0; r < repeats + 1; r++)
            {
                using var scope = NewDisposeScope();
                var x = makeInput?.Invoke() ?? randn(inputShape).requires_grad_(true);
                double c0 = CpuClock.ProcessSeconds();
                var y = op(x);
                double c1 = CpuClock.ProcessSeconds();
                var gradOut = y.numel() == 1 ? ones_like(y) : randn_like(y);
                double c2 = CpuClock.ProcessSeconds();
                autograd.backward([y], [gradOut]);
                double c3 = CpuClock.ProcessSeconds();
                if (r == 0) continue;
                fw.Add(c1 - c0);
                bw.Add(c3 - c2);
            }
            double f = TrainBench.Median(fw), g = TrainBench.Median(bw);
            double ideal = 3 * matmulFlopsForward / peak.BestFlopsPerCpuSecond;
            rows.Add(new()
            {
                ["op"] = name, ["per_step"] = perStep, ["forward_s"] = f, ["backward_s"] = g, ["per_step_s"] = (f + g) * perStep,
                ["matmul_ideal_per_step_s"] = ideal * perStep,
            });
            TrainBench.Log($"{name,-28} x{perStep,3}: fwd {f * 1000,8:F1} ms  bwd {g * 1000,8:F1} ms  per step {(f + g) * perStep,7:F2} s  (matmul at peak {ideal * perStep,6:F2} s)");
        }

        long[] hidden = [b, t, d];
        double tokens = b * t;
        if (experiments) Experiments();
        if (!gemmOnly) MeasureBlocks();
        void Experiments()
        {
            long[] headShape = [b, c.NumHeads, t, c.HeadDim];
            var mask = full([t, t], float.NegativeInfinity).triu(1);
            double scale = 1.0 / Math.Sqrt(c.HeadDim);
            Measure("x sdpa flash (is_causal)", 4 * b * t * t * d / 2.0, x => nn.functional.scaled_dot_product_attention(x, x * 0.5, x * 0.25, is_casual: true), headShape, c.NumLayers);
            Measure("x attention math", 4 * b * t * t * d / 2.0, x =>
            {
                var q = x; var k = x * 0.5; var v = x * 0.25;
                var probs = (q.matmul(k.transpose(-2, -1)) * scale + mask).softmax(-1);
                return probs.matmul(v);
            }, headShape, c.NumLayers);
            Measure("x sdpa with explicit mask", 4 * b * t * t * d / 2.0, x => nn.functional.scaled_dot_product_attention(x, x * 0.5, x * 0.25, attn_mask: mask), headShape, c.NumLayers);
            var w = randn(c.VocabSize, d).requires_grad_(true);
            Measure("x lm_head linear", 2 * b * t * d * c.VocabSize, x => nn.functional.linear(x, w), [b * t, d], 1);
            Measure("x lm_head w·xᵀ", 2 * b * t * d * c.VocabSize, x => w.mm(x.t()), [b * t, d], 1);
            Measure("x lm_head chunked 4", 2 * b * t * d * c.VocabSize, x => cat(x.chunk(4, 0).Select(part => nn.functional.linear(part, w)).ToArray(), 0), [b * t, d], 1);
        }
        void MeasureBlocks()
        {
        Measure("embedding", 0, ids => model.Embedding.forward(ids), [], 1,
            () => randint(0, c.VocabSize, [b, t], dtype: ScalarType.Int64));
        Measure("decoder layer (whole)", 2 * tokens * (4.0 * d * d + 3.0 * d * c.IntermediateSize) + 4 * b * t * t * d / 2.0,
            x => layer.forward(x, rope), hidden, c.NumLayers);
        Measure("  rmsnorm", 0, x => layer.InputNorm.forward(x), hidden, 2 * c.NumLayers);
        Measure("  q/k/v/o projections", 2 * tokens * 4.0 * d * d,
            x => layer.Attention.QProj.forward(x) + layer.Attention.KProj.forward(x) + layer.Attention.VProj.forward(x) + layer.Attention.OProj.forward(x), hidden, c.NumLayers);
        Measure("  attention (whole block)", 2 * tokens * 4.0 * d * d + 4 * b * t * t * d / 2.0, x => layer.Attention.forward(x, rope), hidden, c.NumLayers);
        long[] heads = [b, c.NumHeads, t, c.HeadDim];
        Measure("  rope (q or k)", 0, x => rope.Apply(x), heads, 2 * c.NumLayers);
        Measure("  sdpa causal", 4 * b * t * t * d / 2.0, x => nn.functional.scaled_dot_product_attention(x, x * 0.5, x * 0.25, is_casual: true), heads, c.NumLayers);
        Measure("  mlp (whole block)", 2 * tokens * 3.0 * d * c.IntermediateSize, x => layer.Mlp.forward(x), hidden, c.NumLayers);
        Measure("  silu(g)*u", 0, x => nn.functional.silu(x) * (x * 0.5), [b, t, c.IntermediateSize], c.NumLayers);
        Measure("final norm + lm_head", 2 * tokens * d * c.VocabSize, x => model.Logits(model.FinalNorm.forward(x)), hidden, 1);
        var labels = randint(0, c.VocabSize, [b * t], dtype: ScalarType.Int64);
        Measure("cross-entropy (fp32)", 0, x => nn.functional.cross_entropy(x, labels), [b * t, c.VocabSize], 1);
        }

        // The step's GEMM shapes on their own: forward y = x·Wᵀ, input grad dx = dy·W, weight grad dW = dyᵀ·x.
        var gemms = new List<Dictionary<string, object>>();
        double peakPerCpu = peak.BestFlopsPerCpuSecond;
        foreach (var (name, n, k) in new (string, long, long)[] { ("attention proj", d, d), ("gate/up", c.IntermediateSize, d), ("down", d, c.IntermediateSize), ("lm_head", c.VocabSize, d) })
        {
            using var scope = NewDisposeScope();
            using var noGrad = no_grad();
            long m = b * t;
            var x = randn(m, k); var w = randn(n, k); var dy = randn(m, n);
            double flops = 2.0 * m * n * k;
            double Rate(Func<Tensor> f)
            {
                f().Dispose();
                double best = 0;
                for (int r = 0; r < repeats; r++)
                {
                    double c0 = CpuClock.ProcessSeconds();
                    f().Dispose();
                    best = Math.Max(best, flops / (CpuClock.ProcessSeconds() - c0));
                }
                return best;
            }
            double fwd = Rate(() => nn.functional.linear(x, w)), dx = Rate(() => dy.mm(w)), dw = Rate(() => dy.t().mm(x));
            TrainBench.Log($"gemm {name,-15} [{m}x{k}]·[{k}x{n}]: fwd {fwd / 1e9:F1}, dx {dx / 1e9:F1}, dW {dw / 1e9:F1} GFLOP/CPU-s (2048² peak {peakPerCpu / 1e9:F1})");
            gemms.Add(new() { ["name"] = name, ["m"] = m, ["k"] = k, ["n"] = n, ["forward_gflops_per_cpu_s"] = fwd / 1e9, ["input_grad_gflops_per_cpu_s"] = dx / 1e9, ["weight_grad_gflops_per_cpu_s"] = dw / 1e9 });
        }
        return new Dictionary<string, object> { ["shape"] = shape.Describe(), ["threads"] = threads, ["peak"] = peak.Describe(), ["ops"] = rows, ["gemms"] = gemms };
    }
}
