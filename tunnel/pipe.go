package tunnel

import (
	"context"
	"io"
	"net"
	"sync"
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
	cp := func(dst, src net.Conn) {
		defer wg.Done()
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
	go cp(a, b)
	go cp(b, a)
	wg.Wait()
	_ = a.Close()
	_ = b.Close()
}
