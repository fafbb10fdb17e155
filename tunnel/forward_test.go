package tunnel

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestForwardRoundTrip(t *testing.T) {
	for _, inner := range []Request{
		{Kind: KindAPIServer, RequestID: "r1", Timeout: time.Second},
		{Kind: KindAPIServerTCP},
		{Kind: KindHubAPIServer, RequestID: "hub"},
		{Kind: KindTCP, Address: "10.0.0.7:10250", RequestID: "r2"},
		{Kind: KindTCP, Address: "[fd00::7]:10250"},
	} {
		t.Run(inner.Kind.String()+inner.Address, func(t *testing.T) {
			r, err := Forward("edge-1", inner)
			require.NoError(t, err)
			b, err := r.MarshalBinary()
			require.NoError(t, err)
			back, err := ReadRequest(strings.NewReader(string(b)))
			require.NoError(t, err)
			cluster, got, err := back.Forwarded()
			require.NoError(t, err)
			assert.Equal(t, "edge-1", cluster)
			assert.Equal(t, inner, got)
		})
	}
}

func TestForwardRefuses(t *testing.T) {
	_, err := Forward("edge", Request{Kind: KindDrain})
	require.ErrorIs(t, err, ErrMalformed)
	_, err = Forward("edge", Request{Kind: KindTCP, Address: "no-port"})
	require.ErrorIs(t, err, ErrMalformed)
	_, err = Forward(strings.Repeat("a", 64), Request{Kind: KindAPIServer})
	require.ErrorIs(t, err, ErrMalformed)
	for _, addr := range []string{"", "edge", "/1", "edge/x", "edge/4", "edge/5/edge/1", "edge/1/10.0.0.1:80", "edge/2"} {
		_, _, err := Request{Kind: KindForward, Address: addr}.Forwarded()
		assert.ErrorIs(t, err, ErrMalformed, addr)
		assert.Error(t, Request{Kind: KindForward, Address: addr}.Validate(), addr)
	}
}
