{{/*
Names
*/}}
{{- define "iiif-stack.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: the release name, plus the chart name unless the release already
contains it. Truncated to leave room for the component suffixes (63 - 8).
*/}}
{{- define "iiif-stack.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 55 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 55 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "iiif-stack.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "iiif-stack.gateway.fullname" -}}
{{- printf "%s-gateway" (include "iiif-stack.fullname" .) }}
{{- end }}

{{- define "iiif-stack.decoder.fullname" -}}
{{- printf "%s-decoder" (include "iiif-stack.fullname" .) }}
{{- end }}

{{/*
The decoders' headless Service: its DNS name lists every ready decoder pod.
*/}}
{{- define "iiif-stack.decoder.headlessServiceName" -}}
{{- printf "%s-decoder-headless" (include "iiif-stack.fullname" . | trunc 46 | trimSuffix "-") }}
{{- end }}

{{/*
The gateway's gRPC target: dns:/// over the headless Service, so the
gateway's client-side round_robin sees every decoder address.
*/}}
{{- define "iiif-stack.decoder.target" -}}
{{- printf "dns:///%s.%s.svc.%s:%d" (include "iiif-stack.decoder.headlessServiceName" .) .Release.Namespace .Values.clusterDomain (int .Values.decoder.grpcPort) }}
{{- end }}

{{/*
Labels
*/}}
{{- define "iiif-stack.labels" -}}
helm.sh/chart: {{ include "iiif-stack.chart" . }}
{{ include "iiif-stack.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "iiif-stack.name" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "iiif-stack.selectorLabels" -}}
app.kubernetes.io/name: {{ include "iiif-stack.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Component labels: (dict "ctx" $ "component" "gateway")
*/}}
{{- define "iiif-stack.componentLabels" -}}
{{ include "iiif-stack.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "iiif-stack.componentSelectorLabels" -}}
{{ include "iiif-stack.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
ServiceAccounts
*/}}
{{- define "iiif-stack.decoder.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "iiif-stack.decoder.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "iiif-stack.gateway.serviceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create }}
{{- default (include "iiif-stack.gateway.fullname" .) .Values.gateway.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.gateway.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Image reference: (dict "image" .Values.gateway.image "ctx" $)
*/}}
{{- define "iiif-stack.image" -}}
{{- $repo := .image.repository }}
{{- if .image.registry }}
{{- $repo = printf "%s/%s" .image.registry .image.repository }}
{{- end }}
{{- if .image.digest }}
{{- printf "%s@%s" $repo .image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .ctx.Chart.AppVersion .image.tag | toString) }}
{{- end }}
{{- end }}

{{/*
A setting as an environment value. Helm reads numbers as float64, which
would print 25000000 as 2.5e+07: whole numbers are printed as integers.
*/}}
{{- define "iiif-stack.envValue" -}}
{{- if and (kindIs "float64" .) (eq (float64 (int64 .)) .) }}
{{- int64 . }}
{{- else }}
{{- . }}
{{- end }}
{{- end }}

{{/*
Renders config entries as ConfigMap data: (dict "prefix" "IIIF_GATEWAY_" "config" $cfg)
null values are left out (the application default applies).
*/}}
{{- define "iiif-stack.configData" -}}
{{- $prefix := .prefix }}
{{- range $key, $value := .config }}
{{- if not (kindIs "invalid" $value) }}
{{ printf "%s%s" $prefix (upper $key) }}: {{ include "iiif-stack.envValue" $value | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Graceful termination: preStop sleep + drain + a margin, unless set.
*/}}
{{- define "iiif-stack.gateway.terminationGracePeriodSeconds" -}}
{{- if not (kindIs "invalid" .Values.gateway.terminationGracePeriodSeconds) }}
{{- int .Values.gateway.terminationGracePeriodSeconds }}
{{- else }}
{{- $drain := .Values.gateway.config.request_timeout_s | default 30 | ceil | int }}
{{- add (int .Values.gateway.preStopSleepSeconds) $drain 5 }}
{{- end }}
{{- end }}

{{- define "iiif-stack.decoder.terminationGracePeriodSeconds" -}}
{{- if not (kindIs "invalid" .Values.decoder.terminationGracePeriodSeconds) }}
{{- int .Values.decoder.terminationGracePeriodSeconds }}
{{- else }}
{{- $drain := .Values.decoder.config.grace_period_s | default 10 | ceil | int }}
{{- add (int .Values.decoder.preStopSleepSeconds) $drain 5 }}
{{- end }}
{{- end }}

{{/*
The S3 credentials Secret, if any.
*/}}
{{- define "iiif-stack.decoder.s3SecretName" -}}
{{- if .Values.decoder.s3Credentials.existingSecret }}
{{- .Values.decoder.s3Credentials.existingSecret }}
{{- else if .Values.decoder.s3Credentials.create }}
{{- printf "%s-s3" (include "iiif-stack.decoder.fullname" .) }}
{{- end }}
{{- end }}

{{/*
Topology spread constraints with a default labelSelector (and
matchLabelKeys so a rollout's new ReplicaSet is spread on its own):
(dict "constraints" $list "ctx" $ "component" "gateway")
*/}}
{{- define "iiif-stack.topologySpreadConstraints" -}}
{{- $selector := include "iiif-stack.componentSelectorLabels" (dict "ctx" .ctx "component" .component) | fromYaml }}
{{- range .constraints }}
{{- $c := deepCopy . }}
{{- if not (hasKey $c "labelSelector") }}
{{- $_ := set $c "labelSelector" (dict "matchLabels" $selector) }}
{{- end }}
{{- if not (hasKey $c "matchLabelKeys") }}
{{- $_ := set $c "matchLabelKeys" (list "pod-template-hash") }}
{{- end }}
- {{ toYaml $c | nindent 2 | trim }}
{{- end }}
{{- end }}
