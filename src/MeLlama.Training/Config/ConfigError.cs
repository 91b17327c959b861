namespace MeLlama.Training.Config;

/// <summary>A recipe or override that cannot be used; the message names the file and key.</summary>
public sealed class ConfigError(string message) : Exception(message);
