using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;

namespace ImapProxy.Testing.Certificates;

/// <summary>A certificate written as PEM files, and the same certificate (with its private key) in memory.</summary>
/// <param name="CertificatePath">The certificate, PEM ("CERTIFICATE").</param>
/// <param name="KeyPath">The private key, PEM PKCS#8 ("PRIVATE KEY"), mode 600.</param>
/// <param name="Certificate">For servers in process, or for clients to pin (by thumbprint or raw data).</param>
public sealed record TestCertificate(string CertificatePath, string KeyPath, X509Certificate2 Certificate);

/// <summary>Throwaway TLS certificates for tests and local clusters.</summary>
public static class TestCertificates
{
    private const string ServerAuthenticationOid = "1.3.6.1.5.5.7.3.1";

    /// <summary>
    /// Writes <c>cert.pem</c> and <c>key.pem</c> into <paramref name="directory"/>: a self-signed ECDSA P-256
    /// server certificate for DNS <c>localhost</c> (and <paramref name="commonName"/>) and IP 127.0.0.1,
    /// valid from a day ago for 30 days.
    /// </summary>
    public static TestCertificate CreateSelfSigned(string directory, string commonName = "localhost")
    {
        ArgumentException.ThrowIfNullOrEmpty(directory);
        ArgumentException.ThrowIfNullOrEmpty(commonName);
        System.IO.Directory.CreateDirectory(directory);

        using var key = ECDsa.Create(ECCurve.NamedCurves.nistP256);
        var subject = new X500DistinguishedNameBuilder();
        subject.AddCommonName(commonName);
        var request = new CertificateRequest(subject.Build(), key, HashAlgorithmName.SHA256);

        var names = new SubjectAlternativeNameBuilder();
        names.AddDnsName("localhost");
        if (!string.Equals(commonName, "localhost", StringComparison.OrdinalIgnoreCase))
        {
            if (IPAddress.TryParse(commonName, out var address))
            {
                names.AddIpAddress(address);
            }
            else
            {
                names.AddDnsName(commonName);
            }
        }

        names.AddIpAddress(IPAddress.Loopback);
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: false, hasPathLengthConstraint: false, pathLengthConstraint: 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature, critical: true));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid(ServerAuthenticationOid)], critical: false));
        request.CertificateExtensions.Add(new X509SubjectKeyIdentifierExtension(request.PublicKey, critical: false));

        var now = DateTimeOffset.UtcNow;
        var certificate = request.CreateSelfSigned(now.AddDays(-1), now.AddDays(30));

        var certificatePath = Path.Combine(directory, "cert.pem");
        var keyPath = Path.Combine(directory, "key.pem");
        File.WriteAllText(certificatePath, certificate.ExportCertificatePem() + "\n");
        WriteKey(keyPath, key.ExportPkcs8PrivateKeyPem() + "\n");
        return new TestCertificate(certificatePath, keyPath, certificate);
    }

    private static void WriteKey(string path, string pem)
    {
        if (OperatingSystem.IsWindows())
        {
            File.WriteAllText(path, pem);
            return;
        }

        // Created 600 from the start: the key is never readable by others, not even briefly.
        File.Delete(path);
        var options = new FileStreamOptions
        {
            Mode = FileMode.Create,
            Access = FileAccess.Write,
            UnixCreateMode = UnixFileMode.UserRead | UnixFileMode.UserWrite,
        };
        using var writer = new StreamWriter(path, options);
        writer.Write(pem);
    }
}
