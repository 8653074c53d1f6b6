{{- define "pinster-images.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "pinster-images.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "pinster-images.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: {{ include "pinster-images.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: pinster-images
{{- end -}}

{{/* selectorLabels takes (dict "ctx" $ "component" "operator") */}}
{{- define "pinster-images.selectorLabels" -}}
app.kubernetes.io/name: {{ include "pinster-images.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "pinster-images.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- with .Values.image.digest }}{{ printf "@%s" . }}{{ end -}}
{{- end -}}

{{- define "pinster-images.configName" -}}
{{- printf "%s-config" (include "pinster-images.fullname" .) -}}
{{- end -}}

{{/* serviceAccountName takes (dict "ctx" $ "component" "operator") */}}
{{- define "pinster-images.serviceAccountName" -}}
{{- printf "%s-%s" (include "pinster-images.fullname" .ctx) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Environment every role shares: settings, secrets and the pod's identity. */}}
{{- define "pinster-images.commonEnv" -}}
- name: PINSTER_NAMESPACE
  valueFrom: {fieldRef: {fieldPath: metadata.namespace}}
{{- with .Values.auth.apiPublicKey.secretName }}
- name: PINSTER_API_PUBLIC_KEY
  valueFrom: {secretKeyRef: {name: {{ . }}, key: {{ $.Values.auth.apiPublicKey.key }}}}
{{- end }}
{{- with .Values.storage.s3.credentialsSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom: {secretKeyRef: {name: {{ . }}, key: AWS_ACCESS_KEY_ID}}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom: {secretKeyRef: {name: {{ . }}, key: AWS_SECRET_ACCESS_KEY}}
{{- end }}
{{- end -}}

{{/* The root file system is read-only: /tmp is the one writable place. */}}
{{- define "pinster-images.tmpVolume" -}}
- name: tmp
  emptyDir: {}
{{- end -}}

{{- define "pinster-images.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}

{{- /* The Secret with the object store's events token: the user's, or the chart's own. */}}
{{- define "pinster-images.eventsTokenSecret" -}}
{{- .Values.directUploads.eventsToken.secretName | default (printf "%s-storage-events" (include "pinster-images.fullname" .)) -}}
{{- end }}
