{{/*
The names of the `portcullis serve` flags and environment variables the chart passes,
in one place so that a renamed flag is changed here only. tests/helm_chart.rs checks
every flag and variable the chart renders against `portcullis serve --help`.
*/}}
{{- define "portcullis.flags" -}}
listen: --listen
adminListen: --admin-listen
maxConnections: --max-connections
adminMaxConnections: --admin-max-connections
headerReadTimeout: --header-read-timeout-secs
bodyReadTimeout: --body-read-timeout-secs
idleTimeout: --idle-timeout-secs
http2KeepaliveInterval: --http2-keepalive-interval-secs
http2KeepaliveTimeout: --http2-keepalive-timeout-secs
http2MaxConcurrentStreams: --http2-max-concurrent-streams
schema: --schema
policies: --policies
templateLinks: --template-links
entities: --entities
maxBodyBytes: --max-body-bytes
batchLimit: --batch-limit
decisionLog: --decision-log
logFormat: --log-format
shutdownGrace: --shutdown-grace-secs
watch: --watch
redisPrefix: --redis-prefix
routes: --routes
jwtJwks: --jwt-jwks-file
jwtKey: --jwt-key-file
jwtHs256: --jwt-hs256-secret-file
jwtIssuer: --jwt-issuer
jwtAudience: --jwt-audience
tlsCert: --tls-cert
tlsKey: --tls-key
tlsClientCa: --tls-client-ca
publicBaseUrl: --public-base-url
pageTokenKeyFile: --page-token-key-file
redisUrlEnv: PORTCULLIS_REDIS_URL
redisClusterEnv: PORTCULLIS_REDIS_CLUSTER
{{- end }}

{{/* Expand the name of the chart. */}}
{{- define "portcullis.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's full name, cut at 63 characters because some Kubernetes name fields are
limited to that (DNS-1123).
*/}}
{{- define "portcullis.fullname" -}}
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

