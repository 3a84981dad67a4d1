{{/* vim: set filetype=mustache: */}}
{{/*
Expand the name of the chart.
*/}}
{{- define "kubetune.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Create a default fully qualified app name.
We truncate at 63 chars because some Kubernetes name fields are limited to this (by the DNS naming spec).
If the release name contains the chart name it is used as the full name.
*/}}
{{- define "kubetune.fullname" -}}
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

{{/*
The namespace of the release.
*/}}
{{- define "kubetune.namespace" -}}
{{- .Release.Namespace -}}
{{- end -}}

{{/*
Create chart name and version as used by the chart label.
*/}}
{{- define "kubetune.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Component names. The fullname is truncated so that the suffix always fits in 63 chars.
*/}}
{{- define "kubetune.operator.fullname" -}}
{{- printf "%s-operator" (include "kubetune.fullname" . | trunc 54 | trimSuffix "-") -}}
{{- end -}}

{{- define "kubetune.api.fullname" -}}
{{- printf "%s-api" (include "kubetune.fullname" . | trunc 59 | trimSuffix "-") -}}
{{- end -}}

{{- define "kubetune.trainer.fullname" -}}
{{- printf "%s-trainer" (include "kubetune.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}

{{- define "kubetune.catalog.fullname" -}}
{{- printf "%s-catalog" (include "kubetune.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}

{{/*
ServiceAccount names.
*/}}
{{- define "kubetune.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create -}}
{{- default (include "kubetune.operator.fullname" .) .Values.operator.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.operator.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kubetune.api.serviceAccountName" -}}
{{- if .Values.api.serviceAccount.create -}}
{{- default (include "kubetune.api.fullname" .) .Values.api.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.api.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "kubetune.trainer.serviceAccountName" -}}
{{- if .Values.trainer.serviceAccount.create -}}
{{- default (include "kubetune.trainer.fullname" .) .Values.trainer.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.trainer.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
Claim names of the models and data volumes.
*/}}
{{- define "kubetune.models.claimName" -}}
{{- default (printf "%s-models" (include "kubetune.fullname" . | trunc 56 | trimSuffix "-")) .Values.persistence.models.existingClaim -}}
{{- end -}}

{{- define "kubetune.data.claimName" -}}
{{- default (printf "%s-data" (include "kubetune.fullname" . | trunc 58 | trimSuffix "-")) .Values.persistence.data.existingClaim -}}
{{- end -}}

{{/*
The shared model cache claim: the existing claim, else <fullname>-model-cache when enabled,
else empty (the cache then lives on the models claim).
*/}}
{{- define "kubetune.modelCache.claimName" -}}
{{- $c := .Values.persistence.modelCache -}}
{{- if $c.existingClaim -}}
{{- $c.existingClaim -}}
{{- else if $c.enabled -}}
{{- printf "%s-model-cache" (include "kubetune.fullname" . | trunc 51 | trimSuffix "-") -}}
{{- end -}}
{{- end -}}

{{/*
Namespaces FineTuneJobs (and so trainer pods) run in, as a JSON list: the release
namespace, every watched namespace and every API tenant namespace.
*/}}
{{- define "kubetune.jobNamespaces" -}}
{{- $list := list (include "kubetune.namespace" .) -}}
{{- range .Values.operator.watchNamespaces -}}
{{- $list = append $list . -}}
{{- end -}}
{{- if .Values.api.enabled -}}
{{- range .Values.api.tenantNamespaces -}}
{{- $list = append $list . -}}
{{- end -}}
{{- end -}}
{{- $list | uniq | toJson -}}
{{- end -}}

{{/*
Namespaces the API writes FineTuneJobs to, as a JSON list.
*/}}
{{- define "kubetune.api.tenantNamespaces" -}}
{{- $list := list (include "kubetune.namespace" .) -}}
{{- range .Values.api.tenantNamespaces -}}
{{- $list = append $list . -}}
{{- end -}}
{{- $list | uniq | toJson -}}
{{- end -}}

{{/*
Labels on every resource.
*/}}
{{- define "kubetune.labels" -}}
app.kubernetes.io/name: {{ include "kubetune.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: kubetune
{{- if eq .Values.creator "helm" }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ include "kubetune.chart" . }}
{{- end }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/*
Selector labels of one component; call with (dict "ctx" $ "component" "operator").
*/}}
{{- define "kubetune.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubetune.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
Labels of one component's resources; call with (dict "ctx" $ "component" "operator").
*/}}
{{- define "kubetune.componentLabels" -}}
{{ include "kubetune.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/*
Labels the operator puts on trainer pods (see docs/DESIGN.md): used by the trainer
NetworkPolicy and by the operator's progress ingress rule.
*/}}
{{- define "kubetune.trainerPodLabels" -}}
app.kubernetes.io/managed-by: kubetune
{{- end -}}

{{/*
An image reference: repository:tag, or repository@digest when a digest is set.
Call with (dict "ctx" $ "image" .Values.operator.image).
*/}}
{{- define "kubetune.image" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .ctx.Chart.AppVersion .image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
checkov skip for CKV_K8S_43 (image digest) when the image has none.
*/}}
{{- define "kubetune.digestSkip" -}}
{{- if not .digest -}}
checkov.io/skip9: CKV_K8S_43=Images are pinned by an immutable release tag (the chart's appVersion); set image.digest to pin by digest
{{- end -}}
{{- end -}}

{{/*
The operator's progress URL, as trainers reach it.
*/}}
{{- define "kubetune.progressUrl" -}}
{{- if .Values.operator.progress.url -}}
{{- .Values.operator.progress.url -}}
{{- else -}}
{{- printf "http://%s.%s.svc:%d" (include "kubetune.operator.fullname" .) (include "kubetune.namespace" .) (int .Values.operator.progress.port) -}}
{{- end -}}
{{- end -}}

{{/*
The API server access volume of pods that talk to Kubernetes. The ServiceAccount token is
not automounted (automountServiceAccountToken: false); it is projected explicitly, with a
one-hour expiry the kubelet rotates, as Kubernetes itself does since 1.21.
*/}}
{{- define "kubetune.kubeApiAccessVolume" -}}
- name: kube-api-access
  projected:
    defaultMode: 0444
    sources:
      - serviceAccountToken:
          path: token
          expirationSeconds: 3607
      - configMap:
          name: kube-root-ca.crt
          items:
            - key: ca.crt
              path: ca.crt
      - downwardAPI:
          items:
            - path: namespace
              fieldRef:
                apiVersion: v1
                fieldPath: metadata.namespace
{{- end -}}

{{- define "kubetune.kubeApiAccessMount" -}}
- name: kube-api-access
  mountPath: /var/run/secrets/kubernetes.io/serviceaccount
  readOnly: true
{{- end -}}

{{- define "kubetune.serving.fullname" -}}
{{- printf "%s-serving" (include "kubetune.fullname" . | trunc 55 | trimSuffix "-") -}}
{{- end -}}
