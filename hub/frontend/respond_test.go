package frontend

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"testing"

	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/tunnel"
	"github.com/stretchr/testify/assert"
)

func TestClassify(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantCode   int
		wantReason string
		wantMsg    string
	}{
		{name: "refused", err: &tunnel.DialError{Code: tunnel.CodeRefused, Message: "connection refused"}, wantCode: 502, wantReason: "refused", wantMsg: "cluster alpha: connection refused"},
		{name: "timeout", err: &tunnel.DialError{Code: tunnel.CodeTimeout, Message: "i/o timeout"}, wantCode: 504, wantReason: "timeout"},
		{name: "not allowed", err: &tunnel.DialError{Code: tunnel.CodeNotAllowed, Message: "no"}, wantCode: 403, wantReason: "not_allowed"},
		{name: "unavailable", err: &tunnel.DialError{Code: tunnel.CodeUnavailable, Message: "draining"}, wantCode: 503, wantReason: "unavailable"},
		{name: "bad request", err: &tunnel.DialError{Code: tunnel.CodeBadRequest}, wantCode: 400, wantReason: "bad_request"},
		{name: "internal", err: &tunnel.DialError{Code: tunnel.CodeInternal}, wantCode: 502, wantReason: "internal"},
		{
			name:     "dial error wrapped as the transport does",
			err:      &url.Error{Op: "Get", URL: "http://alpha.cluster.backhaul/api", Err: &net.OpError{Op: "dial", Err: &session.ClusterError{Cluster: "alpha", Err: &tunnel.DialError{Code: tunnel.CodeNotAllowed, Message: "no"}}}},
			wantCode: 403, wantReason: "not_allowed",
		},
		{name: "not connected", err: &session.ClusterError{Cluster: "alpha", Err: session.ErrNotConnected}, wantCode: 503, wantReason: session.ReasonNotConnected, wantMsg: "cluster alpha is not connected"},
		{name: "session closed", err: fmt.Errorf("open: %w", tunnel.ErrSessionClosed), wantCode: 503, wantReason: session.ReasonNotConnected, wantMsg: "cluster alpha is not connected"},
		{name: "deadline", err: fmt.Errorf("dial: %w", context.DeadlineExceeded), wantCode: 504, wantReason: "timeout"},
		{name: "canceled", err: context.Canceled, wantCode: 499, wantReason: "canceled"},
		{name: "anything else", err: io.ErrUnexpectedEOF, wantCode: 502, wantReason: session.ReasonBadGateway},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, reason, msg := classify("alpha", tc.err)
			assert.Equal(t, tc.wantCode, code)
			assert.Equal(t, tc.wantReason, reason)
			if tc.wantMsg != "" {
				assert.Equal(t, tc.wantMsg, msg)
			}
			if tc.wantCode != 499 { // the caller itself gave up; nobody reads this
				assert.Contains(t, msg, "alpha", "the caller learns which cluster failed")
			}
		})
	}
}
