{{- define "llmorch.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "llmorch.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: llmorch
{{- end -}}

{{/* selector labels: (dict "ctx" $ "component" "api") */}}
{{- define "llmorch.selectorLabels" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* image reference: (dict "ctx" $ "repository" "llmorch/model" "suffix" "") */}}
{{- define "llmorch.image" -}}
{{- $v := .ctx.Values.image -}}
{{- $tag := default .ctx.Chart.AppVersion $v.tag -}}
{{- if $v.registry -}}
{{- printf "%s/%s:%s%s" $v.registry .repository $tag (default "" .suffix) -}}
{{- else -}}
{{- printf "%s:%s%s" .repository $tag (default "" .suffix) -}}
{{- end -}}
{{- end -}}

{{- define "llmorch.apiName" -}}{{ include "llmorch.fullname" . }}-api{{- end -}}
{{- define "llmorch.apiAddress" -}}{{ include "llmorch.apiName" . }}:{{ .Values.ports.orchestrator }}{{- end -}}
{{/* RegistryService: the API's internal listener, which NetworkPolicies and the registration token guard */}}
{{- define "llmorch.registryAddress" -}}{{ include "llmorch.apiName" . }}:{{ .Values.ports.orchestratorInternal }}{{- end -}}

{{/* The Secret with the control plane's credentials: yours (credentials.existingSecret) or the chart's own */}}
{{- define "llmorch.credentialsSecret" -}}
{{- default (printf "%s-credentials" (include "llmorch.fullname" .)) .Values.credentials.existingSecret -}}
{{- end -}}

{{/* Every process of the control plane presents the registration token, and every process that reads workflow
     payloads holds the payload keys (ADR 0015) */}}
{{- define "llmorch.credentialsEnv" -}}
- name: LLMORCH_REGISTRATION_TOKEN
  valueFrom:
    secretKeyRef: { name: {{ include "llmorch.credentialsSecret" . | quote }}, key: registration-token }
- name: LLMORCH_PAYLOAD_KEYS
  valueFrom:
    secretKeyRef: { name: {{ include "llmorch.credentialsSecret" . | quote }}, key: payload-keys }
{{- end -}}

{{/* name of one model's objects: (dict "ctx" $ "id" "gemma3-270m") */}}
{{- define "llmorch.modelName" -}}
{{- printf "%s-model-%s" (include "llmorch.fullname" .ctx) .id | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* native gRPC probes on one port (grpc.health.v1, overall service ""): (dict "port" 50051 "startupFailures" 30) */}}
{{/* gRPC probes; "readiness"/"liveness" name grpc.health.v1 services (the API's follow Temporal / only the process) */}}
{{- define "llmorch.grpcProbes" -}}
startupProbe:
  grpc: { port: {{ .port }}{{ with .liveness }}, service: {{ . }}{{ end }} }
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: {{ .startupFailures }}
readinessProbe:
  grpc: { port: {{ .port }}{{ with .readiness }}, service: {{ . }}{{ end }} }
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 2
livenessProbe:
  grpc: { port: {{ .port }}{{ with .liveness }}, service: {{ . }}{{ end }} }
  periodSeconds: 10
  timeoutSeconds: 3
  failureThreshold: 6
{{- end -}}

{{/* pod annotations for Prometheus without the operator; "{}" when off: (dict "ctx" $ "port" 9100 "path" "/metrics") */}}
{{- define "llmorch.podAnnotations" -}}
{{- if .ctx.Values.metrics.podAnnotations -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .port | quote }}
prometheus.io/path: {{ default "/metrics" .path | quote }}
{{- else -}}
{}
{{- end -}}
{{- end -}}

{{- define "llmorch.env" -}}
{{- range $k, $v := . }}
- name: {{ $k }}
  value: {{ $v | toString | quote }}
{{- end }}
{{- end -}}


{{/* ORCH_DATABASE_URL from the Secret, when one is named, with vectors and ingestion staging in the same
     database (ADR 0011: no pod owns them, no ReadWriteMany volume); otherwise SQLite and LanceDB in data/. */}}
{{- define "llmorch.databaseEnv" -}}
{{- with .Values.database.existingSecret }}
- name: ORCH_DATABASE_URL
  valueFrom:
    secretKeyRef: { name: {{ . | quote }}, key: {{ $.Values.database.secretKey | quote }} }
- { name: ORCH_VECTOR_STORE, value: postgres }
{{- end }}
{{- end -}}

{{/* NetworkPolicy peers: this release's pods of the given components: (dict "ctx" $ "components" (list "api")) */}}
{{- define "llmorch.peers" -}}
- podSelector:
    matchLabels:
      app.kubernetes.io/name: {{ .ctx.Chart.Name }}
      app.kubernetes.io/instance: {{ .ctx.Release.Name }}
    matchExpressions:
      - { key: app.kubernetes.io/component, operator: In, values: {{ toJson .components }} }
{{- end -}}

{{/* A metrics port's ingress rule: from networkPolicy.metricsFrom, or from anyone when it is empty */}}
{{- define "llmorch.metricsIngress" -}}
- ports: [{ port: {{ .port }}, protocol: TCP }]
  {{- with .ctx.Values.networkPolicy.metricsFrom }}
  from: {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
