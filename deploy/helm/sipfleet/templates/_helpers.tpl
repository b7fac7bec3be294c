{{- define "sipfleet.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sipfleet.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sipfleet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sipfleet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sipfleet.labels" -}}
{{ include "sipfleet.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The Secret the pods read: the chart's own, or an existing one. */}}
{{- define "sipfleet.secretName" -}}
{{- .Values.existingSecret | default (include "sipfleet.fullname" .) -}}
{{- end -}}

{{- define "sipfleet.hasSecret" -}}
{{- if or .Values.existingSecret .Values.control.token (and .Values.cluster.enabled (or .Values.cluster.storeUrl .Values.cluster.redisUrl)) -}}
true
{{- end -}}
{{- end -}}

{{/* sipfleet.toml: the user's tables, then what the chart decides. */}}
{{- define "sipfleet.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- if .Values.cluster.enabled -}}
{{- $_ := set $cfg "store" (dict "persist_dialogs" true) -}}
{{- else -}}
{{- $_ := set $cfg "store" (dict "type" "list" "path" "/var/lib/sipfleet/dispatcher.list") -}}
{{- end -}}
{{- $control := get $cfg "control" | default dict -}}
{{- $_ := set $control "run_dir" "/run/sipfleet" -}}
{{- $http := dict "enabled" true "host" (ternary "0.0.0.0" "127.0.0.1" .Values.control.exposed) "port" (int .Values.control.port) -}}
{{- $_ := set $control "http" $http -}}
{{- $_ := set $cfg "control" $control -}}
{{- toToml $cfg -}}
{{- end -}}

{{/* The graceful stop may last shutdown_timeout, after the preStop delay. */}}
{{- define "sipfleet.shutdownTimeout" -}}
{{- $proxy := get .Values.config "proxy" | default dict -}}
{{- get $proxy "shutdown_timeout" | default 600 | int -}}
{{- end -}}

{{- define "sipfleet.healthUrl" -}}
http://127.0.0.1:{{ .Values.control.port }}/RPC
{{- end -}}
