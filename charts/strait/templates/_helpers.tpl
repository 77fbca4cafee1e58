{{/*
Every helper here reads only .Values and .Release, so that an application
chart that has this chart as a dependency can call the sidecar templates
with (dict "Values" .Values.strait "Release" .Release).
*/}}

{{/* The Strait release the chart deploys by default: Chart.yaml's appVersion
(a test keeps them equal). .Chart is the caller's in an application chart. */}}
{{- define "strait.appVersion" -}}0.1.0{{- end -}}

{{- define "strait.name" -}}
{{- default "strait" .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "strait.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := include "strait.name" . -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "strait.selectorLabels" -}}
app.kubernetes.io/name: {{ include "strait.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "strait.labels" -}}
{{ include "strait.selectorLabels" . }}
app.kubernetes.io/version: {{ include "strait.imageTag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: strait
{{- end -}}

{{- define "strait.imageTag" -}}
{{- .Values.image.tag | default (include "strait.appVersion" .) -}}
{{- end -}}

{{- define "strait.image" -}}
{{- printf "%s:%s" .Values.image.repository (include "strait.imageTag" .) -}}
{{- end -}}

{{- define "strait.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "strait.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Where the chart mounts things. The config path is also the Dockerfile's CMD. */}}
{{- define "strait.configDir" -}}/etc/strait/config{{- end -}}
{{- define "strait.listenerTLSDir" -}}/etc/strait/tls/listener{{- end -}}
{{- define "strait.upstreamTLSDir" -}}/etc/strait/tls/upstream{{- end -}}
{{- define "strait.keyringDir" -}}/etc/strait/keyring{{- end -}}

{{/* The port of broker node id .id: its override or brokerPortBase+id. */}}
{{- define "strait.brokerPort" -}}
{{- $l := .Values.listener -}}
{{- $over := $l.brokerPorts | default dict -}}
{{- $key := toString (int .id) -}}
{{- if hasKey $over $key -}}
{{- int (get $over $key) -}}
{{- else -}}
{{- add (int $l.brokerPortBase) (int .id) -}}
{{- end -}}
{{- end -}}

{{- define "strait.drainTimeout" -}}{{ int .Values.drain.timeoutSeconds }}{{- end -}}

{{- define "strait.terminationGracePeriodSeconds" -}}
{{- $min := add (int .Values.drain.preStopSleepSeconds) (int .Values.drain.timeoutSeconds) -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- add $min 10 -}}
{{- else -}}
{{- $t := int .Values.terminationGracePeriodSeconds -}}
{{- if le $t $min -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed drain.preStopSleepSeconds + drain.timeoutSeconds (%d), or the kubelet kills Strait before its drain ends" $t $min) -}}
{{- end -}}
{{- $t -}}
{{- end -}}
{{- end -}}

{{/*
strait.yaml: .Values.config with the chart-owned keys (listeners, admin,
TLS file paths, drain timeout) filled in from the values that also decide
the ports and mounts.
*/}}
{{- define "strait.config" -}}
{{- $v := .Values -}}
{{- $c := deepCopy ($v.config | default dict) -}}
{{- $host := ternary "127.0.0.1" "0.0.0.0" (eq $v.mode "sidecar") -}}
{{- $listen := dict -}}
{{- if eq $v.listener.type "ports" -}}
{{- $_ := set $listen "bootstrap" (printf "%s:%d" $host (int $v.listener.bootstrapPort)) -}}
{{- $_ := set $listen "broker_port_base" (int $v.listener.brokerPortBase) -}}
{{- if $v.listener.brokerPorts -}}
{{- $bp := dict -}}
{{- range $id, $p := $v.listener.brokerPorts -}}
{{- $_ := set $bp $id (int $p) -}}
{{- end -}}
{{- $_ := set $listen "broker_ports" $bp -}}
{{- end -}}
{{- if $v.listener.advertiseHost -}}
{{- $_ := set $listen "advertise_host" $v.listener.advertiseHost -}}
{{- else if ne $v.mode "sidecar" -}}
{{- $_ := set $listen "advertise_host" (printf "%s.%s.svc.%s" (include "strait.fullname" .) .Release.Namespace $v.clusterDomain) -}}
{{- end -}}
{{- else -}}
{{- $sni := dict "listen" (printf "%s:%d" $host (int $v.listener.sni.port)) "host_template" $v.listener.sni.hostTemplate -}}
{{- if and (ne $v.mode "sidecar") (ne (int $v.service.sniPort) (int $v.listener.sni.port)) -}}
{{- $_ := set $sni "advertise_port" (int $v.service.sniPort) -}}
{{- end -}}
{{- $_ := set $c "sni" $sni -}}
{{- end -}}
{{- with $v.tls.listener -}}
{{- if .secretName -}}
{{- $dir := include "strait.listenerTLSDir" $ -}}
{{- $t := dict "cert_file" (printf "%s/tls.crt" $dir) "key_file" (printf "%s/tls.key" $dir) -}}
{{- if .clientAuth -}}
{{- $_ := set $t "client_ca_file" (printf "%s/ca.crt" $dir) -}}
{{- end -}}
{{- $_ := set $listen "tls" $t -}}
{{- end -}}
{{- end -}}
{{- if $listen -}}
{{- $_ := set $c "listen" $listen -}}
{{- end -}}
{{- $_ := set $c "admin" (dict "listen" (printf "0.0.0.0:%d" (int $v.admin.port))) -}}
{{- $up := $c.upstream | default dict -}}
{{- with $v.tls.upstream -}}
{{- if .enabled -}}
{{- $t := dict "enabled" true -}}
{{- if .secretName -}}
{{- $dir := include "strait.upstreamTLSDir" $ -}}
{{- $_ := set $t "ca_file" (printf "%s/ca.crt" $dir) -}}
{{- if .clientCert -}}
{{- $_ := set $t "cert_file" (printf "%s/tls.crt" $dir) -}}
{{- $_ := set $t "key_file" (printf "%s/tls.key" $dir) -}}
{{- end -}}
{{- end -}}
{{- if .insecureSkipVerify -}}
{{- $_ := set $t "insecure_skip_verify" true -}}
{{- end -}}
{{- $_ := set $up "tls" $t -}}
{{- end -}}
{{- end -}}
{{- $_ := set $c "upstream" $up -}}
{{- $limits := $c.limits | default dict -}}
{{- $_ := set $limits "drain_timeout" (printf "%ds" (int $v.drain.timeoutSeconds)) -}}
{{- $_ := set $c "limits" $limits -}}
{{- toYaml $c -}}
{{- end -}}

{{/* The config file's path inside the container (the Dockerfile's CMD uses the same). */}}
{{- define "strait.configPath" -}}{{ include "strait.configDir" . }}/strait.yaml{{- end -}}

{{/*
The Strait container, for the gateway Deployment and for sidecars.
Volume names are prefixed "strait-" so they do not collide with an
application's own.
*/}}
{{- define "strait.container" -}}
{{- $v := .Values -}}
{{- $sidecar := eq $v.mode "sidecar" -}}
{{- $admin := ternary "strait-admin" "admin" $sidecar -}}
name: strait
image: {{ include "strait.image" . | quote }}
imagePullPolicy: {{ $v.image.pullPolicy }}
{{- if and $sidecar $v.sidecar.native }}
restartPolicy: Always
{{- end }}
args: ["run", "--config", {{ include "strait.configPath" . | quote }}]
ports:
  - name: {{ $admin }}
    containerPort: {{ int $v.admin.port }}
    protocol: TCP
{{- if not $sidecar }}
{{- if eq $v.listener.type "ports" }}
  - name: bootstrap
    containerPort: {{ int $v.listener.bootstrapPort }}
    protocol: TCP
{{- range $id := $v.listener.brokerIds }}
  - name: broker-{{ int $id }}
    containerPort: {{ include "strait.brokerPort" (dict "Values" $v "id" $id) }}
    protocol: TCP
{{- end }}
{{- else }}
  - name: sni
    containerPort: {{ int $v.listener.sni.port }}
    protocol: TCP
{{- end }}
{{- end }}
{{- with $v.env }}
env:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.envFrom }}
envFrom:
  {{- toYaml . | nindent 2 }}
{{- end }}
livenessProbe:
  httpGet:
    path: /healthz
    port: {{ int $v.admin.port }}
  {{- toYaml $v.probes.liveness | nindent 2 }}
readinessProbe:
  httpGet:
    path: /readyz
    port: {{ int $v.admin.port }}
  {{- toYaml $v.probes.readiness | nindent 2 }}
lifecycle:
  preStop:
    sleep:
      seconds: {{ int $v.drain.preStopSleepSeconds }}
{{- with $v.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.securityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumeMounts:
  - name: strait-config
    mountPath: {{ include "strait.configDir" . }}
    readOnly: true
{{- if $v.tls.listener.secretName }}
  - name: strait-tls-listener
    mountPath: {{ include "strait.listenerTLSDir" . }}
    readOnly: true
{{- end }}
{{- if and $v.tls.upstream.enabled $v.tls.upstream.secretName }}
  - name: strait-tls-upstream
    mountPath: {{ include "strait.upstreamTLSDir" . }}
    readOnly: true
{{- end }}
{{- if $v.keyring.secretName }}
  - name: strait-keyring
    mountPath: {{ include "strait.keyringDir" . }}
    readOnly: true
{{- end }}
{{- range $v.extraSecretMounts }}
  - name: strait-{{ .name }}
    mountPath: {{ .mountPath }}
    readOnly: true
{{- end }}
{{- end -}}

{{- define "strait.volumes" -}}
{{- $v := .Values -}}
- name: strait-config
  configMap:
    name: {{ include "strait.fullname" . }}
{{- if $v.tls.listener.secretName }}
- name: strait-tls-listener
  secret:
    secretName: {{ $v.tls.listener.secretName }}
    defaultMode: 0440
{{- end }}
{{- if and $v.tls.upstream.enabled $v.tls.upstream.secretName }}
- name: strait-tls-upstream
  secret:
    secretName: {{ $v.tls.upstream.secretName }}
    defaultMode: 0440
{{- end }}
{{- if $v.keyring.secretName }}
- name: strait-keyring
  secret:
    secretName: {{ $v.keyring.secretName }}
    defaultMode: 0440
    items:
      - key: {{ $v.keyring.key }}
        path: {{ $v.keyring.key }}
{{- end }}
{{- range $v.extraSecretMounts }}
- name: strait-{{ .name }}
  secret:
    secretName: {{ .secretName }}
    defaultMode: 0440
{{- end }}
{{- end -}}

{{/*
For application charts. With this chart as a dependency (alias "strait",
mode: sidecar), in the application's pod template:

  initContainers:      # sidecar.native: true (containers: when false)
    {{- include "strait.sidecarContainer" (dict "Values" .Values.strait "Release" .Release) | nindent 4 }}
  volumes:
    {{- include "strait.sidecarVolumes" (dict "Values" .Values.strait "Release" .Release) | nindent 4 }}

Both render a YAML list.
*/}}
{{- define "strait.sidecarContainer" -}}
{{- if ne .Values.mode "sidecar" -}}
{{- fail "strait.sidecarContainer: set mode: sidecar in the strait values" -}}
{{- end -}}
- {{ include "strait.container" . | nindent 2 | trim }}
{{- end -}}

{{- define "strait.sidecarVolumes" -}}
{{ include "strait.volumes" . }}
{{- end -}}
