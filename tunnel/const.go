package tunnel

import (
	"fmt"
	"net/http"
	"time"
)

const (
	// Version is the stream-header and subprotocol version this package speaks.
	Version uint8 = 1

	// Subprotocol is the websocket subprotocol naming Version. A hub that does
	// not speak it refuses the upgrade with 426.
	Subprotocol = "backhaul.io/v1"

	// Path is where the hub serves the tunnel endpoint.
	Path = "/v1/tunnel"

	// HeaderCluster carries the cluster name the agent serves on the upgrade.
	HeaderCluster = "Backhaul-Cluster"
	// HeaderAgentVersion carries the agent's build version on the upgrade.
	HeaderAgentVersion = "Backhaul-Agent-Version"
	// HeaderNode and HeaderNodeAddresses carry, for an agent in node mode,
	// its node's name and comma-separated IP addresses, which the hub
	// routes to this session.
	HeaderNode          = "Backhaul-Node"
	HeaderNodeAddresses = "Backhaul-Node-Addresses"
	// HeaderAgentFeatures carries, on the upgrade, the comma-separated
	// features the agent serves beyond this Version's baseline, so a hub
	// speaks them only to agents that understand them.
	HeaderAgentFeatures = "Backhaul-Agent-Features"
	// FeatureHubAPIServer: the agent serves [KindHubAPIServer] and refuses
	// identities in the "backhaul:" space on every other stream.
	FeatureHubAPIServer = "hub-apiserver"
	// FeatureImpersonation: the agent honours a caller's own impersonation
	// (kubectl --as), which the hub sends as Backhaul-Impersonate-* headers,
	// after checking it with the member. A hub refuses --as towards an
	// agent that did not announce it rather than drop it silently.
	FeatureImpersonation = "impersonation"

	// HeaderAgentTime carries, on the upgrade, the agent's wall clock when
	// it started the dial, in RFC 3339 with nanoseconds: the hub compares
	// it with its own to tell an operator the agent's clock is off (which
	// makes fresh certificates look not yet valid).
	HeaderAgentTime = "Backhaul-Agent-Time"

	// HeaderHubReplica, on the hub's 101 answer, names the hub replica that
	// accepted the session; an agent holding several sessions uses it to
	// keep them on distinct replicas.
	HeaderHubReplica = "Backhaul-Hub-Replica"
	// HeaderHubReplicas, on the same answer, is how many hub replicas serve
	// at the moment, as a decimal integer.
	HeaderHubReplicas = "Backhaul-Hub-Replicas"

	// MaxReplicaLen bounds a replica name (a pod name is at most a DNS
	// subdomain); a longer or non-printable name is ignored.
	MaxReplicaLen = 253
)

// Sizes of the stream request and reply. requestFixedLen is
// version + kind + idLen + addrLen + timeout.
const (
	sizeOfVersion = 1
	sizeOfKind    = 1
	sizeOfIDLen   = 1
	sizeOfAddrLen = 1
	sizeOfTimeout = 4

	requestFixedLen = sizeOfVersion + sizeOfKind + sizeOfIDLen + sizeOfAddrLen + sizeOfTimeout

	sizeOfCode   = 1
	sizeOfMsgLen = 2

	replyFixedLen = sizeOfVersion + sizeOfCode + sizeOfMsgLen

	// MaxRequestIDLen bounds the request id.
	MaxRequestIDLen = 64
	// MaxAddressLen bounds the address (a DNS name of 253 bytes plus a port
	// does not always fit; names longer than this are refused).
	MaxAddressLen = 255
	// MaxRequestLen is the largest stream request on the wire.
	MaxRequestLen = requestFixedLen + MaxRequestIDLen + MaxAddressLen
	// MaxMessageLen bounds the reason text in a reply.
	MaxMessageLen = 1024
	// MaxReplyLen is the largest reply on the wire.
	MaxReplyLen = replyFixedLen + MaxMessageLen
)

// Kind says what a stream should reach on the accepting side.
type Kind uint8

