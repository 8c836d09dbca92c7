using System.Text.Json.Serialization;

namespace ImapProxy.Directory.Consul;

/// <summary>One entry of /v1/kv (Value is base64 on the wire, null for a key without value).</summary>
public sealed class ConsulKvEntry
{
    public string Key { get; set; } = "";

    public string? Value { get; set; }

    public ulong ModifyIndex { get; set; }

    public byte[] DecodeValue() => Value is null ? [] : Convert.FromBase64String(Value);
}

/// <summary>One instance of /v1/health/service/&lt;name&gt;: node, service and the checks that decide its health.</summary>
public sealed class ConsulServiceEntry
{
    public ConsulNode Node { get; set; } = new();

    public ConsulService Service { get; set; } = new();

    public List<ConsulCheck> Checks { get; set; } = [];
}

public sealed class ConsulNode
{
    [JsonPropertyName("Node")]
    public string Name { get; set; } = "";

    public string Address { get; set; } = "";
}

public sealed class ConsulService
{
    public string ID { get; set; } = "";

    [JsonPropertyName("Service")]
    public string Name { get; set; } = "";

    public string Address { get; set; } = "";

    public int Port { get; set; }

    public List<string>? Tags { get; set; }

    public Dictionary<string, string>? Meta { get; set; }
}

public sealed class ConsulCheck
{
    public string CheckID { get; set; } = "";

    public string Status { get; set; } = "";
}

/// <summary>PUT /v1/agent/service/register body.</summary>
public sealed class ConsulServiceRegistration
{
    public string ID { get; set; } = "";

    public string Name { get; set; } = "";

    public string? Address { get; set; }

    public int Port { get; set; }

    public List<string>? Tags { get; set; }

    public Dictionary<string, string>? Meta { get; set; }

    public ConsulCheckRegistration? Check { get; set; }
}

public sealed class ConsulCheckRegistration
{
    [JsonPropertyName("HTTP")]
    public string? Http { get; set; }

    [JsonPropertyName("TCP")]
    public string? Tcp { get; set; }

    public string Interval { get; set; } = "10s";

    public string Timeout { get; set; } = "2s";

    public string? DeregisterCriticalServiceAfter { get; set; }
}

/// <summary>A Consul response with the index that a later blocking query waits beyond.</summary>
public readonly record struct ConsulResult<T>(T Value, ulong Index);

[JsonSourceGenerationOptions(DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull)]
[JsonSerializable(typeof(List<ConsulKvEntry>))]
[JsonSerializable(typeof(List<ConsulServiceEntry>))]
[JsonSerializable(typeof(ConsulServiceRegistration))]
[JsonSerializable(typeof(string))]
internal sealed partial class ConsulJsonContext : JsonSerializerContext;
