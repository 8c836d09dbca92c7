namespace ImapProxy.Tests.Delivery;

/// <summary>Paths in the repository the delivery files live in (found from the test binaries upwards).</summary>
internal static class Repository
{
    private static readonly Lazy<string> s_root = new(FindRoot);

    public static string Root => s_root.Value;

    public static string Chart => Path(["helm", "imapproxy"]);

    public static string Path(params string[] parts) => System.IO.Path.Combine([Root, .. parts]);

    private static string FindRoot()
    {
        var directory = new DirectoryInfo(AppContext.BaseDirectory);
        while (directory is not null && !File.Exists(System.IO.Path.Combine(directory.FullName, "ImapProxy.sln")))
        {
            directory = directory.Parent;
        }

        return directory?.FullName ?? throw new InvalidOperationException("ImapProxy.sln not found above " + AppContext.BaseDirectory);
    }
}
