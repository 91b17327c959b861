using System.Runtime.CompilerServices;

[assembly: InternalsVisibleTo("MeLlama.Distributed.Tests")]
