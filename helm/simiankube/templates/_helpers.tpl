{{/* The chart's name, or nameOverride. */}}
{{- define "simiankube.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The name of every object: fullnameOverride, else <release>-<name> (just <release> when it holds the name). */}}
{{- define "simiankube.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "simiankube.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "simiankube.serviceAccountName" -}}
{{- default (include "simiankube.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "simiankube.selectorLabels" -}}
app.kubernetes.io/name: {{ include "simiankube.name" . }}-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "simiankube.labels" -}}
{{ include "simiankube.selectorLabels" . }}
app.kubernetes.io/part-of: simiankube
app.kubernetes.io/component: operator
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The operator's permissions, shared by the ClusterRole and the namespaced Roles: exactly what it calls. */}}
{{- define "simiankube.rules" -}}
# Architectures: watched, read again before a repair, annotated by kopf (progress, finalizer while a
# daemon runs), status written.
- apiGroups: [simiankube.io]
  resources: [architectures]
  verbs: [get, list, watch, patch]
- apiGroups: [simiankube.io]
  resources: [architectures/status]
  verbs: [patch]
# Owner references with blockOwnerDeletion need this where OwnerReferencesPermissionEnforcement is on.
- apiGroups: [simiankube.io]
  resources: [architectures/finalizers]
  verbs: [update]
# Rendered children: server-side apply (create/patch), lists for plans and name clashes, watches
# (label-filtered) for hand edits, deletes for pruning.
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments, statefulsets]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [list, watch, create, patch, delete]
# Chaos: victims are listed and evicted (PodDisruptionBudgets respected); ReplicaSets are read to prove
# a pod is ours.
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
- apiGroups: [""]
  resources: [pods/eviction]
  verbs: [create]
- apiGroups: [apps]
  resources: [replicasets]
  verbs: [get]
{{- if .Values.verification.enabled }}
# Segmentation verification: probes are POSTs through the API server's pod proxy.
- apiGroups: [""]
  resources: [pods/proxy]
  verbs: [create]
{{- end }}
# Events for `kubectl describe arch` (core Events, created).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}
