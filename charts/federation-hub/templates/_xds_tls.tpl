{{/*
xDS mTLS (values xds.tls): the hub's serving certificate, key and the client CA, from one
Secret mounted whole (not by subPath), so that the kubelet's updates of a renewed
certificate reach the files the hub re-reads. With the registry's TLS mounts, these are
the hub container's volumes.
*/}}

{{- define "federation-hub.volumeMounts" -}}
{{- if not .Values.xds.insecurePlaintext }}
- name: xds-tls
  mountPath: /etc/federation/xds-tls
  readOnly: true
{{- end }}
{{- if and .Values.extensionServer.address .Values.extensionServer.tls.secretName }}
- name: extension-tls
  mountPath: /etc/federation/extension-tls
  readOnly: true
{{- end }}
{{ include "federation-hub.registryTlsVolumeMounts" . }}
{{- end -}}

{{- define "federation-hub.volumes" -}}
{{- if not .Values.xds.insecurePlaintext }}
- name: xds-tls
  secret:
    secretName: {{ .Values.xds.tls.secretName }}
    items: [{key: tls.crt, path: tls.crt}, {key: tls.key, path: tls.key}, {key: ca.crt, path: ca.crt}]
    defaultMode: 0440
{{- end }}
{{- if and .Values.extensionServer.address .Values.extensionServer.tls.secretName }}
- name: extension-tls
  secret:
    secretName: {{ .Values.extensionServer.tls.secretName }}
    defaultMode: 0440
{{- end }}
{{ include "federation-hub.registryTlsVolumes" . }}
{{- end -}}
