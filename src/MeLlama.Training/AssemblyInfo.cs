namespace MeLlama.Training;
