package frontend

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/google/uuid"

	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/tunnel"
)

// classify turns a failure to carry a stream to cluster name into the
// status the caller gets, the errors_total reason and the message.
func classify(name string, err error) (code int, reason, msg string) {
	var de *tunnel.DialError
	switch {
	case errors.As(err, &de):
		return de.Code.HTTPStatus(), de.Code.String(), fmt.Sprintf("cluster %s: %s", name, de.Message)
	case errors.Is(err, session.ErrNotConnected), errors.Is(err, tunnel.ErrSessionClosed):
		return http.StatusServiceUnavailable, session.ReasonNotConnected, fmt.Sprintf("cluster %s is not connected", name)
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout, session.ReasonTimeout, fmt.Sprintf("cluster %s: timed out", name)
	case errors.Is(err, context.Canceled):
		return 499, session.ReasonCanceled, "request canceled"
	default:
		return http.StatusBadGateway, session.ReasonBadGateway, fmt.Sprintf("cluster %s: %v", name, err)
	}
}

// newRequestID names a request in the hub's log and audit log and,
// through the Backhaul-Request-Id and Audit-ID headers, in the agent's
// and the member's audit log. A random UUID, as kube-apiserver makes its
// own audit ids: tools that read audit logs expect that shape.
func newRequestID() string { return uuid.NewString() }

// statusRecorder notes the response code class for metrics; it passes
// Flush and Hijack through (watches and upgrades need them).
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

func (s *statusRecorder) class() string {
	if s.code == 0 {
		return "none"
	}
	return fmt.Sprintf("%dxx", s.code/100)
}

// retryAfter tells the caller when to try again (whole seconds, at least
// one) — and, on a new connection, since behind a load balancer that
// reaches another replica; a zero d says nothing.
func retryAfter(w http.ResponseWriter, d time.Duration) {
	if d > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(max(1, int(d/time.Second))))
		w.Header().Set("Connection", "close")
	}
}
