package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// copyPool holds the buffers of pipes: large enough that a bulk transfer
// crosses the tunnel in few frames.
var copyPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// Pipe copies both ways between a and b, passing half-closes on, and
// returns when both directions are done or ctx ends; it closes both.
func Pipe(ctx context.Context, a, b net.Conn) {
	stop := context.AfterFunc(ctx, func() { _ = a.Close(); _ = b.Close() })
	defer stop()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); copyHalf(a, b) }()
	go func() { defer wg.Done(); copyHalf(b, a) }()
	wg.Wait()
	_ = a.Close()
	_ = b.Close()
}

// copyHalf copies src to dst until src ends, then half-closes dst.
func copyHalf(dst, src net.Conn) {
	bp := copyPool.Get().(*[]byte)
	defer copyPool.Put(bp)
	// The wrappers hide ReadFrom/WriteTo so the large buffer is used:
	// 32 KiB copies mean many small tunnel frames.
	_, _ = io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *bp)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	} else {
		// A yamux stream's Close is a half-close: it sends FIN and
		// can still read.
		_ = dst.Close()
	}
}

// EarlyStream is a stream opened early ([Session.OpenEarly]), possibly
// wrapped: AwaitReply returns the peer's refusal, if any.
type EarlyStream interface {
	net.Conn
	AwaitReply() error
}

// Relay serves the incoming stream by joining it to out, a stream opened
// early for it on another session (a hub replica forwarding to its agent):
// the opener's bytes go on to out as they come, before out's reply, and
// out's reply becomes this stream's when it comes, so relaying costs no
// round trip of its own. A refusal is passed on as it is; out failing
// otherwise (its session ended) is answered CodeUnavailable, as when this
// side holds no session at all: an opener sends early only what it may
// send again elsewhere. Relay returns when both directions are done or ctx
// ends, and closes both.
func (in *Incoming) Relay(ctx context.Context, out EarlyStream) {
	stop := context.AfterFunc(ctx, func() { _ = in.stream.Close(); _ = out.Close() })
	defer stop()
	up := make(chan struct{})
	go func() { defer close(up); copyHalf(out, in.stream) }()
	if err := out.AwaitReply(); err != nil {
		code, msg := CodeUnavailable, err.Error()
		var de *DialError
		if errors.As(err, &de) {
			code, msg = de.Code, de.Message
		}
		_ = in.Reject(code, msg)
		// What else the opener sends is not wanted: end the copy now.
		_ = in.stream.SetReadDeadline(time.Unix(1, 0))
		<-up
		_ = out.Close()
		return
	}
	b, _ := Reply{Code: CodeOK}.MarshalBinary()
	if _, err := in.stream.Write(b); err == nil {
		copyHalf(in.stream, out)
	} else {
		_ = in.stream.SetReadDeadline(time.Unix(1, 0))
	}
	<-up
	_ = in.stream.Close()
	_ = out.Close()
}
