namespace MeLlama.Evaluation;
