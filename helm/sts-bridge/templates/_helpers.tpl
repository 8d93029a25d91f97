{{/*
Chart name, truncated to the 63 characters a DNS label allows.
*/}}
{{- define "sts-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name. A release whose name already contains the chart name is
used as is.
*/}}
{{- define "sts-bridge.fullname" -}}
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

{{- define "sts-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "sts-bridge.labels" -}}
helm.sh/chart: {{ include "sts-bridge.chart" . }}
{{ include "sts-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sts-bridge
{{- end }}

{{- define "sts-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sts-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "sts-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "sts-bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "sts-bridge.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion | toString) }}
{{- end }}

{{/*
The configuration file, a TOML document given as a string. (A map is refused: Helm
turns YAML integers into floats, and `toToml` would then write `leeway_secs = 30.0`,
which the service rejects.)
*/}}
{{- define "sts-bridge.configToml" -}}
{{- $config := required "config: the sts-bridge configuration (a TOML string) is required" .Values.config }}
{{- if not (kindIs "string" $config) }}
{{- fail "config must be a TOML document given as a string (config: |), not a map" }}
{{- end }}
{{- $config }}
{{- end }}

{{/*
"true" when the records go to a database every replica shares: a DATABASE_URL from
database.existingSecret or extraEnv, or audit.database_url in the configuration.
Otherwise each pod keeps its own SQLite file, and several replicas would each hold part
of the records and their own revocations.
*/}}
{{- define "sts-bridge.sharedDatabase" -}}
{{- $env := list }}
{{- range .Values.extraEnv }}{{- $env = append $env .name }}{{- end }}
{{- if or .Values.database.existingSecret (has "DATABASE_URL" $env) (has "STS_BRIDGE__AUDIT__DATABASE_URL" $env) (regexMatch "(?m)^\\s*database_url\\s*=" (toString .Values.config)) -}}
true
{{- end }}
{{- end }}