{{- define "portcullis.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "portcullis.labels" -}}
helm.sh/chart: {{ include "portcullis.chart" . }}
{{ include "portcullis.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: authorization
{{- end }}

{{- define "portcullis.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portcullis.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "portcullis.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "portcullis.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "portcullis.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The name of the ConfigMap holding the schema, policies, links and routes. */}}
{{- define "portcullis.modelConfigMap" -}}
{{- if eq .Values.policies.source "existingConfigMap" }}
{{- required "policies.existingConfigMap is required when policies.source is existingConfigMap" .Values.policies.existingConfigMap }}
{{- else }}
{{- printf "%s-model" (include "portcullis.fullname" .) }}
{{- end }}
{{- end }}

{{/* Keys of the model ConfigMap, whichever source fills it. */}}
{{- define "portcullis.schemaKey" -}}
{{- if eq .Values.policies.source "chart" }}portal.cedarschema{{ else if eq .Values.policies.source "values" }}schema.cedarschema{{ else }}{{ .Values.policies.schemaKey }}{{ end }}
{{- end }}

{{- define "portcullis.templateLinksKey" -}}
{{- if eq .Values.policies.source "existingConfigMap" }}{{ .Values.policies.templateLinksKey }}
{{- else if .Values.policies.inline.templateLinks }}template-links.json
{{- else if and (eq .Values.policies.source "chart") (.Files.Get "files/policies/links.json") }}links.json
{{- end }}
{{- end }}

{{- define "portcullis.routesKey" -}}
{{- if eq .Values.policies.source "existingConfigMap" }}{{ .Values.policies.routesKey }}
{{- else if .Values.policies.inline.routes }}routes.yaml
{{- else if and (eq .Values.policies.source "chart") (.Files.Get "files/policies/routes.yaml") }}routes.yaml
{{- end }}
{{- end }}

{{/* The name of the entity ConfigMap, empty when entities do not come from a file. */}}
{{- define "portcullis.entitiesConfigMap" -}}
{{- if .Values.entities.existingConfigMap }}
{{- .Values.entities.existingConfigMap }}
{{- else if .Values.entities.inline }}
{{- printf "%s-entities" (include "portcullis.fullname" .) }}
{{- end }}
{{- end }}

{{/* The scheme of the decision port. */}}
{{- define "portcullis.scheme" -}}
{{- if .Values.tls.enabled }}HTTPS{{ else }}HTTP{{ end }}
{{- end }}

{{/* The arguments of `portcullis serve`, one flag per item as `--flag=value`. */}}
{{- define "portcullis.args" -}}
{{- $f := include "portcullis.flags" . | fromYaml }}
{{- $v := .Values -}}
- serve
- {{ printf "%s=0.0.0.0:%d" $f.listen (int $v.containerPort) | quote }}
- {{ printf "%s=0.0.0.0:%d" $f.adminListen (int $v.adminPort) | quote }}
- {{ printf "%s=%s/%s" $f.schema $v.policies.mountPath (include "portcullis.schemaKey" .) | quote }}
- {{ printf "%s=%s" $f.policies $v.policies.mountPath | quote }}
{{- with include "portcullis.templateLinksKey" . }}
- {{ printf "%s=%s/%s" $f.templateLinks $v.policies.mountPath . | quote }}
{{- end }}
{{- with include "portcullis.routesKey" . }}
- {{ printf "%s=%s/%s" $f.routes $v.policies.mountPath . | quote }}
{{- end }}
{{- /* Explicit either way: the binary's own default depends on where the model
comes from. */}}
- {{ printf "%s=%t" $f.watch $v.policies.watch | quote }}
{{- if and (include "portcullis.entitiesConfigMap" .) (not $v.redis.enabled) }}
- {{ printf "%s=%s/%s" $f.entities $v.entities.mountPath $v.entities.key | quote }}
{{- end }}
{{- if $v.server.maxBodyBytes }}
- {{ printf "%s=%d" $f.maxBodyBytes (int64 $v.server.maxBodyBytes) | quote }}
{{- end }}
{{- if $v.server.batchLimit }}
- {{ printf "%s=%d" $f.batchLimit (int64 $v.server.batchLimit) | quote }}
{{- end }}
- {{ printf "%s=%s" $f.decisionLog (toString $v.server.decisionLog) | quote }}
- {{ printf "%s=%s" $f.logFormat $v.server.logFormat | quote }}
- {{ printf "%s=%d" $f.shutdownGrace (int64 $v.server.shutdownGraceSecs) | quote }}
{{- range $key, $flag := dict "maxConnections" $f.maxConnections "adminMaxConnections" $f.adminMaxConnections "headerReadTimeoutSecs" $f.headerReadTimeout "bodyReadTimeoutSecs" $f.bodyReadTimeout "idleTimeoutSecs" $f.idleTimeout "http2KeepaliveIntervalSecs" $f.http2KeepaliveInterval "http2KeepaliveTimeoutSecs" $f.http2KeepaliveTimeout "http2MaxConcurrentStreams" $f.http2MaxConcurrentStreams }}
{{- with (get $v.server $key) }}
- {{ printf "%s=%d" $flag (int64 .) | quote }}
{{- end }}
{{- end }}
{{- if $v.redis.enabled }}
{{- with $v.redis.prefix }}
- {{ printf "%s=%s" $f.redisPrefix . | quote }}
{{- end }}
{{- end }}
{{- with $v.gateway.jwt.existingSecret }}
{{- $flag := get (dict "jwks" $f.jwtJwks "pem" $f.jwtKey "hs256" $f.jwtHs256) $v.gateway.jwt.format }}
- {{ printf "%s=%s/%s" $flag $v.gateway.jwt.mountPath $v.gateway.jwt.key | quote }}
{{- with $v.gateway.jwt.issuer }}
- {{ printf "%s=%s" $f.jwtIssuer . | quote }}
{{- end }}
{{- with $v.gateway.jwt.audience }}
- {{ printf "%s=%s" $f.jwtAudience . | quote }}
{{- end }}
{{- end }}
{{- if $v.tls.enabled }}
- {{ printf "%s=%s/tls.crt" $f.tlsCert $v.tls.mountPath | quote }}
- {{ printf "%s=%s/tls.key" $f.tlsKey $v.tls.mountPath | quote }}
{{- with $v.tls.clientCaKey }}
- {{ printf "%s=%s/%s" $f.tlsClientCa $v.tls.mountPath . | quote }}
{{- end }}
{{- end }}
{{- with $v.authzen.publicBaseUrl }}
- {{ printf "%s=%s" $f.publicBaseUrl . | quote }}
{{- end }}
{{- if include "portcullis.pageTokenSecret" . }}
- {{ printf "%s=%s/%s" $f.pageTokenKeyFile $v.authzen.pageTokenKey.mountPath $v.authzen.pageTokenKey.key | quote }}
{{- end }}
{{- range $v.server.extraArgs }}
- {{ . | quote }}
{{- end }}
{{- end }}

{{/*
Environment of the Portcullis container. The Redis URL (or, for a cluster, the seed
node list) carries credentials, so it only ever comes from a Secret: whole, or as a
password that Kubernetes expands into the value through $(REDIS_PASSWORD), a variable
defined earlier in the list, so the password never appears in the pod spec.
*/}}
{{- define "portcullis.env" -}}
{{- $f := include "portcullis.flags" . | fromYaml }}
{{- $r := .Values.redis }}
{{- if $r.enabled }}
{{- $var := ternary $f.redisClusterEnv $f.redisUrlEnv $r.cluster }}
{{- if $r.existingSecret }}
- name: {{ $var }}
  valueFrom:
    secretKeyRef:
      name: {{ $r.existingSecret }}
      key: {{ $r.existingSecretKey }}
{{- else }}
{{- $addr := required "redis.enabled needs redis.existingSecret or redis.address" $r.address }}
{{- $scheme := ternary "rediss" "redis" $r.tls }}
{{- $auth := "" }}
{{- if $r.passwordSecret.name }}
{{- $auth = ":$(REDIS_PASSWORD)@" }}
- name: REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $r.passwordSecret.name }}
      key: {{ $r.passwordSecret.key }}
{{- end }}
{{- if $r.cluster }}
{{- $nodes := list }}
{{- range splitList "," $addr }}
{{- $nodes = append $nodes (printf "%s://%s%s" $scheme $auth (trim .)) }}
{{- end }}
- name: {{ $var }}
  value: {{ join "," $nodes | quote }}
{{- else }}
- name: {{ $var }}
  value: {{ printf "%s://%s%s/%d" $scheme $auth $addr (int $r.database) | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- with .Values.server.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The Secret holding the AuthZEN page-token key: the operator's, or the one the chart
creates; empty when neither (each pod then draws its own key, and a page token works
only on the replica that issued it).
*/}}
{{- define "portcullis.pageTokenSecret" -}}
{{- $k := .Values.authzen.pageTokenKey -}}
{{- if $k.existingSecret -}}
{{- $k.existingSecret -}}
{{- else if $k.create -}}
{{- printf "%s-page-token" (include "portcullis.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end }}
