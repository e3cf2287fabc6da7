{{/*
Names of the install, as internal/kube/install's constants have them. The
namespace is fixed: the mesh itself names trellis-system (the control
plane's and the collector's SPIFFE IDs, the policy root namespace), so the
chart installs into it whatever --namespace says; --namespace only picks
where Helm keeps the release.
*/}}
{{- define "trellis.namespace" -}}
trellis-system
{{- end }}

{{- define "trellis.name" -}}
trellis-control
{{- end }}

{{- define "trellis.caBundle" -}}
trellis-ca-bundle
{{- end }}

{{- define "trellis.caSecret" -}}
trellis-ca
{{- end }}

{{- define "trellis.validatingConfig" -}}
trellis-validate
{{- end }}

{{- define "trellis.mutatingConfig" -}}
trellis-inject
{{- end }}

{{/*
Labels of every object, and the selector of the control plane's pods (the
same two labels).
*/}}
{{- define "trellis.labels" -}}
app.kubernetes.io/name: {{ include "trellis.name" . }}
app.kubernetes.io/part-of: trellis
{{- end }}
