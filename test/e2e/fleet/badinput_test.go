package fleet

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/test/harness"
	"backhaul.io/backhaul/tunnel"
)

// hubGauge reads one unlabelled gauge from the hub's /metrics.
func (e *environment) hubGauge(t *testing.T, name string) float64 {
	t.Helper()
	resp, err := http.Get(e.hub.AdminURL + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			require.NoError(t, err)
			return v
		}
	}
	t.Fatalf("metric %s not found", name)
	return 0
}

func hubRSS(t *testing.T, pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	require.NoError(t, err)
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "VmRSS:"))
		}
	}
	return "?"
}

// tlsDial opens a TLS connection to the hub's listener.
func (e *environment) tlsDial(t *testing.T, cert *tls.Certificate) *tls.Conn {
	t.Helper()
	cfg := e.hub.TLSConfig()
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", strings.TrimPrefix(e.hub.URL, "https://"), cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// closedWithin says whether the peer closed c within d (reading and
// discarding whatever it sends first).
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	ne, timeout := err.(net.Error)
	return !(timeout && ne.Timeout())
}

// TestBadInput: oversized and slow headers, garbage after a websocket
// upgrade: each gets a clear answer or a closed connection, and the hub
// keeps serving others with its goroutines back at their baseline.
func TestBadInput(t *testing.T) {
	e := requireEnv(t)
	admin := e.tokens["fleet-admin"]
	stillServing := func(t *testing.T) {
		t.Helper()
		code, body := e.gatewayDo(t, http.MethodGet, "/clusters/f1/api/v1/namespaces/default", admin, nil, "")
		require.Equal(t, http.StatusOK, code, body)
	}
	baseGoroutines := e.hubGauge(t, "go_goroutines")
	t.Logf("hub before: %v goroutines, RSS %s", baseGoroutines, hubRSS(t, e.hub.Process().PID()))

	t.Run("oversized headers", func(t *testing.T) {
		for _, path := range []string{tunnel.Path, "/clusters/f1/api", identity.PathEnroll} {
			c := e.tlsDial(t, nil)
			_, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: hub\r\nX-Big: %s\r\n\r\n", path, strings.Repeat("a", 256<<10))
			// The hub may answer and close before it has read it all.
			_ = err
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			require.NoError(t, err, path)
			assert.Contains(t, line, "431", path)
		}
		stillServing(t)
	})

	t.Run("slow headers", func(t *testing.T) {
		// 50 connections trickle a header byte a second, slowloris style.
		// The hub's read-header deadline (10 s) closes every one.
		const n = 50
		conns := make([]*tls.Conn, n)
		for i := range conns {
			conns[i] = e.tlsDial(t, nil)
			_, err := conns[i].Write([]byte("GET /v1/tunnel HTTP/1.1\r\nHost: hub\r\n"))
			require.NoError(t, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var wg sync.WaitGroup
		for _, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ctx.Err() == nil; i++ {
					if _, err := c.Write([]byte("X")); err != nil {
						return
					}
					select {
					case <-ctx.Done():
					case <-time.After(time.Second):
					}
				}
			}()
		}
		stillServing(t) // while they trickle
		closed := 0
		for _, c := range conns {
			if closedWithin(c, 30*time.Second) {
				closed++
			}
		}
		cancel()
		wg.Wait()
		assert.Equal(t, n, closed, "every slow client is cut off")
		stillServing(t)
	})

	t.Run("garbage after the upgrade", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		tok := e.addCluster(t, "x5")
		csr, key := newCSR(t, "x")
		r := e.enroll(t, identity.PathEnroll, "x5", tok, nil, csr)
		require.Equal(t, http.StatusOK, r.code, r.body)
		cert, err := tls.X509KeyPair([]byte(r.resp.Certificate), key)
		require.NoError(t, err)

		for name, junk := range map[string]func() []byte{
			// Not websocket frames at all.
			"random bytes": func() []byte { b := make([]byte, 4096); _, _ = rand.Read(b); return b },
			// A well-formed masked binary frame whose payload is no yamux.
			"websocket frame of junk": func() []byte {
				payload := []byte("this is not a yamux header, not at all")
				f := []byte{0x82, 0x80 | byte(len(payload)), 1, 2, 3, 4}
				for i, b := range payload {
					f = append(f, b^[]byte{1, 2, 3, 4}[i%4])
				}
				return f
			},
		} {
			c := e.tlsDial(t, &cert)
			_, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: hub\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
				"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: %s\r\n%s: x5\r\n\r\n",
				tunnel.Path, tunnel.Subprotocol, tunnel.HeaderCluster)
			require.NoError(t, err)
			br := bufio.NewReader(c)
			_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
			status, err := br.ReadString('\n')
			require.NoError(t, err)
			require.Contains(t, status, "101", name)
			_, _ = c.Write(junk())
			assert.True(t, closedWithin(c, 30*time.Second), "%s: the hub closes the session", name)
		}
		require.NoError(t, harness.WaitFor(ctx, 10*time.Second, 200*time.Millisecond, func() error {
			code, body := e.gatewayDo(t, http.MethodGet, "/clusters/x5/version", admin, nil, "")
			if code != http.StatusServiceUnavailable {
				return fmt.Errorf("x5 still has a session: %d %s", code, body)
			}
			return nil
		}))
		stillServing(t)
	})

	// Every refused or cut-off connection has let go of its goroutines.
	require.NoError(t, harness.WaitFor(context.Background(), 30*time.Second, 500*time.Millisecond, func() error {
		if g := e.hubGauge(t, "go_goroutines"); g > baseGoroutines+20 {
			return fmt.Errorf("hub has %v goroutines, %v before", g, baseGoroutines)
		}
		return nil
	}))
	t.Logf("hub after: %v goroutines, RSS %s", e.hubGauge(t, "go_goroutines"), hubRSS(t, e.hub.Process().PID()))
}
