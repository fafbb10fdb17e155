package tunnel

import (
	"fmt"
	"strconv"
	"strings"
)

// maxClusterLen bounds a forwarded cluster name (a DNS label).
const maxClusterLen = 63

// Forward wraps inner, a stream to cluster, as the KindForward request one
// hub replica sends another. The inner request id and timeout travel as
// the outer's.
func Forward(cluster string, inner Request) (Request, error) {
	switch inner.Kind {
	case KindAPIServer, KindAPIServerTCP, KindTCP, KindHubAPIServer:
	default:
		return Request{}, fmt.Errorf("%w: %s cannot be forwarded", ErrMalformed, inner.Kind)
	}
	addr := cluster + "/" + strconv.Itoa(int(inner.Kind))
	if inner.Kind == KindTCP {
		addr += "/" + inner.Address
	}
	r := Request{Kind: KindForward, Address: addr, Timeout: inner.Timeout, RequestID: inner.RequestID}
	if err := r.Validate(); err != nil {
		return Request{}, err
	}
	return r, nil
}

// Forwarded unwraps a KindForward request into its cluster and the inner
// request, validated.
func (r Request) Forwarded() (cluster string, inner Request, err error) {
	if r.Kind != KindForward {
		return "", Request{}, fmt.Errorf("%w: %s is not a forward", ErrMalformed, r.Kind)
	}
	if len(r.Address) > MaxAddressLen {
		return "", Request{}, fmt.Errorf("%w: forward address is %d bytes, more than %d", ErrMalformed, len(r.Address), MaxAddressLen)
	}
	parts := strings.SplitN(r.Address, "/", 3)
	if len(parts) < 2 || parts[0] == "" || len(parts[0]) > maxClusterLen {
		return "", Request{}, fmt.Errorf("%w: forward address %q is not CLUSTER/KIND[/ADDRESS]", ErrMalformed, r.Address)
	}
	k, err := strconv.ParseUint(parts[1], 10, 8)
	if err != nil {
		return "", Request{}, fmt.Errorf("%w: forward address %q: inner kind: %v", ErrMalformed, r.Address, err)
	}
	inner = Request{Kind: Kind(k), Timeout: r.Timeout, RequestID: r.RequestID}
	if len(parts) == 3 {
		inner.Address = parts[2]
	}
	switch inner.Kind {
	case KindAPIServer, KindAPIServerTCP, KindTCP, KindHubAPIServer:
	default:
		return "", Request{}, fmt.Errorf("%w: %s cannot be forwarded", ErrMalformed, inner.Kind)
	}
	if err := inner.Validate(); err != nil {
		return "", Request{}, err
	}
	return parts[0], inner, nil
}
