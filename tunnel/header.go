package tunnel

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// Request is what the opener of a stream asks for.
type Request struct {
	Kind Kind
	// Address is host:port for KindTCP and empty for every other kind.
	Address string
	// Timeout is the dial budget (for KindDrain, the grace period); zero
	// lets the acceptor choose. It travels
	// as a duration, not a point in time, so clock skew between hub and
	// agent does not matter. Millisecond resolution, at most ~49 days.
	Timeout time.Duration
	// RequestID ties logs on both sides together.
	RequestID string
}

// Validate reports whether r can be put on the wire and served.
func (r Request) Validate() error {
	switch r.Kind {
	case KindAPIServer, KindAPIServerTCP, KindDrain, KindHubAPIServer:
		if r.Address != "" {
			return fmt.Errorf("%w: %s request carries an address", ErrMalformed, r.Kind)
		}
	case KindTCP:
		if len(r.Address) > MaxAddressLen {
			return fmt.Errorf("%w: address is %d bytes, more than %d", ErrMalformed, len(r.Address), MaxAddressLen)
		}
		host, port, err := net.SplitHostPort(r.Address)
		if err != nil || host == "" {
			return fmt.Errorf("%w: address %q is not host:port", ErrMalformed, r.Address)
		}
		if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
			return fmt.Errorf("%w: address %q has a bad port", ErrMalformed, r.Address)
		}
	case KindForward:
		if _, _, err := r.Forwarded(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w: unknown kind %d", ErrMalformed, uint8(r.Kind))
	}
	if len(r.RequestID) > MaxRequestIDLen {
		return fmt.Errorf("%w: request id is %d bytes, more than %d", ErrMalformed, len(r.RequestID), MaxRequestIDLen)
	}
	if !printable(r.RequestID) || !printable(r.Address) {
		return fmt.Errorf("%w: non-printable bytes in request", ErrMalformed)
	}
	if r.Timeout < 0 || r.Timeout/time.Millisecond > 1<<32-1 {
		return fmt.Errorf("%w: timeout %s out of range", ErrMalformed, r.Timeout)
	}
	return nil
}

// MarshalBinary encodes r in the layout given in the package doc.
func (r Request) MarshalBinary() ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	b := make([]byte, requestFixedLen, requestFixedLen+len(r.RequestID)+len(r.Address))
	b[0] = Version
	b[1] = byte(r.Kind)
	b[2] = byte(len(r.RequestID))
	b[3] = byte(len(r.Address))
	binary.BigEndian.PutUint32(b[4:8], uint32(r.Timeout/time.Millisecond))
	b = append(b, r.RequestID...)
	b = append(b, r.Address...)
	return b, nil
}

// ReadRequest reads and validates one request from r. It never reads more
// than MaxRequestLen bytes, whatever the peer sends.
func ReadRequest(r io.Reader) (Request, error) {
	var fixed [requestFixedLen]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return Request{}, fmt.Errorf("read stream request: %w", err)
	}
	if fixed[0] != Version {
		return Request{}, fmt.Errorf("%w: stream request version %d, want %d", ErrVersion, fixed[0], Version)
	}
	idLen, addrLen := int(fixed[2]), int(fixed[3])
	if idLen > MaxRequestIDLen {
		return Request{}, fmt.Errorf("%w: request id length %d exceeds %d", ErrMalformed, idLen, MaxRequestIDLen)
	}
	rest := make([]byte, idLen+addrLen)
	if _, err := io.ReadFull(r, rest); err != nil {
		return Request{}, fmt.Errorf("read stream request body: %w", err)
	}
	req := Request{
		Kind:      Kind(fixed[1]),
		Timeout:   time.Duration(binary.BigEndian.Uint32(fixed[4:8])) * time.Millisecond,
		RequestID: string(rest[:idLen]),
		Address:   string(rest[idLen:]),
	}
	if err := req.Validate(); err != nil {
		return Request{}, err
	}
	return req, nil
}

// Reply is the acceptor's answer, sent before any payload.
type Reply struct {
	Code    Code
	Message string
}

// MarshalBinary encodes the reply; an over-long message is cut, not refused,
// because a reason must always reach the opener.
func (r Reply) MarshalBinary() ([]byte, error) {
	if r.Code > maxCode {
		return nil, fmt.Errorf("%w: unknown code %d", ErrMalformed, uint8(r.Code))
	}
	msg := r.Message
	if len(msg) > MaxMessageLen {
		msg = msg[:MaxMessageLen]
	}
	b := make([]byte, replyFixedLen, replyFixedLen+len(msg))
	b[0] = Version
	b[1] = byte(r.Code)
	binary.BigEndian.PutUint16(b[2:4], uint16(len(msg)))
	return append(b, msg...), nil
}

// ReadReply reads one reply from r, reading at most MaxReplyLen bytes.
func ReadReply(r io.Reader) (Reply, error) {
	var fixed [replyFixedLen]byte
	if _, err := io.ReadFull(r, fixed[:]); err != nil {
		return Reply{}, fmt.Errorf("read stream reply: %w", err)
	}
	if fixed[0] != Version {
		return Reply{}, fmt.Errorf("%w: stream reply version %d, want %d", ErrVersion, fixed[0], Version)
	}
	code := Code(fixed[1])
	if code > maxCode {
		return Reply{}, fmt.Errorf("%w: unknown reply code %d", ErrMalformed, fixed[1])
	}
	n := int(binary.BigEndian.Uint16(fixed[2:4]))
	if n > MaxMessageLen {
		return Reply{}, fmt.Errorf("%w: reply message length %d exceeds %d", ErrMalformed, n, MaxMessageLen)
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		return Reply{}, fmt.Errorf("read stream reply message: %w", err)
	}
	return Reply{Code: code, Message: string(msg)}, nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}
