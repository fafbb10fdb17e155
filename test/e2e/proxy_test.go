package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/test/harness"
)

// An IDC that only has an egress proxy: the agent reaches the hub through
// HTTPS_PROXY with CONNECT, and calls through the hub work.
func TestAgentDialsThroughEgressProxy(t *testing.T) {
	e := requireEnv(t)
	ctx := context.Background()
	m := e.members["m1"]

	// The proxy listens on the root side of m1's veth, as an egress proxy
	// in the site's network would.
	ln, err := net.Listen("tcp", net.JoinHostPort(m.Netns.HostIP.String(), "0"))
	require.NoError(t, err)
	proxy := &connectProxy{}
	pctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() { defer wg.Done(); proxy.serve(pctx, ln, &wg) }()

	// Replace m1's agent with one that must use the proxy.
	e.agent("m1").Stop()
	t.Cleanup(func() {
		e.agent("m1").Stop()
		_ = e.restartAgent(context.Background(), "m1")
		_ = e.waitReachable(context.Background(), "m1", 30*time.Second)
	})
	p, err := harness.StartAgent(ctx, e.hub, m, harness.AgentConfig{
		Binary: e.agentBin, Cluster: "m1",
		Env: []string{"HTTPS_PROXY=http://" + ln.Addr().String(), "NO_PROXY=example.invalid"},
	})
	require.NoError(t, err)
	e.mu.Lock()
	e.agents["m1"] = p
	e.mu.Unlock()

	require.NoError(t, e.waitReachable(ctx, "m1", 30*time.Second), p.Tail(20))
	assert.GreaterOrEqual(t, proxy.connects.Load(), int64(1), "the agent did not go through the proxy")
	assert.Equal(t, fmt.Sprintf("%s:%d", m.Netns.HostIP, e.hub.Port), proxy.lastTarget())
}

// connectProxy is a minimal HTTP CONNECT proxy for the test.
type connectProxy struct {
	connects atomic.Int64
	mu       sync.Mutex
	target   string
}

func (p *connectProxy) lastTarget() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.target
}

func (p *connectProxy) serve(ctx context.Context, ln net.Listener, wg *sync.WaitGroup) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer c.Close()
			stop := context.AfterFunc(ctx, func() { c.Close() })
			defer stop()
			br := bufio.NewReader(c)
			req, err := http.ReadRequest(br)
			if err != nil || req.Method != http.MethodConnect {
				return
			}
			up, err := net.DialTimeout("tcp", req.Host, 5*time.Second)
			if err != nil {
				fmt.Fprintf(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
				return
			}
			defer up.Close()
			p.connects.Add(1)
			p.mu.Lock()
			p.target = req.Host
			p.mu.Unlock()
			fmt.Fprintf(c, "HTTP/1.1 200 Connection established\r\n\r\n")
			go func() { _, _ = io.Copy(up, br); up.Close() }()
			_, _ = io.Copy(c, up)
		}()
	}
}
