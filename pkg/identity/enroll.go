package identity

// Enrollment endpoints on the hub's TLS listener.
//
//	POST /v1/enroll          Authorization: Bearer ID.SECRET, Backhaul-Cluster: NAME,
//	                         body: one PEM "CERTIFICATE REQUEST" (at most MaxCSRBytes)
//	POST /v1/renew           client certificate of the agent, body as above
//	GET  /v1/enroll/status   Authorization: Bearer ID.SECRET (used or not, until it expires)
//
// Enroll and renew answer 200 with an EnrollResponse; refusals are
// Kubernetes Status objects: 401 (token unknown, used or expired), 403
// (token or certificate of another cluster, cluster removed), 400 (CSR).
const (
	PathEnroll       = "/v1/enroll"
	PathRenew        = "/v1/renew"
	PathEnrollStatus = "/v1/enroll/status"
	// MaxCSRBytes bounds a CSR body; a P-256 or RSA-4096 CSR is well under.
	MaxCSRBytes = 16 << 10
)

// EnrollResponse carries a signed agent certificate.
type EnrollResponse struct {
	// Certificate is the PEM certificate chain, leaf first.
	Certificate string `json:"certificate"`
	// CA is the PEM bundle of the CA that signs agent certificates.
	CA string `json:"ca"`
}

// EnrollStatus answers PathEnrollStatus.
type EnrollStatus struct {
	Cluster      string `json:"cluster"`
	Connected    bool   `json:"connected"`
	Agents       int    `json:"agents"`
	AgentVersion string `json:"agentVersion,omitempty"`
}

// The member-side objects onboard.sh creates and the agent uses: a Secret
// holding the bootstrap token and the hub's serving CA, to which the agent
// writes its key and certificate; a ConfigMap with the hub URL and cluster.
const (
	AgentNamespace  = "backhaul-system"
	AgentSecretName = "backhaul-agent"
	AgentConfigName = "backhaul-agent"
	// Secret keys.
	KeyBootstrapToken = "bootstrap-token"
	KeyHubCA          = "hub-ca.crt"
	KeyTLSCert        = "tls.crt"
	KeyTLSKey         = "tls.key"
	// ConfigMap keys.
	KeyHubURL      = "hub-url"
	KeyClusterName = "cluster"
)
