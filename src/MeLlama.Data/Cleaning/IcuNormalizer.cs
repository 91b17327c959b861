using System.Runtime.InteropServices;
using System.Text;

namespace MeLlama.Data.Cleaning;

/// <summary>
/// Unicode NFC/NFKC through the system ICU library. MeLlama builds with InvariantGlobalization (no ICU inside
/// .NET), where string.Normalize leaves non-ASCII text unchanged; calling ICU's unorm2 API directly gives real
/// normalisation that is identical on every machine with the same ICU major version (recorded in manifests).
/// ICU's normalizer instances are immutable and thread-safe.
/// </summary>
public sealed unsafe class IcuNormalizer
{
    delegate* unmanaged<int*, nint> _getNfc, _getNfkc;
    readonly delegate* unmanaged<nint, char*, int, char*, int, int*, int> _normalize;
    readonly delegate* unmanaged<nint, char*, int, int*, int> _spanQuickCheckYes;
    readonly nint _instance;

    public string Form { get; }
    public string IcuVersion { get; }

    static readonly Lazy<(nint Lib, string Suffix, string Version)?> Library = new(LoadIcu);

    IcuNormalizer(NormalizationForm form)
    {
        var lib = Library.Value ?? throw new PlatformNotSupportedException(
            "Unicode normalisation needs the ICU library (Debian/Ubuntu: apt-get install libicu72 or newer); set \"normalization\": \"none\" to prepare without it");
        _getNfc = (delegate* unmanaged<int*, nint>)Export(lib, "unorm2_getNFCInstance");
        _getNfkc = (delegate* unmanaged<int*, nint>)Export(lib, "unorm2_getNFKCInstance");
        _normalize = (delegate* unmanaged<nint, char*, int, char*, int, int*, int>)Export(lib, "unorm2_normalize");
        _spanQuickCheckYes = (delegate* unmanaged<nint, char*, int, int*, int>)Export(lib, "unorm2_spanQuickCheckYes");
        int err = 0;
        _instance = form == NormalizationForm.FormKC ? _getNfkc(&err) : _getNfc(&err);
        if (err > 0 || _instance == 0) throw new InvalidOperationException($"ICU could not create the {form} normalizer (error {err})");
        Form = form == NormalizationForm.FormKC ? "NFKC" : "NFC";
        IcuVersion = lib.Version;
    }

    static nint Export((nint Lib, string Suffix, string Version) lib, string name) =>
        NativeLibrary.GetExport(lib.Lib, name + lib.Suffix);

    public static IcuNormalizer Create(NormalizationForm form)
    {
        if (form is not (NormalizationForm.FormC or NormalizationForm.FormKC))
            throw new ArgumentException("only NFC and NFKC are supported", nameof(form));
        return new IcuNormalizer(form);
    }

    public static bool IsAvailable => Library.Value != null;

    public string Normalize(string text)
    {
        if (System.Text.Ascii.IsValid(text)) return text; // ASCII is already in every normal form
        fixed (char* src = text)
        {
            int err = 0;
            int ok = _spanQuickCheckYes(_instance, src, text.Length, &err);
            if (err <= 0 && ok == text.Length) return text;
            int capacity = text.Length + text.Length / 2 + 16;
            while (true)
            {
                var buffer = new char[capacity];
                fixed (char* dst = buffer)
                {
                    err = 0;
                    int n = _normalize(_instance, src, text.Length, dst, capacity, &err);
                    if (err == 15 /* U_BUFFER_OVERFLOW_ERROR */) { capacity = n + 16; continue; }
                    if (err > 0) throw new InvalidOperationException($"ICU normalisation failed (error {err})");
                    return new string(dst, 0, n);
                }
            }
        }
    }

    static (nint, string, string)? LoadIcu()
    {
        string[] names = OperatingSystem.IsWindows() ? ["icuuc.dll", "icu.dll"]
            : OperatingSystem.IsMacOS() ? ["libicucore.dylib"] : [];
        if (OperatingSystem.IsLinux())
        {
            var list = new List<string>();
            for (int v = 90; v >= 50; v--) list.Add($"libicuuc.so.{v}");
            list.Add("libicuuc.so");
            names = [.. list];
        }
        foreach (var name in names)
        {
            if (!NativeLibrary.TryLoad(name, out var lib)) continue;
            string version = name.StartsWith("libicuuc.so.", StringComparison.Ordinal) ? name["libicuuc.so.".Length..] : "";
            foreach (var suffix in new[] { version.Length > 0 ? "_" + version : "", "" })
                if (NativeLibrary.TryGetExport(lib, "unorm2_getNFCInstance" + suffix, out _))
                    return (lib, suffix, version.Length > 0 ? version : "unknown");
            for (int v = 90; v >= 50; v--)
                if (NativeLibrary.TryGetExport(lib, $"unorm2_getNFCInstance_{v}", out _))
                    return (lib, $"_{v}", v.ToString(System.Globalization.CultureInfo.InvariantCulture));
        }
        return null;
    }
}
