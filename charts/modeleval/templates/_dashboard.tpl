{{/* The dashboard (`modeleval ui`): its own name and labels, apart from the operator's, so no
selector of the operator's (its Deployment, metrics Service, NetworkPolicy, the Ray heads'
policies admitting the operator to their Jobs API) ever picks a dashboard pod. */}}
{{- define "modeleval.dashboard.fullname" -}}
{{- printf "%s-dashboard" (include "modeleval.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "modeleval.dashboard.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}-dashboard
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "modeleval.dashboard.labels" -}}
{{ include "modeleval.dashboard.selectorLabels" . }}
app.kubernetes.io/component: dashboard
app.kubernetes.io/part-of: {{ .Chart.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* What the values must say together, which the schema cannot: each refusal names the value
to set. */}}
{{- define "modeleval.dashboard.validate" -}}
{{- $d := .Values.dashboard -}}
{{- if not $d.mongodb.existingSecret -}}
{{- fail (printf "dashboard.mongodb.existingSecret: name the Secret in namespace %s that holds the results store's URI (a read-only user's) under key dashboard.mongodb.secretKey" .Release.Namespace) -}}
{{- end -}}
{{- if eq $d.auth.mode "token" -}}
{{- if not $d.auth.tokenSecret -}}
{{- fail (printf "dashboard.auth.tokenSecret: name the Secret in namespace %s holding the dashboard's token under key dashboard.auth.tokenKey (or set dashboard.auth.mode=proxy with an auth proxy in front)" .Release.Namespace) -}}
{{- end -}}
{{- else -}}
{{- if $d.auth.tokenSecret -}}
{{- fail "dashboard.auth.tokenSecret is set but dashboard.auth.mode is proxy, which serves without a token: leave tokenSecret empty or use mode token" -}}
{{- end -}}
{{- if not .Values.networkPolicy.enabled -}}
{{- fail "dashboard.auth.mode=proxy serves without a token, so only the auth proxy may reach it: it needs networkPolicy.enabled=true and the proxy's pods in dashboard.allowedFrom" -}}
{{- end -}}
{{- if not $d.allowedFrom -}}
{{- fail "dashboard.auth.mode=proxy: list the auth proxy's pods in dashboard.allowedFrom (the only pods the dashboard's NetworkPolicy admits)" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The namespaces whose evaluations' live phase the dashboard may read: the operator's. */}}
{{- define "modeleval.dashboard.liveNamespaces" -}}
{{- include "modeleval.watchNamespaces" . -}}
{{- end -}}

{{/* Read-only: the dashboard shows each evaluation's live phase and never changes anything. */}}
{{- define "modeleval.dashboard.rules" -}}
- apiGroups: [modeleval.dev]
  resources: [modelevaluations, evaluationschedules]
  verbs: [get, list, watch]
{{- end -}}

{{/* Egress rules to endpoints the platform listed (networkPolicy.egress.*), as ipBlocks with
their ports (a listed range holding the cloud metadata address still excepts it: the dashboard
never needs it); the caller handles the empty list. */}}
{{- define "modeleval.dashboard.listedEgress" -}}
{{- range . }}
- to:
    - ipBlock:
        cidr: {{ .cidr | quote }}
        {{- if eq (include "modeleval.holdsMetadataAddress" .cidr) "true" }}
        except: [169.254.169.254/32]
        {{- end }}
  {{- with .ports }}
  ports:
    {{- range . }}
    - {protocol: TCP, port: {{ . }}}
    - {protocol: UDP, port: {{ . }}}
    {{- end }}
  {{- end }}
{{- end }}
{{- end -}}
