namespace MeLlama.Inference;
