{{/* Names, labels and the rendered proxy configuration. */}}

{{- define "imapproxy.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "imapproxy.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "imapproxy.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "imapproxy.selectorLabels" -}}
app.kubernetes.io/name: {{ include "imapproxy.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "imapproxy.labels" -}}
helm.sh/chart: {{ include "imapproxy.chart" . }}
{{ include "imapproxy.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "imapproxy.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "imapproxy.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "imapproxy.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Fixed paths inside the container; the image and the tests rely on them. */}}
{{- define "imapproxy.configDir" -}}/etc/imapproxy/config{{- end -}}
{{- define "imapproxy.configFile" -}}imapproxy.json{{- end -}}
{{- define "imapproxy.tlsDir" -}}/etc/imapproxy/tls{{- end -}}
{{- define "imapproxy.ticketKeysDir" -}}/etc/imapproxy/ticket-keys{{- end -}}

{{/* "true" when any listener terminates TLS (then the certificate Secret is mounted). */}}
{{- define "imapproxy.usesTls" -}}
{{- range .Values.listeners -}}
{{- if ne .tls "None" -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{- define "imapproxy.tlsSecretName" -}}
{{- if .Values.tls.certManager.enabled -}}
{{- default (printf "%s-tls" (include "imapproxy.fullname" .)) .Values.tls.certManager.secretName -}}
{{- else -}}
{{- default (printf "%s-tls" (include "imapproxy.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* The Secret and key holding the Consul ACL token, as "name/key"; empty without one. */}}
{{- define "imapproxy.consulTokenSecret" -}}
{{- if not .Values.consul.enabled -}}
{{- else if .Values.consul.existingSecret -}}
{{- printf "%s/%s" .Values.consul.existingSecret .Values.consul.existingSecretKey -}}
{{- else if .Values.consul.token -}}
{{- printf "%s-consul/token" (include "imapproxy.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/*
Whole seconds (rounded up) of a .NET duration "[d.]hh:mm:ss[.fffffff]".
*/}}
{{- define "imapproxy.durationSeconds" -}}
{{- $parts := splitList ":" . -}}
{{- if ne (len $parts) 3 -}}
{{- fail (printf "duration %q must be hh:mm:ss" .) -}}
{{- end -}}
{{- $hours := index $parts 0 -}}
{{- $days := 0 -}}
{{- if contains "." $hours -}}
{{- $days = atoi (index (splitList "." $hours) 0) -}}
{{- $hours = index (splitList "." $hours) 1 -}}
{{- end -}}
{{- $seconds := splitList "." (index $parts 2) -}}
{{- $total := add (mul $days 86400) (mul (atoi $hours) 3600) (mul (atoi (index $parts 1)) 60) (atoi (index $seconds 0)) -}}
{{- if gt (len $seconds) 1 -}}
{{- if gt (atoi (index $seconds 1)) 0 -}}
{{- $total = add1 $total -}}
{{- end -}}
{{- end -}}
{{- $total -}}
{{- end -}}

{{- define "imapproxy.terminationGracePeriodSeconds" -}}
{{- $grace := include "imapproxy.durationSeconds" .Values.session.shutdownGrace | atoi -}}
{{- add .Values.shutdown.preStopSleepSeconds $grace .Values.shutdown.extraGraceSeconds -}}
{{- end -}}

{{/* "true" when a value carries nothing: null, "", [] or {} (false and 0 are values). */}}
{{- define "imapproxy.isEmpty" -}}
{{- /* Nested, not `and`: Go templates before 1.18 evaluate every argument of `and`. */ -}}
{{- if kindIs "invalid" . -}}true
{{- else if kindIs "string" . -}}{{- if eq . "" -}}true{{- end -}}
{{- else if or (kindIs "slice" .) (kindIs "map" .) -}}{{- if eq (len .) 0 -}}true{{- end -}}
{{- end -}}
{{- end -}}

{{/*
A values subtree as proxy configuration, returned as JSON {"v": ...}: map keys camelCase -> PascalCase
(maxLineLength -> MaxLineLength), empty values dropped so the proxy's default applies.
*/}}
{{- define "imapproxy.pascal" -}}
{{- if kindIs "map" . -}}
{{- $out := dict -}}
{{- range $key, $value := . -}}
{{- if not (include "imapproxy.isEmpty" $value) -}}
{{- $_ := set $out (printf "%s%s" (upper (substr 0 1 $key)) (substr 1 -1 $key)) (include "imapproxy.pascal" $value | fromJson).v -}}
{{- end -}}
{{- end -}}
{{- dict "v" $out | toJson -}}
{{- else if kindIs "slice" . -}}
{{- $out := list -}}
{{- range . -}}
{{- $out = append $out (include "imapproxy.pascal" . | fromJson).v -}}
{{- end -}}
{{- dict "v" $out | toJson -}}
{{- else -}}
{{- dict "v" . | toJson -}}
{{- end -}}
{{- end -}}

{{/*
The proxy's configuration file (JSON for --config). Only keys the proxy documents (README.md, Configuration)
are rendered.
*/}}
{{- define "imapproxy.config" -}}
{{- $values := .Values -}}
{{- $listeners := list -}}
{{- range $values.listeners -}}
{{- $listener := dict "Name" .name "Address" (default "0.0.0.0" .address) "Port" .containerPort "Tls" .tls -}}
{{- if $values.proxyProtocol.enabled -}}
{{- $_ := set $listener "ProxyProtocol" true -}}
{{- $_ := set $listener "ProxyProtocolTrustedNetworks" $values.proxyProtocol.trustedNetworks -}}
{{- end -}}
{{- $listeners = append $listeners $listener -}}
{{- end -}}
{{- $tls := dict "HandshakeTimeout" $values.tls.handshakeTimeout "ReloadCheckInterval" $values.tls.reloadCheckInterval "SessionTicketKeyRotation" $values.tls.sessionTicketKeyRotation -}}
{{- if include "imapproxy.usesTls" . -}}
{{- $_ := set $tls "CertificateFile" (printf "%s/tls.crt" (include "imapproxy.tlsDir" .)) -}}
{{- $_ := set $tls "KeyFile" (printf "%s/tls.key" (include "imapproxy.tlsDir" .)) -}}
{{- if $values.tls.sessionTicketKeysSecret -}}
{{- $_ := set $tls "SessionTicketKeyFile" (printf "%s/ticket-keys" (include "imapproxy.ticketKeysDir" .)) -}}
{{- end -}}
{{- end -}}
{{- $proxy := dict "Listeners" $listeners "Tls" $tls -}}
{{- $_ := set $proxy "Admin" (dict "Enabled" true "Address" "0.0.0.0" "Port" $values.admin.port) -}}
{{- $_ := set $proxy "PreAuth" (include "imapproxy.pascal" $values.preAuth | fromJson).v -}}
{{- $backends := (include "imapproxy.pascal" (omit $values.backends "static") | fromJson).v -}}
{{- if not $values.consul.enabled -}}
{{- $_ := set $backends "Static" (include "imapproxy.pascal" $values.backends.static | fromJson).v -}}
{{- end -}}
{{- $_ := set $proxy "Backends" $backends -}}
{{- $_ := set $proxy "Directory" (include "imapproxy.pascal" $values.directory | fromJson).v -}}
{{- if $values.consul.enabled -}}
{{- /* The token itself never enters the ConfigMap: it comes from a Secret through the environment. */ -}}
{{- $_ := set $proxy "Consul" (include "imapproxy.pascal" (omit $values.consul "token" "existingSecret" "existingSecretKey") | fromJson).v -}}
{{- end -}}
{{- $_ := set $proxy "Telemetry" (include "imapproxy.pascal" $values.telemetry | fromJson).v -}}
{{- $_ := set $proxy "Session" (include "imapproxy.pascal" $values.session | fromJson).v -}}
{{- $root := dict "ImapProxy" $proxy -}}
{{- if $values.logging.logLevel -}}
{{- $_ := set $root "Logging" (dict "LogLevel" $values.logging.logLevel) -}}
{{- end -}}
{{- toPrettyJson $root -}}
{{- end -}}

{{/* One NetworkPolicy egress rule: TCP ports, to CIDRs (anywhere when none). */}}
{{- define "imapproxy.egressRule" -}}
# {{ .comment }}
- ports:
    {{- range .rule.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- with .rule.cidrs }}
  to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  {{- end }}
{{- end -}}

{{/* Problems the schema cannot express; rendering stops with the message. */}}
{{- define "imapproxy.validate" -}}
{{- if and .Values.tls.certManager.enabled .Values.tls.existingSecret -}}
{{- fail "tls: set either tls.existingSecret or tls.certManager.enabled, not both" -}}
{{- end -}}
{{- if and .Values.tls.certManager.enabled (not (include "imapproxy.usesTls" .)) -}}
{{- fail "tls.certManager.enabled: no listener uses TLS" -}}
{{- end -}}
{{- if and (not .Values.consul.enabled) (not .Values.backends.static) -}}
{{- fail "backends.static must list at least one backend unless consul.enabled" -}}
{{- end -}}
{{- $tokens := 0 -}}
{{- range (list .Values.consul.token .Values.consul.existingSecret .Values.consul.tokenFile) -}}
{{- if . -}}{{- $tokens = add1 $tokens -}}{{- end -}}
{{- end -}}
{{- if gt $tokens 1 -}}
{{- fail "consul: set at most one of consul.token, consul.existingSecret and consul.tokenFile" -}}
{{- end -}}
{{- if and .Values.autoscaling.enabled (not (or .Values.autoscaling.targetCPUUtilizationPercentage .Values.autoscaling.targetMemoryUtilizationPercentage)) -}}
{{- fail "autoscaling.enabled needs targetCPUUtilizationPercentage or targetMemoryUtilizationPercentage" -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.telemetry.prometheusEnabled) -}}
{{- fail "metrics.serviceMonitor.enabled needs telemetry.prometheusEnabled" -}}
{{- end -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.admin.service.enabled) -}}
{{- fail "metrics.serviceMonitor.enabled needs admin.service.enabled (it scrapes that Service)" -}}
{{- end -}}
{{- $names := dict -}}
{{- $ports := dict (toString .Values.admin.port) "admin" -}}
{{- range .Values.listeners -}}
{{- if hasKey $names .name -}}
{{- fail (printf "listeners: the name %q is used twice" .name) -}}
{{- end -}}
{{- if eq .name "admin" -}}
{{- fail "listeners: the name \"admin\" is taken by the admin port" -}}
{{- end -}}
{{- $_ := set $names .name true -}}
{{- if hasKey $ports (toString .containerPort) -}}
{{- fail (printf "listeners: containerPort %v of %q is already used by %q" .containerPort .name (get $ports (toString .containerPort))) -}}
{{- end -}}
{{- $_ := set $ports (toString .containerPort) .name -}}
{{- end -}}
{{- end -}}
