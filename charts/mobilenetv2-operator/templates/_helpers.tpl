{{/*
Names and labels shared by every template. Selectors use only mnv2.selectorLabels, which never
includes user-supplied labels: a selector must not change when a user edits commonLabels.
*/}}

{{/* The chart name, overridable. */}}
{{- define "mnv2.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release-qualified name used for every object; 63 characters at most. */}}
{{- define "mnv2.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* name-version, as the helm.sh/chart label wants it. */}}
{{- define "mnv2.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The immutable subset of labels that selectors match on. */}}
{{- define "mnv2.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mnv2.name" . | quote }}
app.kubernetes.io/instance: {{ .Release.Name | quote }}
{{- end }}

{{/* Every label on every object: the standard app.kubernetes.io set, then the user's commonLabels. */}}
{{- define "mnv2.labels" -}}
helm.sh/chart: {{ include "mnv2.chart" . }}
{{ include "mnv2.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mnv2
{{- with .Values.commonLabels }}
{{ include "mnv2.quotedMap" . }}
{{- end }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "mnv2.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mnv2.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image reference; the tag defaults to the chart's appVersion. */}}
{{- define "mnv2.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* True ("true") when the operator watches exactly one namespace: RBAC is then a namespaced Role. */}}
{{- define "mnv2.namespaced" -}}
{{- if eq (len (include "mnv2.watchNamespaces" . | fromJsonArray)) 1 }}true{{ end }}
{{- end }}

{{/* The namespace the operator watches in single-namespace mode. */}}
{{- define "mnv2.watchNamespace" -}}
{{- first (include "mnv2.watchNamespaces" . | fromJsonArray) }}
{{- end }}

{{/* The metrics Service name: a DNS-1035 label (63 characters, starts with a letter, no dots). */}}
{{- define "mnv2.metricsServiceName" -}}
{{- $name := printf "%s-metrics" (include "mnv2.fullname" . | trunc 55 | trimSuffix "-") | replace "." "-" }}
{{- if regexMatch "^[a-z]" $name }}
{{- $name }}
{{- else }}
{{- printf "mnv2-%s" $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* watchNamespaces as a JSON list; a null value (Helm deletes the key) means all namespaces. */}}
{{- define "mnv2.watchNamespaces" -}}
{{- .Values.watchNamespaces | default list | toJson }}
{{- end }}

{{/*
A user-supplied string map (labels, annotations) as YAML lines, every key and value quoted, so
that no value can change type or meaning in YAML ("yes", "1e3", "=", "null").
*/}}
{{- define "mnv2.quotedMap" -}}
{{- $lines := list }}
{{- range $key, $value := . }}
{{- $lines = append $lines (printf "%s: %s" ($key | quote) ($value | toString | quote)) }}
{{- end }}
{{- join "\n" $lines }}
{{- end }}
