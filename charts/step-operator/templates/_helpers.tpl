{{- define "step-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "step-operator.fullname" -}}
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

{{- define "step-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "step-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "step-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "step-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "step-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "step-operator.controller.serviceAccountName" -}}
{{- if .Values.controller.serviceAccount.create -}}
{{- default (printf "%s-controller" (include "step-operator.fullname" .)) .Values.controller.serviceAccount.name -}}
{{- else -}}
{{- required "controller.serviceAccount.name is required when controller.serviceAccount.create=false (never the namespace's default ServiceAccount)" .Values.controller.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "step-operator.webhook.serviceAccountName" -}}
{{- if .Values.webhook.serviceAccount.create -}}
{{- default (printf "%s-webhook" (include "step-operator.fullname" .)) .Values.webhook.serviceAccount.name -}}
{{- else -}}
{{- required "webhook.serviceAccount.name is required when webhook.serviceAccount.create=false (never the namespace's default ServiceAccount)" .Values.webhook.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "step-operator.webhook.serviceName" -}}
{{- default (printf "%s-webhook" (include "step-operator.fullname" .)) .Values.webhook.service.name -}}
{{- end -}}

{{- define "step-operator.webhook.configurationName" -}}
{{- default (include "step-operator.fullname" .) .Values.webhook.configurationName -}}
{{- end -}}

{{- define "step-operator.clusterResourceNamespace" -}}
{{- default .Release.Namespace .Values.clusterResourceNamespace -}}
{{- end -}}

{{- define "step-operator.webhook.defaultIssuer" -}}
{{- required "webhook.defaultIssuer (or stepClusterIssuer.name) is required when the webhook is enabled: the StepClusterIssuer that signs the webhook's serving certificate" (default .Values.stepClusterIssuer.name .Values.webhook.defaultIssuer) -}}
{{- end -}}

{{- define "step-operator.passwordSecretName" -}}
{{- default (printf "%s-provisioner-password" (include "step-operator.fullname" .)) .Values.stepClusterIssuer.provisioner.passwordRef.name -}}
{{- end -}}

{{- define "step-operator.passwordSecretNamespace" -}}
{{- default (include "step-operator.clusterResourceNamespace" .) .Values.stepClusterIssuer.provisioner.passwordRef.namespace -}}
{{- end -}}

{{/* Restricted Pod Security: pod level. */}}
{{- define "step-operator.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Restricted Pod Security: container level. */}}
{{- define "step-operator.containerSecurityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
