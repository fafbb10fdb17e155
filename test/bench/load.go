package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"backhaul.io/backhaul/test/harness"
)

// dialFunc is what distinguishes a direct run from a tunnelled one: the load
// code above it is identical.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// clientConfig builds the one kind of HTTP client every measurement uses.
type clientConfig struct {
	dial      dialFunc    // nil: the transport's own dialler (TLS below it if https)
	tls       tlsSettings // for https URLs
	keepAlive bool
	// http2 lets the client negotiate HTTP/2 (as client-go does).
	http2    bool
	maxConns int
}

// newClient returns an HTTP/1.1 client (or HTTP/2 where c.http2 asks) with
// no proxy and no compression, so direct and tunnelled runs differ only in
// how a connection is made.
func newClient(c clientConfig) *http.Client {
	t := &http.Transport{
		Proxy:               nil,
		DisableKeepAlives:   !c.keepAlive,
		DisableCompression:  true,
		ForceAttemptHTTP2:   c.http2,
		MaxIdleConns:        max(c.maxConns, 2),
		MaxIdleConnsPerHost: max(c.maxConns, 2),
		IdleConnTimeout:     time.Minute,
		TLSClientConfig:     c.tls.config(),
		WriteBufferSize:     32 << 10,
		ReadBufferSize:      32 << 10,
	}
	if c.dial != nil {
		t.DialContext = c.dial
	}
	return &http.Client{Transport: t, Timeout: 2 * time.Minute}
}

// get does one request and drains the body, which returns a keep-alive
// connection to the pool. It returns the body length.
func get(ctx context.Context, c *http.Client, url string, header http.Header, buf []byte) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	n, err := io.CopyBuffer(io.Discard, resp.Body, buf)
	if err != nil {
		return n, fmt.Errorf("GET %s: read body: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return n, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return n, nil
}

// latencyRun is a sequential run of small GETs after a warm-up.
type latencyRun struct {
	URL    string
	Header http.Header
	Warmup int
	N      int
}

// sequential issues the run one request at a time and returns every
// request's latency. The same function runs in the root namespace and, for
// the apiserver's direct figure, in a child process inside a member's
// namespace.
func sequential(ctx context.Context, c *http.Client, r latencyRun) ([]time.Duration, error) {
	buf := make([]byte, 32<<10)
	for i := 0; i < r.Warmup; i++ {
		if _, err := get(ctx, c, r.URL, r.Header, buf); err != nil {
			return nil, fmt.Errorf("warm-up: %w", err)
		}
	}
	out := make([]time.Duration, 0, r.N)
	for i := 0; i < r.N; i++ {
		start := time.Now()
		if _, err := get(ctx, c, r.URL, r.Header, buf); err != nil {
			return nil, fmt.Errorf("request %d: %w", i, err)
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

// concurrent runs workers that GET url back to back for d and returns the
// completed requests per second. The first error stops every worker.
func concurrent(ctx context.Context, c *http.Client, url string, workers int, d time.Duration) (float64, error) {
	// Open every connection before the clock starts.
	if err := harness.FanOut(ctx, workers, func(ctx context.Context, buf []byte) error {
		for range 5 {
			if _, err := get(ctx, c, url, nil, buf); err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
		}
		return nil
	}); err != nil {
		return 0, err
	}
	var done atomic.Int64
	start := time.Now()
	deadline := start.Add(d)
	err := harness.FanOut(ctx, workers, func(ctx context.Context, buf []byte) error {
		for time.Now().Before(deadline) {
			if _, err := get(ctx, c, url, nil, buf); err != nil {
				return err
			}
			done.Add(1)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return float64(done.Load()) / time.Since(start).Seconds(), nil
}

// download fetches url once and returns bytes per second.
func download(ctx context.Context, c *http.Client, url string, want int64) (float64, error) {
	buf := make([]byte, 256<<10)
	start := time.Now()
	n, err := get(ctx, c, url, nil, buf)
	if err != nil {
		return 0, err
	}
	if n != want {
		return 0, fmt.Errorf("GET %s: got %d bytes, want %d", url, n, want)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// median returns the middle value of xs.
func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// percentiles returns p50 and p99 of ds (nearest rank).
func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := func(p float64) time.Duration {
		i := int(p*float64(len(s))+0.999999) - 1
		return s[min(max(i, 0), len(s)-1)]
	}
	return rank(0.50), rank(0.99)
}

// tlsSettings is the TLS a client trusts; it is JSON so a child process in a
// member's namespace gets the same settings.
type tlsSettings struct {
	CAPEM []byte `json:"caPEM,omitempty"`
}

func (t tlsSettings) config() *tls.Config {
	if len(t.CAPEM) == 0 {
		return nil
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(t.CAPEM)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}}
}
