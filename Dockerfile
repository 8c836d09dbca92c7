# ImapProxy container image. Build from the repository root:
#   docker build -t imapproxy .
#
# The image listens on unprivileged ports (it runs as a non-root user without capabilities): IMAP 1143
# (STARTTLS), IMAPS 1993 (implicit TLS), admin HTTP 8080 (/healthz, /readyz, /metrics) on all addresses;
# the Helm chart's Service maps 143 and 993 to them. These defaults live in /app/imapproxy.container.json,
# selected by IMAPPROXY_CONFIG: a configuration given with `--config FILE` (the Helm chart does this) replaces
# that file as a whole, so list items never mix by index. ImapProxy__... environment variables override either.
# The certificate is expected at /etc/imapproxy/tls/tls.crt and tls.key; backends or Consul must be configured.
#
# Runs with a read-only root filesystem: nothing is written outside /tmp (mount an emptyDir there).
#
# Base images: .NET 10 publishes Ubuntu 24.04 ("noble") as its default Linux images and no Debian ones. The
# chiseled variant (aspnet:10.0-noble-chiseled) would be smaller, but it has no shell and no `sleep` for the
# chart's preStop hook (usable with the chart's shutdown.preStopAction=sleep on Kubernetes 1.30+).

FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src

# Restore from the project and central package files alone, so that a source change reuses this layer.
COPY global.json Directory.Build.props Directory.Packages.props .editorconfig ./
COPY src/ImapProxy.Protocol/ImapProxy.Protocol.csproj src/ImapProxy.Protocol/
COPY src/ImapProxy/ImapProxy.csproj src/ImapProxy/
RUN dotnet restore src/ImapProxy/ImapProxy.csproj

COPY src/ src/
# Framework-dependent, no native launcher: the runtime image starts it with `dotnet ImapProxy.dll`.
RUN dotnet publish src/ImapProxy/ImapProxy.csproj -c Release -o /app --no-restore -p:UseAppHost=false

# The container defaults (see the top of this file), as a JSON configuration file.
RUN printf '%s\n' \
    '{' \
    '  "ImapProxy": {' \
    '    "Listeners": [' \
    '      { "Name": "imap", "Address": "0.0.0.0", "Port": 1143, "Tls": "StartTls" },' \
    '      { "Name": "imaps", "Address": "0.0.0.0", "Port": 1993, "Tls": "Implicit" }' \
    '    ],' \
    '    "Tls": { "CertificateFile": "/etc/imapproxy/tls/tls.crt", "KeyFile": "/etc/imapproxy/tls/tls.key" },' \
    '    "Admin": { "Address": "0.0.0.0", "Port": 8080 }' \
    '  }' \
    '}' > /app/imapproxy.container.json

FROM mcr.microsoft.com/dotnet/aspnet:10.0 AS runtime
WORKDIR /app
# Owned by root, readable by all: the proxy cannot modify its own files.
COPY --from=build /app ./

# DOTNET_EnableDiagnostics=0: no diagnostic IPC socket or perf maps (they would be written to /tmp); set it to 1
# (with /tmp writable) to attach dotnet-counters or dotnet-trace.
# ASPNETCORE_HTTP_PORTS (8080 in the base image) is cleared: the proxy binds its own endpoints.
ENV IMAPPROXY_CONFIG=/app/imapproxy.container.json \
    DOTNET_EnableDiagnostics=0 \
    ASPNETCORE_HTTP_PORTS=

# The base image's non-root `app` user (UID 1654), by number so that runAsNonRoot can verify it.
USER $APP_UID

EXPOSE 1143 1993 8080

ENTRYPOINT ["dotnet", "ImapProxy.dll"]
