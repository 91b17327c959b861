using System.Collections;

namespace MeLlama.Distributed;

static class EnvironmentVariables
{
    public static Dictionary<string, string> Snapshot()
    {
        var vars = new Dictionary<string, string>(StringComparer.Ordinal);
        foreach (DictionaryEntry e in Environment.GetEnvironmentVariables())
            if (e.Key is string k && e.Value is string v) vars[k] = v;
        return vars;
    }
}
