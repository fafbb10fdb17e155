package session

import (
	"errors"
	"fmt"
)

var (
	// ErrNotConnected: the cluster has no live session on this hub.
	ErrNotConnected = errors.New("cluster is not connected")
	// ErrNoRoute: no connected agent advertised the node address.
	ErrNoRoute = errors.New("no agent advertises this address")
	// ErrShutdown: the registry was closed (the hub is stopping) and
	// takes no more sessions.
	ErrShutdown = errors.New("the hub is shutting down")
	// ErrAgentForbidden is what an [AgentAuthenticator] wraps when the
	// agent proved who it is but may not serve the cluster it asks for
	// (another cluster's credential, a removed cluster): the upgrade is
	// answered 403. Any other authentication error is answered 401.
	ErrAgentForbidden = errors.New("agent may not serve this cluster")
)

// ClusterError names the cluster an error is about.
type ClusterError struct {
	Cluster string
	Err     error
}

func (e *ClusterError) Error() string { return fmt.Sprintf("cluster %s: %v", e.Cluster, e.Err) }
func (e *ClusterError) Unwrap() error { return e.Err }
