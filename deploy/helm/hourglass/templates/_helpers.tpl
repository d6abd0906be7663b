{{/* Names and labels. */}}
{{- define "hourglass.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hourglass.name" -}}
{{- printf "%s-%s" (include "hourglass.fullname" .root) .component -}}
{{- end -}}

{{- define "hourglass.selector" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "hourglass.labels" -}}
{{ include "hourglass.selector" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "hourglass.image" -}}
{{- $repo := required "image.repository is required: the image built from the repository's Dockerfile" .Values.image.repository -}}
{{- printf "%s:%s" $repo (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Pod-level security shared by every Hourglass pod. */}}
{{- define "hourglass.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .Values.securityContext.runAsUser }}
runAsGroup: {{ .Values.securityContext.runAsGroup }}
fsGroup: {{ .Values.securityContext.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "hourglass.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Spot placement shared by workers and placeholders (one placeholder is room for one worker). */}}
{{- define "hourglass.placement" -}}
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions:
            - key: {{ .Values.placement.capacityTypeLabel }}
              operator: In
              values: {{ toJson .Values.placement.capacityTypes }}
{{- with .Values.placement.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.placement.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Environment every Hourglass container gets. */}}
{{- define "hourglass.env" -}}
envFrom:
  - configMapRef:
      name: {{ include "hourglass.fullname" . }}-config
env:
  - name: HOURGLASS_METRICS_ADDR
    value: "0.0.0.0:{{ .Values.metrics.port }}"
{{- end -}}

{{- define "hourglass.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "hourglass.name" . }}
  labels:
    {{- include "hourglass.labels" . | nindent 4 }}
  {{- with .roleArn }}
  annotations:
    eks.amazonaws.com/role-arn: {{ . | quote }}
  {{- end }}
automountServiceAccountToken: {{ .automount | default false }}
{{- end -}}
