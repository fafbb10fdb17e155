package statuspage

import (
	"context"
	"time"

	"backhaul.io/backhaul/hub/session"
)

// Source is where the page's data comes from: the hub's registry,
// sessions and prober (HubSource), or a fake fleet in tests and benches.
// Neither method may touch a tunnel: both read what the hub measured in
// the background.
type Source interface {
	// Clusters lists the fleet now: every registered cluster, connected
	// or not, and any cluster this replica holds a session of.
	Clusters(ctx context.Context) ([]Cluster, error)
	// History is cluster's round trips through this replica over the
	// last hour, oldest first (session.Prober.History).
	History(cluster string) []session.RTTSample
}

// Cluster is one row of the page, as the browser receives it.
type Cluster struct {
	Name string `json:"name"`
	// Connected: an agent of the cluster holds a session to this replica
	// or to a peer it can forward to.
	Connected bool `json:"connected"`
	// Ready: the member's /readyz answered ok at the last probe.
	Ready        bool   `json:"ready"`
	ReadyMessage string `json:"readyMessage,omitempty"`
	// RTT (EWMA) and RTTP99 in microseconds.
	RTTMicros    int64 `json:"rttMicros,omitempty"`
	RTTP99Micros int64 `json:"rttP99Micros,omitempty"`
	Reconnects   int32 `json:"reconnects,omitempty"`
	Flapping     bool  `json:"flapping,omitempty"`
	Streams      int64 `json:"streams"`
	BytesTx      int64 `json:"bytesTx,omitempty"`
	BytesRx      int64 `json:"bytesRx,omitempty"`
	// Sessions is how many sessions of the cluster this replica holds.
	Sessions          int    `json:"sessions"`
	AgentVersion      string `json:"agentVersion,omitempty"`
	KubernetesVersion string `json:"kubernetesVersion,omitempty"`
	// Replicas are the hub replicas holding a session of it.
	Replicas             []string  `json:"replicas,omitempty"`
	ConnectedSince       time.Time `json:"connectedSince,omitzero"`
	LastHeartbeat        time.Time `json:"lastHeartbeat,omitzero"`
	LastDisconnect       time.Time `json:"lastDisconnect,omitzero"`
	LastDisconnectReason string    `json:"lastDisconnectReason,omitempty"`
	LastRefusal          time.Time `json:"lastRefusal,omitzero"`
	LastRefusalReason    string    `json:"lastRefusalReason,omitempty"`
}
