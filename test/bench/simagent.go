package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"backhaul.io/backhaul/tunnel"
)

// simFleet is many agents in this process, each the agent's own outer
// loop (tunnel.Supervisor with one connection, tunnel.Dialer, the agent's
// default backoff, Retry-After honoured) dialling one load-balanced URL.
type simFleet struct {
	url   string
	tls   *tls.Config
	tcfg  *tunnel.Config
	start chan struct{} // closed: every agent dials at once

	connected atomic.Int64 // sessions up now, as the agents see them
	// allUp is when connected first reached allOf since the last
	// expectAll (unix nanoseconds, 0: not yet), stamped by the agent whose
	// session completed the set, so the bench's own polling delay is not
	// in it.
	allUp   atomic.Int64
	allOf   atomic.Int64
	dials   atomic.Int64 // upgrade attempts
	busy    atomic.Int64 // 503 answers with Retry-After
	refused atomic.Int64 // other HTTP answers
	failed  atomic.Int64 // no HTTP answer (refused, reset, timed out)
	lost    atomic.Int64 // sessions that ended under the agent

	wg sync.WaitGroup
}

// simAgentVersion is what the simulated agents announce.
const simAgentVersion = "bench-sim"

func newSimFleet(url string, tlsCfg *tls.Config) *simFleet {
	return &simFleet{url: url, tls: tlsCfg, tcfg: tunnel.DefaultConfig(), start: make(chan struct{})}
}

// add starts one agent for cluster; it dials once begin is called and
// runs until ctx ends.
func (f *simFleet) add(ctx context.Context, cluster, token string) {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+token)
	h.Set(tunnel.HeaderCluster, cluster)
	h.Set(tunnel.HeaderAgentVersion, simAgentVersion)
	// Only the supervisor's goroutine calls the hooks: no lock needed.
	sessions, lost := 0, false
	sup := &tunnel.Supervisor{
		Dialer:      &tunnel.Dialer{URL: f.url, TLSConfig: f.tls, Header: h, Proxy: noProxy, Config: f.tcfg},
		Backoff:     tunnel.DefaultBackoff(), // the agent's --backoff-base and --backoff-max
		Connections: 1,
		Handler:     serveSimStream,
		OnConnect:   func(*tunnel.Session) { f.dials.Add(1) },
		OnSessions: func(n int) {
			if up := f.connected.Add(int64(n - sessions)); up == f.allOf.Load() && n > sessions {
				f.allUp.CompareAndSwap(0, time.Now().UnixNano())
			}
			if n < sessions {
				f.lost.Add(1)
				lost = true // OnDisconnect follows for the same end
			}
			sessions = n
		},
		OnDisconnect: func(err error) {
			if lost {
				lost = false
				return
			}
			f.dials.Add(1)
			f.countRefusal(err)
		},
	}
	f.wg.Go(func() {
		select {
		case <-f.start:
		case <-ctx.Done():
			return
		}
		_ = sup.Run(ctx)
	})
}

func (f *simFleet) countRefusal(err error) {
	var he *tunnel.HandshakeError
	switch {
	case !errors.As(err, &he):
		f.failed.Add(1)
	case he.StatusCode == http.StatusServiceUnavailable && he.RetryAfter > 0:
		f.busy.Add(1)
	default:
		f.refused.Add(1)
	}
}

// expectAll starts watching for all n sessions to be up.
func (f *simFleet) expectAll(n int) {
	f.allOf.Store(int64(n))
	f.allUp.Store(0)
}

// allUpSince is how long after start every session was up (false: not
// yet).
func (f *simFleet) allUpSince(start time.Time) (time.Duration, bool) {
	at := f.allUp.Load()
	if at == 0 {
		return 0, false
	}
	return time.Unix(0, at).Sub(start), true
}

// begin releases every agent at once.
func (f *simFleet) begin() { close(f.start) }

// wait returns once every agent has stopped (after ctx ended).
func (f *simFleet) wait() { f.wg.Wait() }

// simCounts is what the agents saw, for differences between two moments.
type simCounts struct{ dials, busy, refused, failed, lost int64 }

func (f *simFleet) counts() simCounts {
	return simCounts{f.dials.Load(), f.busy.Load(), f.refused.Load(), f.failed.Load(), f.lost.Load()}
}

func (c simCounts) sub(d simCounts) simCounts {
	return simCounts{c.dials - d.dials, c.busy - d.busy, c.refused - d.refused, c.failed - d.failed, c.lost - d.lost}
}

// simResponse is the member API server's answer to the hub's probes.
func simResponse(path string) string {
	body, ctype := "ok", "text/plain; charset=utf-8"
	if path == "/version" {
		body, ctype = `{"major":"1","minor":"36","gitVersion":"v1.36.3"}`, "application/json"
	}
	return "HTTP/1.1 200 OK\r\nContent-Type: " + ctype + "\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

// serveSimStream answers what a hub replica asks an idle agent: its
// background probes of /readyz and /version, as the member's API server
// would, on a kept-alive connection. Anything else is refused.
func serveSimStream(_ context.Context, in *tunnel.Incoming) {
	if in.Request.Kind != tunnel.KindAPIServer {
		_ = in.Reject(tunnel.CodeNotAllowed, "simulated agent")
		return
	}
	c, err := in.Accept()
	if err != nil {
		return
	}
	defer c.Close()
	br := bufio.NewReaderSize(c, 1024)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		_, _ = io.Copy(io.Discard, req.Body)
		_ = req.Body.Close()
		if _, err := io.WriteString(c, simResponse(req.URL.Path)); err != nil {
			return
		}
	}
}
