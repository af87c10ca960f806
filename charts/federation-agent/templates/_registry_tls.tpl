{{/*
Registry TLS (values registry.tls), for a rediss:// registry URL: the CA that signed the
registry's certificate (a Secret with ca.crt) and an optional client certificate (a
kubernetes.io/tls Secret), mounted read-only and named to the process by
FEDERATION_REGISTRY_CA_FILE, FEDERATION_REGISTRY_CERT_FILE and FEDERATION_REGISTRY_KEY_FILE.
Each helper renders nothing when registry.tls is not set.
*/}}

{{- define "federation-agent.registryTlsEnv" -}}
{{- $tls := .Values.registry.tls | default dict -}}
{{- if $tls.caSecret }}
- name: FEDERATION_REGISTRY_CA_FILE
  value: /etc/federation/registry-ca/ca.crt
{{- end }}
{{- if $tls.clientCertSecret }}
- name: FEDERATION_REGISTRY_CERT_FILE
  value: /etc/federation/registry-client/tls.crt
- name: FEDERATION_REGISTRY_KEY_FILE
  value: /etc/federation/registry-client/tls.key
{{- end }}
{{- end -}}

{{- define "federation-agent.registryTlsVolumeMounts" -}}
{{- $tls := .Values.registry.tls | default dict -}}
{{- if $tls.caSecret }}
- name: registry-ca
  mountPath: /etc/federation/registry-ca
  readOnly: true
{{- end }}
{{- if $tls.clientCertSecret }}
- name: registry-client-cert
  mountPath: /etc/federation/registry-client
  readOnly: true
{{- end }}
{{- end -}}

{{- define "federation-agent.registryTlsVolumes" -}}
{{- $tls := .Values.registry.tls | default dict -}}
{{- with $tls.caSecret }}
- name: registry-ca
  secret:
    secretName: {{ . }}
    items: [{key: ca.crt, path: ca.crt}]
    defaultMode: 0440
{{- end }}
{{- with $tls.clientCertSecret }}
- name: registry-client-cert
  secret:
    secretName: {{ . }}
    items: [{key: tls.crt, path: tls.crt}, {key: tls.key, path: tls.key}]
    defaultMode: 0440
{{- end }}
{{- end -}}
