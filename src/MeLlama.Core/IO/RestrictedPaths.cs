namespace MeLlama.Core.IO;

/// <summary>
/// File modes for outputs derived from restricted (e.g. clinical, PhysioNet-credentialed) sources:
/// owner-only, so that a shared cluster file system never exposes them to other users.
/// </summary>
public static class RestrictedPaths
{
    public const UnixFileMode OwnerFile = UnixFileMode.UserRead | UnixFileMode.UserWrite;
    public const UnixFileMode OwnerDirectory = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;

    public static DirectoryInfo CreateDirectory(string path, bool restricted)
    {
        if (!restricted || OperatingSystem.IsWindows()) return Directory.CreateDirectory(path);
        var info = Directory.CreateDirectory(path, OwnerDirectory);
        File.SetUnixFileMode(path, OwnerDirectory); // existing folders too
        return info;
    }

    public static UnixFileMode? FileMode(bool restricted) => restricted ? OwnerFile : null;
}
