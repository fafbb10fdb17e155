package identity

// Where the hub publishes, and backhaulctl reads, how edge sites and
// callers reach the hub.
const (
	// DefaultNamespace is where the hub runs and keeps its Secrets
	// (CA, serving certificate, bootstrap tokens) and ConfigMaps.
	DefaultNamespace = "backhaul-system"
	// HubInfoConfigMap, in the hub's namespace, tells backhaulctl how edge
	// sites and callers reach the hub when --hub-url/--hub-ca-file are not
	// given.
	HubInfoConfigMap = "backhaul-hub-info"
	// HubInfoKeyURL holds the hub's external address, wss://host:port or
	// https://host:port.
	HubInfoKeyURL = "url"
	// HubInfoKeyCA holds the PEM CA bundle that signed the hub's serving
	// certificate.
	HubInfoKeyCA = "ca.crt"
)
