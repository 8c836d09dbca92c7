using ImapProxy;

var app = ImapProxyHost.Build(ImapProxyHost.CreateBuilder(args));
await app.RunAsync();
