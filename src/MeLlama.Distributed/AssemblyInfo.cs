namespace MeLlama.Distributed;
