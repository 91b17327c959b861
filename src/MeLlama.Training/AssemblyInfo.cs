using System.Runtime.CompilerServices;

// The FSDP engine's prefetch tests observe unit timing through an internal probe (FsdpTrainStep.UnitInUse).
[assembly: InternalsVisibleTo("MeLlama.Training.Tests")]
