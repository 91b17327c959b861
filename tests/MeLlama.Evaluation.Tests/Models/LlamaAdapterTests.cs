using MeLlama.Evaluation.Models;
using MeLlama.Model;
using MeLlama.TestSupport;
using static TorchSharp.torch;

namespace MeLlama.Evaluation.Tests.Models;

public class LlamaAdapterTests(TinyLlamaFixture fixture) : IClassFixture<TinyLlamaFixture>
{
    [SkippableFact]
    public void Batched_padded_scoring_matches_the_model_branch_and_the_float64_reference()
    {
        var reference = TinyLlamaFixture.Reference();
        // A small token budget forces several batches, and different lengths force right padding.
        var lm = new LlamaCausalLanguageModel(fixture.Model, "tiny", maxBatchTokens: 200);
        var spans = reference.Select(r => new ScoringSpan(r.Tokens, 1)).ToList();
        var batched = lm.TokenLogProbs(spans);
        for (int s = 0; s < reference.Count; s++)
        {
            var single = Scoring.NextTokenLogProbs(fixture.Model, reference[s].Tokens);
            Assert.Equal(single.Length, batched[s].Length);
            for (int i = 0; i < single.Length; i++)
            {
                Assert.Equal(single[i], batched[s][i], 3e-4f);
                Assert.Equal(reference[s].LogProbs[i], batched[s][i], 2e-3);
            }
        }
    }

    [SkippableFact]
    public void Scoring_a_suffix_gives_the_tail_of_the_full_scores()
    {
        var (tokens, _) = TinyLlamaFixture.Reference()[0];
        var lm = new LlamaCausalLanguageModel(fixture.Model, "tiny");
        var full = lm.TokenLogProbs([new ScoringSpan(tokens, 1)])[0];
        var tail = lm.TokenLogProbs([new ScoringSpan(tokens, 30)])[0];
        Assert.Equal(tokens.Length - 30, tail.Length);
        for (int j = 0; j < tail.Length; j++) Assert.Equal(full[29 + j], tail[j], 3e-4f);
    }

    [SkippableFact]
    public void Log_likelihood_of_a_continuation_is_the_model_branchs_score_summed_over_its_tokens()
    {
        var tokenizer = fixture.Tokenizer;
        var lm = new LlamaCausalLanguageModel(fixture.Model, "tiny");
        var scorer = new TokenizedLogLikelihoodScorer(tokenizer, lm, batchSize: 3);
        var requests = new List<LogLikelihoodRequest>
        {
            new("Question: Does aspirin reduce the risk of stroke?\nAnswer:", " yes"),
            new("Question: Does aspirin reduce the risk of stroke?\nAnswer:", " maybe"),
            new("The patient was started on metformin for type 2 diabetes", " mellitus and lost weight."),
            new("Human: \nIs it benign?\n\nAssistant: \n", "no"),
        };
        var scores = scorer.Score(requests);
        for (int r = 0; r < requests.Count; r++)
        {
            // Independent of the scorer: encode context and context+continuation, score the whole sequence
            // with Scoring.NextTokenLogProbs, add up the entries that predict continuation tokens.
            int[] context = tokenizer.Encode(requests[r].Context, addBos: true);
            int[] whole = tokenizer.Encode(requests[r].Context + requests[r].Continuation, addBos: true);
            Assert.True(whole.AsSpan(0, context.Length).SequenceEqual(context));
            var lp = Scoring.NextTokenLogProbs(fixture.Model, whole);
            double expected = 0;
            for (int t = context.Length; t < whole.Length; t++) expected += lp[t - 1];
            Assert.Equal(whole.Length - context.Length, scores[r].TokenCount);
            Assert.Equal(expected, scores[r].Sum, 1e-3);
        }
    }

    [SkippableFact]
    public void Greedy_next_token_is_the_argmax_of_the_last_logits()
    {
        var reference = TinyLlamaFixture.Reference();
        var lm = new LlamaCausalLanguageModel(fixture.Model, "tiny");
        var prefixes = reference.Select(r => r.Tokens[..Math.Min(20 + r.Tokens.Length % 7, r.Tokens.Length)]).ToList();
        var next = lm.GreedyNextTokens(prefixes);
        for (int i = 0; i < prefixes.Count; i++)
        {
            using var scope = NewDisposeScope();
            var logits = fixture.Model.forward(tensor(prefixes[i].Select(t => (long)t).ToArray(), [1, prefixes[i].Length], ScalarType.Int64));
            Assert.Equal(logits[0, -1].argmax().item<long>(), next[i]);
        }
    }

