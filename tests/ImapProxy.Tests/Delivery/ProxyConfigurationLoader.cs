using System.Text.Json.Nodes;
using ImapProxy.Configuration;
using ImapProxy.Testing.Certificates;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace ImapProxy.Tests.Delivery;

/// <summary>A file path the configuration names (a key ending in "File"), e.g. ImapProxy:Tls:CertificateFile.</summary>
internal readonly record struct ReferencedFile(string Key, string Path);

internal sealed record LoadedConfiguration(ImapProxyOptions? Options, IReadOnlyList<string> Failures, IReadOnlyList<ReferencedFile> Files);

/// <summary>
/// Loads a configuration file (and environment) the way the proxy does at start-up: through
/// <see cref="ImapProxyHost.CreateBuilder"/> with <c>--config</c>, so binding, the default-listener post-configuration
/// and <see cref="ImapProxyOptionsValidator"/> are the proxy's own. The files the configuration names (certificate,
/// key, CA, token, password) live in Secret mounts in a pod; here each is created under a temporary root and the
/// path rewritten to it: certificates, keys and CA bundles as real PEM files (building the host loads the server
/// certificate), session ticket keys as a real key, secrets as placeholders.
/// </summary>
internal static class ProxyConfigurationLoader
{
    public static async Task<LoadedConfiguration> LoadAsync(string json, IReadOnlyDictionary<string, string?> environment)
    {
        var root = System.IO.Directory.CreateTempSubdirectory("imapproxy-chart-config-");
        var certificate = TestCertificates.CreateSelfSigned(Path.Combine(root.FullName, "pem"));
        try
        {
            var document = JsonNode.Parse(json)!.AsObject();
            var files = new List<ReferencedFile>();
            RewriteFiles(document, "", root.FullName, certificate, files);
            var settings = new Dictionary<string, string?>(environment.Count);
            foreach (var (key, value) in environment)
            {
                if (key.EndsWith("File", StringComparison.Ordinal) && value is not null)
                {
                    files.Add(new ReferencedFile(key, value));
                    settings[key] = Relocate(root.FullName, certificate, key, value);
                }
                else
                {
                    settings[key] = value;
                }
            }

            var path = Path.Combine(root.FullName, "imapproxy.json");
            await File.WriteAllTextAsync(path, document.ToJsonString());

            var builder = ImapProxyHost.CreateBuilder(["--config", path], configuration => configuration.AddInMemoryCollection(settings));
            try
            {
                // Reading the options validates them; the server certificate is loaded as the IMAP listeners do at
                // start (a file the configuration names wrongly fails here).
                await using var app = builder.Build();
                var options = app.Services.GetRequiredService<IOptions<ImapProxyOptions>>().Value;
                app.Services.GetRequiredService<ImapProxy.Tls.ServerCertificateProvider>().EnsureLoaded();
                return new LoadedConfiguration(options, [], files);
            }
            catch (OptionsValidationException exception)
            {
                return new LoadedConfiguration(null, exception.Failures.ToList(), files);
            }
        }
        finally
        {
            certificate.Certificate.Dispose();
            root.Delete(recursive: true);
        }
    }

    private static void RewriteFiles(JsonNode? node, string key, string root, TestCertificate certificate, List<ReferencedFile> files)
    {
        switch (node)
        {
            case JsonObject obj:
                foreach (var (name, child) in obj.ToList())
                {
                    var childKey = key.Length == 0 ? name : key + ":" + name;
                    if (name.EndsWith("File", StringComparison.Ordinal) && child is JsonValue value && value.TryGetValue<string>(out var path))
                    {
                        files.Add(new ReferencedFile(childKey, path));
                        obj[name] = Relocate(root, certificate, childKey, path);
                    }
                    else
                    {
                        RewriteFiles(child, childKey, root, certificate, files);
                    }
                }

                break;
            case JsonArray array:
                for (var i = 0; i < array.Count; i++)
                {
                    RewriteFiles(array[i], key + ":" + i, root, certificate, files);
                }

                break;
        }
    }

    private static string Relocate(string root, TestCertificate certificate, string key, string path)
    {
        var relocated = Path.Combine(root, "mounts", path.TrimStart('/'));
        System.IO.Directory.CreateDirectory(Path.GetDirectoryName(relocated)!);
        if (key.EndsWith(":KeyFile", StringComparison.Ordinal))
        {
            File.Copy(certificate.KeyPath, relocated, overwrite: true);
        }
        else if (key.EndsWith(":CertificateFile", StringComparison.Ordinal) || key.EndsWith(":CaFile", StringComparison.Ordinal))
        {
            File.Copy(certificate.CertificatePath, relocated, overwrite: true);
        }
        else if (key.EndsWith(":SessionTicketKeyFile", StringComparison.Ordinal))
        {
            File.WriteAllText(relocated, Convert.ToBase64String(System.Security.Cryptography.RandomNumberGenerator.GetBytes(80)) + "\n");
        }
        else
        {
            File.WriteAllText(relocated, "placeholder\n");
        }

        return relocated;
    }
}
