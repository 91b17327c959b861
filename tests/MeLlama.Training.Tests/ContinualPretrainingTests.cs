using System.Text.Json;
using MeLlama.Data.Sampling;
using MeLlama.Model;
using MeLlama.Tokenization;
using MeLlama.Training.Config;
using MeLlama.Training.Export;
using MeLlama.Training.Loop;
using MeLlama.TestSupport;
using static TorchSharp.torch;

namespace MeLlama.Training.Tests;

/// <summary>Continual pretraining from the tiny HF LLaMA fixture on tokenized PubMedQA abstracts.</summary>
public sealed class ContinualPretrainingTests
{
    /// <summary>Abstracts of PubMedQA tokenized with the LLaMA-2 tokenizer, split into a train and an eval dataset folder.</summary>
    static List<DomainSource> PubMedDomain(string root, ITextTokenizer tokenizer)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(SharedData.Require(SharedData.PubMedQa)));
        var texts = doc.RootElement.EnumerateObject().Take(120)
            .Select(p => string.Join(" ", p.Value.GetProperty("CONTEXTS").EnumerateArray().Select(c => c.GetString()))).ToList();
        var docs = texts.Select(t => tokenizer.Encode(t, addBos: true, addEos: true)).ToList();
        string dir = TrainTestData.WritePrepared(Path.Combine(root, "pubmed"), "pubmed", docs[20..], docs[..20],
            vocab: tokenizer.VocabSize, tokenizerName: tokenizer.Name, fingerprint: tokenizer.Fingerprint, eos: tokenizer.EosId);
        return [new DomainSource { Name = "pubmed", Path = dir, Weight = 1 }];
    }

    static TrainConfig Recipe(string runDir, string initFrom, List<DomainSource> domains, string tokenizer) => new()
    {
        RunDir = runDir,
        Model = new ModelSection { InitFrom = initFrom, Tokenizer = tokenizer },
        Data = new DataSection { Datasets = domains },
        SeqLen = 64, MicroBatch = 2, GradAccum = 2,
        Optimizer = new OptimizerSection { Lr = 3e-3 },
        Schedule = new ScheduleSection { WarmupRatio = 0.1 },
        Seed = 11, Threads = 1, MaxSteps = 6,
        Eval = new EvalSection { Interval = 0, Batches = 3 },
        Checkpoint = new CheckpointSection { Interval = 100, KeepLast = 1 },
        Tensorboard = false, MeasurePeak = false,
    };

    [SkippableFact]
    public void FirstStepLossEqualsScoreLogProbsAndExportedModelScoresLikeTheTrainersEval()
    {
        string fixture = SharedData.Require(SharedData.TinyLlama);
        string tokenizerPath = SharedData.Require(SharedData.LlamaTokenizer);
        var tokenizer = TokenizerLoader.Load(tokenizerPath);
        using var tmp = new TempDir();
        var domains = PubMedDomain(tmp.Path, tokenizer);
        var config = Recipe(tmp["run"], fixture, domains, tokenizerPath);
        var outcome = TrainerHarness.Train(config);
        Assert.Equal(TrainEnd.Completed, outcome.End);

        // 1. Step 1's loss (before any update) from score-style log-probs of the fixture model on the same samples.
        double expectedFirst;
        using (var model = HfCheckpoint.LoadModel(fixture))
        using (var stream = PretrainSampleStream.Open([new DomainDataset("pubmed", domains[0].Path, 1)], config.SeqLen, config.Seed, 0, 1))
        {
            var nll = new List<double>();
            var buffer = new long[config.MicroBatch * (config.SeqLen + 1)];
            for (int micro = 0; micro < config.GradAccum; micro++)
            {
                stream.NextBatch(config.MicroBatch, buffer);
                for (int s = 0; s < config.MicroBatch; s++)
                {
                    int[] tokens = buffer.AsSpan(s * (config.SeqLen + 1), config.SeqLen + 1).ToArray().Select(t => (int)t).ToArray();
                    nll.AddRange(Scoring.NextTokenLogProbs(model, tokens).Select(lp => -(double)lp));
                }
            }
            expectedFirst = nll.Average();
        }
        double trainerFirst = TrainerHarness.TrainLosses(config.RunDir)[1];
        Assert.True(Math.Abs(trainerFirst - expectedFirst) < 1e-5 * expectedFirst, $"step-1 loss {trainerFirst:R} vs score {expectedFirst:R}");

        // 2. The exported fp32 folder scores the held-out samples exactly as the trainer's final evaluation did.
        string exported = HfExporter.Export(config.RunDir, tmp["hf"], ScalarType.Float32);
        Assert.True(File.Exists(Path.Combine(exported, "config.json")));
        Assert.True(File.Exists(Path.Combine(exported, "tokenizer.model")));
        Assert.Equal(tokenizer.Fingerprint, TokenizerLoader.TryLoadFromModelFolder(exported)!.Fingerprint);
        double exportedEval;
        using (var model = HfCheckpoint.LoadModel(exported))
        using (var heldOut = HeldOutSamples.Open(domains[0].Path, config.SeqLen))
        {
            var nll = new List<double>();
            var sample = new long[config.SeqLen + 1];
            long n = Math.Min(heldOut.Count, (long)config.Eval.Batches * config.MicroBatch);
            for (long i = 0; i < n; i++)
            {
                heldOut.Read(i, sample);
                nll.AddRange(Scoring.NextTokenLogProbs(model, sample.Select(t => (int)t).ToArray()).Select(lp => -(double)lp));
            }
            exportedEval = nll.Average();
        }
        double trainerEval = outcome.LastEval["pubmed"];
        Assert.True(Math.Abs(trainerEval - exportedEval) < 1e-5 * trainerEval, $"trainer eval {trainerEval:R} vs exported score {exportedEval:R}");
        Assert.True(trainerEval < outcome.FirstEval["pubmed"], $"held-out loss should fall: {outcome.FirstEval["pubmed"]} → {trainerEval}");

        // 3. A bf16 export loads and agrees to bf16 precision.
        string bf16 = HfExporter.Export(config.RunDir, tmp["hf-bf16"], ScalarType.BFloat16);
        Assert.Contains("bfloat16", File.ReadAllText(Path.Combine(bf16, "config.json")));
        using (var weights = Model.SafeTensorsReader.Open(Path.Combine(bf16, "model.safetensors")))
            Assert.All(weights.Entries.Values, e => Assert.Equal(ScalarType.BFloat16, e.Dtype));
        using var bfModel = HfCheckpoint.LoadModel(bf16);
        int[] probe = [1, 450, 22539, 310, 278, 3677];
        var a = Scoring.NextTokenLogProbs(bfModel, probe);
        using var fpModel = HfCheckpoint.LoadModel(exported);
        var b = Scoring.NextTokenLogProbs(fpModel, probe);
        for (int i = 0; i < a.Length; i++) Assert.True(Math.Abs(a[i] - b[i]) < 0.05 * Math.Abs(b[i]) + 0.05, $"position {i}: bf16 {a[i]} vs fp32 {b[i]}");
    }
}