    [SkippableFact]
    public void Greedy_generator_stops_at_max_tokens_and_cuts_stop_sequences()
    {
        var tokenizer = fixture.Tokenizer;
        var lm = new LlamaCausalLanguageModel(fixture.Model, "tiny");
        var generator = new GreedyTextGenerator(tokenizer, lm);
        var outputs = generator.Generate([new GenerationRequest("Question: Is it benign?\nAnswer:", 5, [])]);
        // Re-derive the 5 greedy tokens one at a time.
        var tokens = tokenizer.Encode("Question: Is it benign?\nAnswer:", addBos: true).ToList();
        var produced = new List<int>();
        for (int i = 0; i < 5; i++)
        {
            int next = lm.GreedyNextTokens([tokens.ToArray()])[0];
            if (next == tokenizer.EosId) break;
            produced.Add(next);
            tokens.Add(next);
        }
        Assert.Equal(tokenizer.Decode(produced.ToArray()), outputs[0]);
        string text = outputs[0];
        Skip.If(text.Length < 2, "the random model produced too little text to test stop sequences");
        string stop = text.Substring(text.Length / 2, 1);
        var cut = generator.Generate([new GenerationRequest("Question: Is it benign?\nAnswer:", 5, [stop])])[0];
        Assert.Equal(text[..text.IndexOf(stop, StringComparison.Ordinal)], cut);
    }
}

public class KvCacheGeneratorTests(TinyLlamaFixture fixture) : IClassFixture<TinyLlamaFixture>
{
    [SkippableFact]
    public void Kv_cache_generator_agrees_with_the_recomputing_greedy_generator()
    {
        var lm = new LlamaCausalLanguageModel(fixture.Model, "tiny");
        var naive = new GreedyTextGenerator(fixture.Tokenizer, lm);
        var cached = new KvCacheTextGenerator(new MeLlama.Inference.Generation.TextGenerator(fixture.Model, fixture.Tokenizer), "tiny");
        var requests = new List<GenerationRequest>
        {
            new("Human: \nDoes aspirin reduce the risk of stroke? Answer yes, no or maybe.\n\nAssistant: \n", 12, []),
            new("Question: Which drug is first line for type 2 diabetes?\nA. Insulin\nB. Metformin\nAnswer:", 6, ["\n\n"]),
            // Same budget and stops as a request above, different lengths: these run as left-padded batches.
            new("Human: \nIs fever a symptom of influenza?\n\nAssistant: \n", 12, []),
            new("Human: \nA 60-year-old woman has had a dry cough for three weeks after starting lisinopril. What is the likely cause?\n\nAssistant: \n", 12, []),
            new("Question: Which vitamin deficiency causes scurvy?\nAnswer:", 6, ["\n\n"]),
        };
        Assert.Equal(naive.Generate(requests), cached.Generate(requests));
        Assert.StartsWith("tiny+tok:", cached.Fingerprint);
    }
}

public class ScorerTruncationTests(TinyLlamaFixture fixture) : IClassFixture<TinyLlamaFixture>
{
    sealed class RecordingModel(int max) : ICausalLanguageModel
    {
        public List<ScoringSpan> Spans { get; } = [];
        public string Fingerprint => "rec";
        public int MaxSequenceLength => max;
        public IReadOnlyList<float[]> TokenLogProbs(IReadOnlyList<ScoringSpan> spans)
        {
            Spans.AddRange(spans);
            return spans.Select(s => Enumerable.Repeat(-1f, s.TargetCount).ToArray()).ToList();
        }
        public IReadOnlyList<int> GreedyNextTokens(IReadOnlyList<int[]> prefixes) => prefixes.Select(_ => 0).ToList();
    }

    [SkippableFact]
    public void Long_contexts_lose_their_oldest_tokens_after_bos_but_never_continuation_tokens()
    {
        var tokenizer = fixture.Tokenizer;
        var model = new RecordingModel(16);
        var scorer = new TokenizedLogLikelihoodScorer(tokenizer, model);
        string context = string.Join(" ", Enumerable.Range(0, 40).Select(i => $"word{i}"));
        var result = scorer.Score([new LogLikelihoodRequest(context, " the final answer")]);
        var span = Assert.Single(model.Spans);
        int[] whole = tokenizer.Encode(context + " the final answer", addBos: true);
        int continuation = whole.Length - tokenizer.Encode(context, addBos: true).Length;
        Assert.Equal(16, span.Tokens.Length);
        Assert.Equal(tokenizer.BosId, span.Tokens[0]);
        Assert.Equal(whole[^15..], span.Tokens[1..]);
        Assert.Equal(continuation, span.TargetCount);
        Assert.Equal(-continuation, result[0].Sum, 6);
        Assert.Throws<ArgumentException>(() => new TokenizedLogLikelihoodScorer(tokenizer, new RecordingModel(3)).Score([new LogLikelihoodRequest("x", " the final answer")]));
    }
}