const (
	// KindAPIServer asks the agent for its member's Kubernetes API server. The
	// stream then carries HTTP/1.1 requests, which the agent serves with its
	// own credentials and the caller's impersonation headers.
	KindAPIServer Kind = 1
	// KindTCP asks the agent to dial Address, subject to its allowlist.
	KindTCP Kind = 2
	// KindAPIServerTCP asks the agent for a raw TCP connection to its
	// member's API server: the caller speaks TLS end to end with it (the
	// CONNECT front end), so the hub never sees the member's credentials.
	KindAPIServerTCP Kind = 3
	// KindDrain is a control stream the hub opens on an agent's session to
	// say that its replica is going away. Timeout carries the grace period
	// (0: [DefaultDrainGrace]) and Address is empty. The agent answers
	// CodeOK, closes the stream, dials a replacement session and closes
	// this one once it carries no streams or the grace has passed. An agent
	// that predates the kind answers CodeBadRequest, which the hub must
	// tolerate.
	KindDrain Kind = 4
	// KindForward is opened by one hub replica on its peer session with
	// another: "open, on your own agent session of a cluster, a stream of
	// an inner kind, and join the two". Address is CLUSTER/INNER for the API
	// server kinds and CLUSTER/INNER/ADDRESS for KindTCP, INNER being the
	// inner Kind in decimal ([Forward], [Request.Forwarded]). Only hub
	// replicas speak it to each other; agents refuse it.
	KindForward Kind = 5
	// KindHubAPIServer is KindAPIServer for the hub's own controllers and
	// probes, and the only stream on which an agent accepts an identity in
	// the reserved "backhaul:" space (the hub's push identity). The
	// gateway, which carries callers, never opens it, so no caller can act
	// as the hub in a member whatever headers it sends. A hub opens it only
	// on sessions whose agent announced [FeatureHubAPIServer]; to an older
	// agent it opens KindAPIServer instead.
	KindHubAPIServer Kind = 6
)

// DefaultDrainGrace is the acceptor's grace for a drain that names none.
const DefaultDrainGrace = 30 * time.Second

func (k Kind) String() string {
	switch k {
	case KindAPIServer:
		return "apiserver"
	case KindTCP:
		return "tcp"
	case KindAPIServerTCP:
		return "apiserver-tcp"
	case KindDrain:
		return "drain"
	case KindForward:
		return "forward"
	case KindHubAPIServer:
		return "hub-apiserver"
	default:
		return fmt.Sprintf("kind(%d)", uint8(k))
	}
}

// Code is the acceptor's answer to a stream request.
type Code uint8

const (
	CodeOK Code = 0
	// CodeRefused: the destination refused the connection.
	CodeRefused Code = 1
	// CodeTimeout: the destination did not answer within the timeout.
	CodeTimeout Code = 2
	// CodeNotAllowed: the acceptor's policy forbids the destination.
	CodeNotAllowed Code = 3
	// CodeBadRequest: the request was malformed or of an unknown kind.
	CodeBadRequest Code = 4
	// CodeUnavailable: the acceptor cannot serve this kind right now.
	CodeUnavailable Code = 5
	// CodeInternal: anything else went wrong on the acceptor.
	CodeInternal Code = 6

	maxCode = CodeInternal
)

func (c Code) String() string {
	switch c {
	case CodeOK:
		return "ok"
	case CodeRefused:
		return "refused"
	case CodeTimeout:
		return "timeout"
	case CodeNotAllowed:
		return "not_allowed"
	case CodeBadRequest:
		return "bad_request"
	case CodeUnavailable:
		return "unavailable"
	case CodeInternal:
		return "internal"
	default:
		return fmt.Sprintf("code(%d)", uint8(c))
	}
}

// HTTPStatus is the status a front end answers its caller for this code.
func (c Code) HTTPStatus() int {
	switch c {
	case CodeOK:
		return http.StatusOK
	case CodeRefused:
		return http.StatusBadGateway
	case CodeTimeout:
		return http.StatusGatewayTimeout
	case CodeNotAllowed:
		return http.StatusForbidden
	case CodeBadRequest:
		return http.StatusBadRequest
	case CodeUnavailable:
		return http.StatusServiceUnavailable
	default:
		return http.StatusBadGateway
	}
}
