package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"backhaul.io/backhaul/test/harness"
)

// dialFunc is all that distinguishes one system from another: the load
// code above it is identical for every row.
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// newClient returns an HTTP/1.1 client with no proxy and no compression
// whose connections come from dial.
func newClient(dial dialFunc, keepAlive bool, maxConns int) *http.Client {
	t := &http.Transport{
		Proxy:               nil,
		DialContext:         dial,
		DisableKeepAlives:   !keepAlive,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		MaxIdleConns:        max(maxConns, 2),
		MaxIdleConnsPerHost: max(maxConns, 2),
		MaxConnsPerHost:     maxConns,
		IdleConnTimeout:     time.Minute,
		WriteBufferSize:     32 << 10,
		ReadBufferSize:      32 << 10,
	}
	return &http.Client{Transport: t, Timeout: 2 * time.Minute}
}

// get does one request and drains the body, which returns a kept-alive
// connection to the pool. It returns the body's length.
func get(ctx context.Context, c *http.Client, url string, buf []byte) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
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

// sequential issues n GETs one at a time and returns each one's latency.
func sequential(ctx context.Context, c *http.Client, url string, n int) ([]time.Duration, error) {
	buf := make([]byte, 32<<10)
	out := make([]time.Duration, 0, n)
	for i := range n {
		start := time.Now()
		if _, err := get(ctx, c, url, buf); err != nil {
			return nil, fmt.Errorf("request %d: %w", i, err)
		}
		out = append(out, time.Since(start))
	}
	return out, nil
}

// concurrent runs workers that GET url back to back for d on their own
// kept-alive connections and returns how many requests completed and how
// long they took.
func concurrent(ctx context.Context, c *http.Client, url string, workers int, d time.Duration) (int64, time.Duration, error) {
	// Open every connection before the clock starts.
	if err := harness.FanOut(ctx, workers, func(ctx context.Context, buf []byte) error {
		for range 5 {
			if _, err := get(ctx, c, url, buf); err != nil {
				return fmt.Errorf("warm-up: %w", err)
			}
		}
		return nil
	}); err != nil {
		return 0, 0, err
	}
	var done atomic.Int64
	start := time.Now()
	deadline := start.Add(d)
	err := harness.FanOut(ctx, workers, func(ctx context.Context, buf []byte) error {
		for time.Now().Before(deadline) {
			if _, err := get(ctx, c, url, buf); err != nil {
				return err
			}
			done.Add(1)
		}
		return nil
	})
	if err != nil {
		return 0, 0, err
	}
	return done.Load(), time.Since(start), nil
}

// download fetches url once on a new connection and returns bytes per
// second.
func download(ctx context.Context, dial dialFunc, url string, want int64) (float64, error) {
	c := newClient(dial, false, 1)
	defer c.CloseIdleConnections()
	buf := make([]byte, 256<<10)
	start := time.Now()
	n, err := get(ctx, c, url, buf)
	if err != nil {
		return 0, err
	}
	if n != want {
		return 0, fmt.Errorf("GET %s: got %d bytes, want %d", url, n, want)
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// p50 is the median latency (nearest rank).
func p50(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[max((len(s)+1)/2-1, 0)]
}
