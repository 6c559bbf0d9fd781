{{- define "modeleval.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "modeleval.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "modeleval.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "modeleval.serviceAccountName" -}}
{{- default (include "modeleval.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* What the operator may do, and nothing more. */}}
{{- define "modeleval.rules" -}}
- apiGroups: [modeleval.dev]
  resources: [modelevaluations]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [modeleval.dev]
  resources: [modelevaluations/status]
  verbs: [get, patch]
- apiGroups: [modeleval.dev]
  resources: [evaluationschedules]
  verbs: [get, list, watch, patch]
- apiGroups: [modeleval.dev]
  resources: [evaluationschedules/status]
  verbs: [get, patch]
# Children name their schedule as owner with blockOwnerDeletion.
- apiGroups: [modeleval.dev]
  resources: [evaluationschedules/finalizers]
  verbs: [update]
- apiGroups: [ray.io]
  resources: [rayclusters]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, create, delete]  # get: a same-named policy is checked for our owner reference
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

{{/* The namespaces the operator watches: the listed ones, else its own (namespaced RBAC) or
every namespace (rbac.clusterWide). */}}
{{- define "modeleval.watchNamespaces" -}}
{{- if .Values.watchNamespaces -}}
{{- .Values.watchNamespaces | toJson -}}
{{- else if .Values.rbac.clusterWide -}}
[]
{{- else -}}
{{- list .Release.Namespace | toJson -}}
{{- end -}}
{{- end -}}

{{- define "modeleval.discoveryRules" -}}
- apiGroups: [""]
  resources: [namespaces]
  verbs: [list, watch]
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- end -}}

{{/* "true" when an IPv4 CIDR holds the cloud metadata address 169.254.169.254 and more, so an
ipBlock of it must except that address (an IPv6 CIDR: never computed; networkpolicy.yaml refuses
the metadata addresses themselves). */}}
{{- define "modeleval.holdsMetadataAddress" -}}
{{- $parts := splitList "/" . -}}
{{- if and (not (contains ":" .)) (eq (len $parts) 2) -}}
{{- $bits := atoi (index $parts 1) -}}
{{- $octets := splitList "." (index $parts 0) -}}
{{- $network := 0 -}}
{{- range $octets }}{{ $network = add (mul $network 256) (atoi .) }}{{ end -}}
{{- $size := 1 -}}
{{- range until (sub 32 $bits | int) }}{{ $size = mul $size 2 }}{{ end -}}
{{- $metadata := 2852039166 -}}{{/* 169.254.169.254 as a number */}}
{{- and (lt $bits 32) (eq (div $network $size) (div $metadata $size)) -}}
{{- else -}}
false
{{- end -}}
{{- end -}}
