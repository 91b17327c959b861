using MeLlama.Model;
using TorchSharp;
using static TorchSharp.torch;

namespace MeLlama.Training.Engine.Sharded;

/// <summary>
/// Where the fp32 master weights of a sharded engine come from when no full-size model holds them (a model built on
/// the meta device), or when the model's own values are not precise enough (a bf16 model: its weights are already
/// rounded). Each rank asks only for the elements it owns, so no rank ever holds the full model.
/// <para>The engine calls <see cref="Fill"/> exactly once per parameter, in <c>named_parameters()</c> order, on every
/// rank, also when the rank owns none of the parameter (then <paramref name="destination"/> is empty): a random
/// initialisation has to draw every parameter to stay in step with the single-process one.</para>
/// </summary>
public interface IMasterSource
{
    /// <summary>
    /// Fills the fp32, contiguous, 1-D <paramref name="destination"/> with elements
    /// [<paramref name="first"/>, first + destination.numel()) of parameter <paramref name="name"/> (shape
    /// <paramref name="shape"/>) flattened in row-major order.
    /// </summary>
    void Fill(string name, long[] shape, long first, Tensor destination);
}

/// <summary>The master sources the trainer uses: the seeded random init and a Hugging Face checkpoint.</summary>
public static class MasterSources
{
    /// <summary>
    /// Exactly the values of <c>new LlamaForCausalLM(config, device, Float32, initialize: true, seed)</c> (what
    /// <c>ModelFactory.RandomInit</c> builds before casting), one parameter at a time: peak extra memory is the
    /// largest parameter, in fp32, on <paramref name="device"/>.
    /// </summary>
    public static RandomInitMasterSource RandomInit(LlamaConfig config, long seed, Device device) => new(config, seed, device);

    /// <summary>
    /// Reads each rank's slice straight from the checkpoint's safetensors (any dtype, converted to fp32): only the
    /// owned byte ranges are read.
    /// </summary>
    public static IMasterSource FromCheckpoint(SafeTensorsCheckpoint checkpoint) => new CheckpointMasterSource(checkpoint);

    /// <summary>Leaves the masters at zero: a resume, whose <c>LoadState</c> fills them next.</summary>
    public static IMasterSource None { get; } = new NoMasters();

    sealed class NoMasters : IMasterSource
    {
        public void Fill(string name, long[] shape, long first, Tensor destination) { }
    }

    sealed class CheckpointMasterSource(SafeTensorsCheckpoint checkpoint) : IMasterSource
    {
        public void Fill(string name, long[] shape, long first, Tensor destination)
        {
            var entry = checkpoint.Entry(name);
            if (!entry.Shape.SequenceEqual(shape))
                throw new InvalidDataException($"{checkpoint.Directory}: {name} is {entry.ShapeText}, the model's is [{string.Join(", ", shape)}]");
            if (destination.numel() > 0) checkpoint.ReadSlice(name, first, destination);
        }
    }
}

/// <summary>
/// <see cref="MasterSources.RandomInit"/>: replays <see cref="LlamaForCausalLM.InitializeWeights"/> parameter by
/// parameter. Each parameter is drawn full-size (the generator's sequence depends on the tensor drawn, so a slice
/// cannot be drawn on its own), its requested range copied out, and the draw freed.
/// </summary>
public sealed class RandomInitMasterSource : IMasterSource
{
    readonly List<(string Name, long[] Shape)> _order;
    readonly LlamaConfig _config;
    readonly Device _device;
    readonly Generator _generator;
    int _next;

    internal RandomInitMasterSource(LlamaConfig config, long seed, Device device)
    {
        _config = config;
        _device = device;
        // The draw order is the model's parameter order; a shape-only model gives it without memory.
        using var shapes = new LlamaForCausalLM(config, META, ScalarType.Float32, initialize: false);
        _order = shapes.named_parameters().Select(p => (p.name, p.parameter.shape)).ToList();
        _generator = new Generator((ulong)seed); // CPU, as LlamaForCausalLM.InitializeWeights
    }

    /// <summary>Largest temporary (one full-size fp32 parameter) this source allocated, in bytes.</summary>
    public long PeakTemporaryBytes { get; private set; }

    public void Fill(string name, long[] shape, long first, Tensor destination)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        // Parameters skipped by the caller are still drawn (and dropped), so the generator stays in step.
        while (true)
        {
            if (_next >= _order.Count) throw new InvalidOperationException($"random init: {name} asked for after the last parameter (or twice)");
            var (expected, expectedShape) = _order[_next++];
            var full = empty(expectedShape, ScalarType.Float32, _device);
            PeakTemporaryBytes = Math.Max(PeakTemporaryBytes, full.numel() * sizeof(float));
            LlamaForCausalLM.InitializeParameter(expected, full, _config.InitializerRange, _generator);
            if (expected != name)
            {
                full.Dispose();
                continue;
            }
            if (!expectedShape.SequenceEqual(shape)) throw new ArgumentException($"random init: {name} has shape [{string.Join(", ", expectedShape)}], asked for [{string.Join(", ", shape)}]");
            if (destination.numel() > 0) destination.copy_(full.view(-1).narrow(0, first, destination.numel()));
            return;
        }
    }
}
