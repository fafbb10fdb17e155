package tunnel

import (
	"errors"
	"fmt"
	"net/http"
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
}

func (e *HandshakeError) Error() string {
	return fmt.Sprintf("tunnel handshake refused: %d %s: %s", e.StatusCode, http.StatusText(e.StatusCode), e.Reason)
}

// Permanent reports whether retrying with the same credentials and build can
// succeed: 401, 403 and 426 will not fix themselves, so callers back off long
// and log loudly rather than retry hot.
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
