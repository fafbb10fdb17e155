package harness

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Connect asks the HTTP CONNECT proxy at the other end of c for target,
// with proxyAuth as Proxy-Authorization (empty: none), and returns the
// tunnel once the proxy answered 200. ctx bounds the exchange. On an error
// c is closed.
func Connect(ctx context.Context, c net.Conn, target, proxyAuth string) (_ net.Conn, err error) {
	defer func() {
		if err != nil {
			_ = c.Close()
		}
	}()
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	req := "CONNECT " + target + " HTTP/1.1\r\nHost: " + target + "\r\n"
	if proxyAuth != "" {
		req += "Proxy-Authorization: " + proxyAuth + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		return nil, fmt.Errorf("send CONNECT: %w", err)
	}
	br := bufio.NewReaderSize(c, 512)
	resp, err := http.ReadResponse(br, &http.Request{Method: http.MethodConnect})
	if err != nil {
		return nil, fmt.Errorf("read CONNECT response: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("CONNECT %s: %s: %s", target, resp.Status, strings.TrimSpace(string(msg)))
	}
	if !stop() {
		return nil, ctx.Err()
	}
	if n := br.Buffered(); n > 0 {
		// The target spoke first and its bytes came with the 200.
		return &prefixedConn{Conn: c, r: io.MultiReader(io.LimitReader(br, int64(n)), c)}, nil
	}
	return c, nil
}

// prefixedConn reads what was buffered with the CONNECT response first.
type prefixedConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
