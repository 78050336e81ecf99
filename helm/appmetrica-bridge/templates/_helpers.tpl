{{/*
Every template here takes this chart's root context. A parent chart that runs the bridge as a sidecar passes
the subchart's context, `(index .Subcharts "appmetrica-bridge")`, so names, values and defaults resolve exactly as
they do inside this chart.
*/}}

{{- define "appmetrica-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "appmetrica-bridge.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "appmetrica-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "appmetrica-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "appmetrica-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "appmetrica-bridge.labels" -}}
helm.sh/chart: {{ include "appmetrica-bridge.chart" . }}
{{ include "appmetrica-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "appmetrica-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "appmetrica-bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "appmetrica-bridge.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "appmetrica-bridge.port" -}}
{{- .Values.config.server.port | default 8080 | int }}
{{- end }}

{{/* The Secret holding the default Post API key; empty when the keys come from files or per-application env. */}}
{{- define "appmetrica-bridge.secretName" -}}
{{- if .Values.postApiKey.existingSecret }}
{{- .Values.postApiKey.existingSecret }}
{{- else if .Values.postApiKey.value }}
{{- include "appmetrica-bridge.fullname" . }}
{{- end }}
{{- end }}

{{/* The bridge's configuration file, exactly as the ConfigMap carries it. */}}
{{- define "appmetrica-bridge.configYaml" -}}
{{- toYaml .Values.config }}
{{- end }}

{{/* Every topic the bridge consumes, config.kafka.topics first then each route's, as a JSON array. */}}
{{- define "appmetrica-bridge.topics" -}}
{{- $topics := .Values.config.kafka.topics | default list }}
{{- range .Values.config.routes }}
{{- $topics = concat $topics .topics }}
{{- end }}
{{- toJson $topics }}
{{- end }}

{{/*
Checks across values that the schema cannot express, with messages an operator can act on. The ConfigMap
includes it, so it runs in both modes.
*/}}
{{- define "appmetrica-bridge.validate" -}}
{{- $c := .Values.config }}
{{- if not $c.kafka.bootstrap_servers }}
{{- fail "config.kafka.bootstrap_servers is required: the Kafka brokers as host:port[,host:port...]" }}
{{- end }}
{{- if not (include "appmetrica-bridge.topics" . | fromJsonArray) }}
{{- fail "config.kafka.topics or config.routes is required: the topics the bridge consumes" }}
{{- end }}
{{- if and (eq $c.avro.format "confluent") (not $c.avro.schema_registry_url) }}
{{- fail "config.avro.schema_registry_url is required when config.avro.format is confluent" }}
{{- end }}
{{- if and (eq $c.avro.format "raw") (not $c.avro.schema_file) }}
{{- fail "config.avro.schema_file is required when config.avro.format is raw" }}
{{- end }}
{{- if has (toString $c.server.host) (list "127.0.0.1" "localhost" "::1") }}
{{- fail "config.server.host must not be a loopback address: the kubelet probes the pod's own IP" }}
{{- end }}
{{- $key := .Values.postApiKey }}
{{- if and $key.existingSecret $key.value }}
{{- fail "postApiKey: give either existingSecret or value, not both" }}
{{- end }}
{{- if not (or $key.existingSecret $key.value $c.post_api.api_key_file $c.post_api.applications) }}
{{- fail "postApiKey: set postApiKey.existingSecret (a Secret you manage, holding the key under postApiKey.secretKey) or postApiKey.value (the chart creates the Secret)" }}
{{- end }}
{{- if and .Values.staticMembership.enabled (hasKey ($c.kafka.properties | default dict) "group.instance.id") }}
{{- fail "staticMembership.enabled sets group.instance.id from each pod's name: remove group.instance.id from config.kafka.properties" }}
{{- end }}
{{- if and $key.value (regexMatch "[[:space:][:cntrl:]]" $key.value) }}
{{- fail "postApiKey.value holds spaces or control characters: the bridge refuses such a key" }}
{{- end }}
{{- $a := .Values.autoscaling }}
{{- if and $a.hpa.enabled $a.keda.enabled }}
{{- fail "autoscaling.hpa.enabled and autoscaling.keda.enabled are both true: KEDA manages an HPA of its own and the two would fight over the replica count; enable one" }}
{{- end }}
{{- if and (not (kindIs "invalid" .Values.podDisruptionBudget.minAvailable)) (not (kindIs "invalid" .Values.podDisruptionBudget.maxUnavailable)) }}
{{- fail "podDisruptionBudget: give minAvailable or maxUnavailable, not both (set the other to null)" }}
{{- end }}
{{- if eq .Values.mode "sidecar" }}
{{- range $what, $on := dict "autoscaling.hpa" $a.hpa.enabled "autoscaling.keda" $a.keda.enabled "serviceMonitor" .Values.serviceMonitor.enabled "networkPolicy" .Values.networkPolicy.enabled }}
{{- if $on }}
{{- fail (printf "%s.enabled needs mode standalone: in sidecar mode the bridge runs in another chart's pod, which that chart scales, monitors and isolates" $what) }}
{{- end }}
{{- end }}
{{- end }}
{{- $_ := include "appmetrica-bridge.terminationGracePeriodSeconds" . }}
{{- end }}

{{/*
The pod's grace period: Kubernetes kills the container when it ends, so it must outlast the bridge's drain plus
its close after the drain (at most 10 s: bridge.service.CLOSE_BUDGET_S). A parent chart running the sidecar should
use at least this for its own pod.
*/}}
{{- define "appmetrica-bridge.terminationGracePeriodSeconds" -}}
{{- $drain := .Values.config.shutdown.drain_timeout_s | default 20 | float64 }}
{{- $given := .Values.terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $given }}
{{- add (ceil $drain | int) .Values.terminationGraceMarginSeconds }}
{{- else if lt (float64 $given) (addf $drain 10) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must exceed config.shutdown.drain_timeout_s (%v) by at least 10 s, the bridge's close after its drain: Kubernetes would kill the bridge before it finishes draining and committing; raise it or leave it null to derive it" $given $drain) }}
{{- else }}
{{- $given | int }}
{{- end }}
{{- end }}

{{/* Annotations that roll the pods when what the bridge reads at start changes. */}}
{{- define "appmetrica-bridge.podAnnotations" -}}
checksum/config: {{ include "appmetrica-bridge.configYaml" . | sha256sum }}
{{- if and .Values.postApiKey.value (not .Values.postApiKey.existingSecret) }}
checksum/secret: {{ include "appmetrica-bridge.secretData" . | sha256sum }}
{{- end }}
{{- end }}

{{- define "appmetrica-bridge.secretData" -}}
{{ .Values.postApiKey.secretKey }}: {{ .Values.postApiKey.value | b64enc | quote }}
{{- end }}

{{- define "appmetrica-bridge.securityContext" -}}
runAsNonRoot: true
{{- with .Values.podSecurityContext.runAsUser }}
runAsUser: {{ . | int64 }}
{{- end }}
{{- with .Values.podSecurityContext.runAsGroup }}
runAsGroup: {{ . | int64 }}
{{- end }}
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
The bridge's container as one list item, for `containers:` of this chart's Deployment or of another chart's pod.
Its volume, port and container names carry the bridge's prefix so that they cannot clash inside a shared pod.
*/}}
{{- define "appmetrica-bridge.container" -}}
- name: appmetrica-bridge
  image: {{ include "appmetrica-bridge.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - run
    - --config
    - /etc/appmetrica-bridge/config.yaml
  {{- $secret := include "appmetrica-bridge.secretName" . }}
  {{- $env := include "appmetrica-bridge.env" . | trim }}
  {{- if or $secret $env }}
  env:
    {{- if $secret }}
    - name: BRIDGE_POST_API_KEY
      valueFrom:
        secretKeyRef:
          name: {{ $secret }}
          key: {{ .Values.postApiKey.secretKey }}
    {{- end }}
    {{- with $env }}
    {{- . | nindent 4 }}
    {{- end }}
  {{- end }}
  ports:
    - name: bridge-http
      containerPort: {{ include "appmetrica-bridge.port" . }}
      protocol: TCP
  livenessProbe:
    httpGet:
      path: /healthz
      port: bridge-http
    {{- toYaml .Values.livenessProbe | nindent 4 }}
  {{- $readiness := .Values.readinessProbe.enabled }}
  {{- if kindIs "invalid" $readiness }}
  {{- /* In another chart's pod, the bridge's readiness (no partition, Kafka down, key refused) would take the
         application out of its Service; so by default only a pod of the bridge's own is gated by it. */}}
  {{- $readiness = eq .Values.mode "standalone" }}
  {{- end }}
  {{- if $readiness }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: bridge-http
    {{- toYaml (omit .Values.readinessProbe "enabled") | nindent 4 }}
  {{- end }}
  {{- with .Values.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- include "appmetrica-bridge.securityContext" . | nindent 4 }}
  volumeMounts:
    - name: appmetrica-bridge-config
      mountPath: /etc/appmetrica-bridge
      readOnly: true
    - name: appmetrica-bridge-tmp
      mountPath: /tmp
    {{- with include "appmetrica-bridge.fileMounts" . | trim }}
    {{- . | nindent 4 }}
    {{- end }}
{{- end }}

{{/*
The container's environment besides the default key, as list items: static membership, secretEnv, extraEnv.
The configuration check hook gets the same, so it checks what the pods will run with.
*/}}
{{- define "appmetrica-bridge.env" -}}
{{- if .Values.staticMembership.enabled }}
{{- /* librdkafka's group.instance.id through the bridge's environment override of kafka.properties. */}}
- name: BRIDGE_KAFKA__PROPERTIES__GROUP.INSTANCE.ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
{{- end }}
{{- range .Values.secretEnv }}
- name: {{ .name | quote }}
  valueFrom:
    secretKeyRef:
      name: {{ .secretName }}
      key: {{ .secretKey | quote }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Mounts of the Secrets' files and of extraVolumeMounts, as list items; the configuration check mounts them too. */}}
{{- define "appmetrica-bridge.fileMounts" -}}
{{- range $index, $file := .Values.secretFiles }}
- name: secret-file-{{ $index }}
  mountPath: {{ $file.mountPath }}
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The volumes behind appmetrica-bridge.fileMounts, as list items. */}}
{{- define "appmetrica-bridge.fileVolumes" -}}
{{- range $index, $file := .Values.secretFiles }}
- name: secret-file-{{ $index }}
  secret:
    secretName: {{ $file.secretName }}
    # Readable by the bridge's user only (the pod's fsGroup owns the files).
    defaultMode: 0440
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* The volumes the container mounts, as list items for `volumes:`. */}}
{{- define "appmetrica-bridge.volumes" -}}
- name: appmetrica-bridge-config
  configMap:
    name: {{ include "appmetrica-bridge.fullname" . }}
- name: appmetrica-bridge-tmp
  {{- with .Values.tmpVolume.sizeLimit }}
  emptyDir:
    sizeLimit: {{ . }}
  {{- else }}
  emptyDir: {}
  {{- end }}
{{- with include "appmetrica-bridge.fileVolumes" . | trim }}
{{ . }}
{{- end }}
{{- end }}

{{/* The helm test pod's labels: deliberately not the selector labels, so no ReplicaSet adopts it. */}}
{{- define "appmetrica-bridge.testLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ include "appmetrica-bridge.name" . }}-test
{{- end }}

{{/* The configuration check's labels: not the selector labels either, and not the test pod's. */}}
{{- define "appmetrica-bridge.checkLabels" -}}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: {{ include "appmetrica-bridge.name" . }}-check-config
{{- end }}
