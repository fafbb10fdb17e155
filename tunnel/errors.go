package tunnel

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

var (
	// ErrMalformed marks bytes off the wire that do not form a valid message.
	ErrMalformed = errors.New("malformed tunnel message")
	// ErrVersion marks a peer speaking another protocol version.
	ErrVersion = errors.New("unsupported tunnel protocol version")
	// ErrSessionClosed is returned by Open and Accept once the session ended.
	ErrSessionClosed = errors.New("tunnel session closed")
)

// DialError is the acceptor's refusal of a stream request. Front ends turn
// Code into the caller's HTTP status.
type DialError struct {
	Code    Code
	Message string
}

func (e *DialError) Error() string {
	if e.Message == "" {
		return "tunnel dial: " + e.Code.String()
	}
	return fmt.Sprintf("tunnel dial: %s: %s", e.Code, e.Message)
}

// HandshakeError is a refused websocket upgrade: the hub answered an HTTP
// status instead of 101.
type HandshakeError struct {
	StatusCode int
	Reason     string
	// RetryAfter is the hub's Retry-After, in seconds, on a 503 or 429
	// (a draining or overloaded replica): the least time to wait before
	// dialling again. Zero when absent or in another form; at most
	// MaxRetryAfter.
	RetryAfter time.Duration
}

// MaxRetryAfter caps a hub's Retry-After, so that a proxy answering
// nonsense cannot park an agent for days.
const MaxRetryAfter = time.Hour

func (e *HandshakeError) Error() string {
	msg := fmt.Sprintf("tunnel handshake refused: %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Reason)
	if e.RetryAfter > 0 {
		msg += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	return msg
}

// Permanent reports whether retrying with the same credentials and build can
// succeed: 401, 403 and 426 will not fix themselves, so callers back off long
// and log loudly rather than retry hot. 503 (a draining replica, a standby)
// and 429 pass.
func (e *HandshakeError) Permanent() bool {
	switch e.StatusCode {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusUpgradeRequired:
		return true
	}
	return false
}

// IsPermanent reports whether err carries a HandshakeError that is permanent.
func IsPermanent(err error) bool {
	var he *HandshakeError
	return errors.As(err, &he) && he.Permanent()
}

// retryAfter reads Retry-After off a refused upgrade. Only a 503 or 429
// with the delta-seconds form counts: that is what a hub replica sends, and
// an HTTP date would tie agents to the hub's clock.
func retryAfter(resp *http.Response) time.Duration {
	if resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusTooManyRequests {
		return 0
	}
	secs, err := strconv.ParseUint(strings.TrimSpace(resp.Header.Get("Retry-After")), 10, 32)
	if err != nil {
		return 0
	}
	return min(time.Duration(secs)*time.Second, MaxRetryAfter)
}
