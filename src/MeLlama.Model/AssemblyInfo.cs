namespace MeLlama.Model;
