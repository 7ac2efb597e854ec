{{- /*
  Leaf certificates that keep what the CSR asks for (step-ca v0.30 or later, see
  docs/step-ca-templates.md): the CSR's whole subject, the SANs step-ca validated against the
  token, and the CSR's key usages and extended key usages, falling back to step-ca's defaults
  when the CSR has none. Never a CA: CA requests fail with a message naming the fix.
*/ -}}
{{- with .Insecure.CR.BasicConstraints }}{{ if .IsCA }}
{{- fail "this provisioner issues leaf certificates only, and the CSR asks for a CA (basicConstraints CA:TRUE): sign CA requests with the CA provisioner" }}
{{- end }}{{ end }}
{{- if contains "certSign" (toJson .Insecure.CR.KeyUsage) }}
{{- fail "this provisioner issues leaf certificates only, and the CSR asks for keyUsage certSign: sign CA requests with the CA provisioner" }}
{{- end -}}
{
	"subject": {{ toJson .Insecure.CR.Subject }},
	"sans": {{ toJson .SANs }},
{{- if .Insecure.CR.KeyUsage }}
	"keyUsage": {{ toJson .Insecure.CR.KeyUsage }},
{{- else if typeIs "*rsa.PublicKey" .Insecure.CR.PublicKey }}
	"keyUsage": ["keyEncipherment", "digitalSignature"],
{{- else }}
	"keyUsage": ["digitalSignature"],
{{- end }}
{{- if or .Insecure.CR.ExtKeyUsage .Insecure.CR.UnknownExtKeyUsage }}
	"extKeyUsage": {{ toJson .Insecure.CR.ExtKeyUsage }},
	"unknownExtKeyUsage": {{ toJson .Insecure.CR.UnknownExtKeyUsage }}
{{- else }}
	"extKeyUsage": ["serverAuth", "clientAuth"]
{{- end }}
}
