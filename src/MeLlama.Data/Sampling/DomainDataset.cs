namespace MeLlama.Data.Sampling;

/// <summary>One domain of the pretraining mixture: a prepared dataset folder and its (relative) weight.</summary>
public sealed record DomainDataset(string Name, string Path, double Weight);
