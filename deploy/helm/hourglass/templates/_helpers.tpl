{{/* Names and labels: nameOverride replaces the chart's name, fullnameOverride the release-chart prefix. */}}
{{- define "hourglass.chartName" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{- define "hourglass.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "hourglass.chartName" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "hourglass.name" -}}
{{- printf "%s-%s" (include "hourglass.fullname" .root) .component -}}
{{- end -}}

{{- define "hourglass.selector" -}}
app.kubernetes.io/name: {{ include "hourglass.chartName" .root }}
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

{{/* The values block of a component (worker, scaler, nightly, watcher, placeholders). */}}
{{- define "hourglass.values" -}}
{{- $key := .component -}}
{{- if eq $key "capacity" }}{{ $key = "placeholders" }}{{ end -}}
{{- toYaml (index .root.Values $key) -}}
{{- end -}}

{{/* Spot placement shared by workers and placeholders (one placeholder is
room for one worker): the spot affinity unless the component sets its own,
the node group's nodeSelector and tolerations plus the component's. */}}
{{- define "hourglass.placement" -}}
{{- $v := include "hourglass.values" . | fromYaml -}}
{{- $p := .root.Values.placement -}}
affinity:
{{- if $v.affinity }}
  {{- toYaml $v.affinity | nindent 2 }}
{{- else }}
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions:
            - key: {{ $p.capacityTypeLabel }}
              operator: In
              values: {{ toJson $p.capacityTypes }}
{{- end }}
{{- $gpu := include "hourglass.gpuOn" . -}}
{{- $g := .root.Values.gpu -}}
{{- with merge (dict) ($v.nodeSelector | default dict) ($p.nodeSelector | default dict) (ternary $g.nodeSelector dict (eq $gpu "true") | default dict) }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with concat ($p.tolerations | default list) ($v.tolerations | default list) (ternary $g.tolerations list (eq $gpu "true") | default list) }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* "true" when a component's pods run on GPUs: the workers and the
placeholders that hold room for them with gpu.enabled, serve with gpu.serve
too. Takes (dict "root" . "component" NAME). */}}
{{- define "hourglass.gpuOn" -}}
{{- $g := .root.Values.gpu -}}
{{- if and $g.enabled (or (eq .component "worker") (and (eq .component "serve") $g.serve)) -}}
{{- if and $g.strictPlacement (eq $g.fallback "cpu") -}}
{{- fail "gpu.strictPlacement refuses any CPU execution; it cannot be combined with gpu.fallback=cpu" -}}
{{- end -}}
true
{{- end -}}
{{- end -}}

{{/* The image of a component: the Dockerfile's `gpu` target for GPU pods. */}}
{{- define "hourglass.imageOf" -}}
{{- if include "hourglass.gpuOn" . -}}
{{- $v := .root.Values -}}
{{- $repo := required "image.repository is required: the image built from the repository's Dockerfile" $v.image.repository -}}
{{- printf "%s:%s" $repo ($v.gpu.imageTag | default (printf "%s-gpu" ($v.image.tag | default .root.Chart.AppVersion))) -}}
{{- else -}}
{{- include "hourglass.image" .root -}}
{{- end -}}
{{- end -}}

{{/* The device flags of a GPU component's container (list items). */}}
{{- define "hourglass.gpuArgs" -}}
{{- if include "hourglass.gpuOn" . -}}
{{- $g := .root.Values.gpu -}}
- --device={{ $g.device }}
- --ep-fallback={{ $g.fallback }}
{{- if $g.strictPlacement }}
- --strict-placement
{{- end }}
{{- if eq $g.device "tensorrt" }}
- --trt-engine-cache=/var/cache/hourglass/tensorrt
{{- end }}
{{- end -}}
{{- end -}}

{{/* A container's resources, with the GPU limit for GPU pods. Takes
(dict "c" COMPONENT-DICT "resources" RESOURCES). */}}
{{- define "hourglass.resources" -}}
{{- $r := deepCopy (.resources | default dict) -}}
{{- if include "hourglass.gpuOn" .c -}}
{{- $g := .c.root.Values.gpu -}}
{{- $_ := set $r "limits" (merge (dict $g.resourceName (int $g.count)) ($r.limits | default dict)) -}}
{{- end -}}
{{- toYaml $r -}}
{{- end -}}

{{/* TensorRT's engine cache for GPU pods on tensorrt: mount and volume. */}}
{{- define "hourglass.engineCacheMount" -}}
{{- if and (include "hourglass.gpuOn" .) (eq .root.Values.gpu.device "tensorrt") -}}
- {name: trt-engines, mountPath: /var/cache/hourglass/tensorrt}
{{- end -}}
{{- end -}}

{{- define "hourglass.engineCacheVolume" -}}
{{- if and (include "hourglass.gpuOn" .) (eq .root.Values.gpu.device "tensorrt") -}}
- name: trt-engines
{{- with .root.Values.gpu.engineCacheHostPath }}
  hostPath: {path: {{ . }}, type: Directory}
{{- else }}
  emptyDir: {}
{{- end }}
{{- end -}}
{{- end -}}

{{/* Scheduling for components off the spot pool (scaler, nightly, watcher): their own nodeSelector, tolerations, affinity. */}}
{{- define "hourglass.scheduling" -}}
{{- $v := include "hourglass.values" . | fromYaml -}}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* A component's extra arguments, appended after the chart's own. */}}
{{- define "hourglass.extraArgs" -}}
{{- $v := include "hourglass.values" . | fromYaml -}}
{{- range $v.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Environment every Hourglass container gets (dict root component): the
shared ConfigMap, the metrics address, and the component's extraEnv. */}}
{{- define "hourglass.env" -}}
{{- $v := include "hourglass.values" . | fromYaml -}}
envFrom:
  - configMapRef:
      name: {{ include "hourglass.fullname" .root }}-config
env:
  - name: HOURGLASS_METRICS_ADDR
    value: "0.0.0.0:{{ .root.Values.metrics.port }}"
{{- with $v.extraEnv }}
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The ServiceAccount a component's pods run as: its own (created) unless
serviceAccount.create is false, then serviceAccount.name or "default". */}}
{{- define "hourglass.serviceAccountName" -}}
{{- $sa := (include "hourglass.values" . | fromYaml).serviceAccount | default dict -}}
{{- if ne (toString $sa.create) "false" -}}
{{- default (include "hourglass.name" .) $sa.name -}}
{{- else -}}
{{- default "default" $sa.name -}}
{{- end -}}
{{- end -}}

{{- define "hourglass.serviceAccount" -}}
{{- $sa := (include "hourglass.values" . | fromYaml).serviceAccount | default dict -}}
{{- if ne (toString $sa.create) "false" -}}
{{- $annotations := $sa.annotations | default dict -}}
{{- with $sa.roleArn }}{{ $_ := set $annotations "eks.amazonaws.com/role-arn" . }}{{ end -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "hourglass.serviceAccountName" . }}
  labels:
    {{- include "hourglass.labels" . | nindent 4 }}
  {{- with $annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
automountServiceAccountToken: {{ .automount | default false }}
---
{{- end }}
{{- end -}}
