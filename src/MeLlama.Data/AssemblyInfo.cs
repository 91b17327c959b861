namespace MeLlama.Data;
