{{- /*
  CA certificates for a dedicated provisioner (step-ca v0.30 or later, see
  docs/step-ca-templates.md): the CSR's whole subject, its SANs if it has any, keyCertSign and
  cRLSign plus the CSR's own key usages, its extended key usages if any, and CA:TRUE with the
  CSR's path length constraint (none when the CSR has no basicConstraints, as cert-manager
  sends isCA requests). Requests that do not ask for a CA fail with a message naming the fix.
*/ -}}
{{- $cr := .Insecure.CR }}
{{- $asksCA := contains "certSign" (toJson $cr.KeyUsage) }}
{{- with $cr.BasicConstraints }}
{{- if not .IsCA }}
{{- fail "this provisioner issues CA certificates only, and the CSR asks for basicConstraints CA:FALSE: sign leaf requests with the leaf provisioner" }}
{{- end }}
{{- $asksCA = true }}
{{- end }}
{{- if not $asksCA }}
{{- fail "this provisioner issues CA certificates only, and the CSR asks for neither basicConstraints CA:TRUE nor keyUsage certSign: sign leaf requests with the leaf provisioner" }}
{{- end -}}
{
	"subject": {{ toJson $cr.Subject }},
{{- if or $cr.DNSNames $cr.IPAddresses $cr.URIs $cr.EmailAddresses }}
	"sans": {{ toJson .SANs }},
{{- end }}
	"keyUsage": ["certSign", "crlSign"{{ range (toJson $cr.KeyUsage | fromJson) }}, {{ toJson . }}{{ end }}],
{{- if or $cr.ExtKeyUsage $cr.UnknownExtKeyUsage }}
	"extKeyUsage": {{ toJson $cr.ExtKeyUsage }},
	"unknownExtKeyUsage": {{ toJson $cr.UnknownExtKeyUsage }},
{{- end }}
	"basicConstraints": {
		"isCA": true,
		"maxPathLen": {{ with $cr.BasicConstraints }}{{ .MaxPathLen }}{{ else }}-1{{ end }}
	}
}
