package main

import (
	"context"
	"fmt"
	"net"
	"sync"
	"time"

	"backhaul.io/backhaul/tunnel"
)

// The stream-window figures (issue 14, item 4): what a smaller per-stream
// window costs one stream's download, on loopback and over links with a
// round-trip time, against a direct TCP connection over the same link.
// One stream moves at most one window per round trip, and an unread
// stream pins one window of hub memory: these rows are the trade.

// windowRTTs are the emulated round trips: loopback, a region, across a
// continent.
var windowRTTs = []time.Duration{0, 20 * time.Millisecond, 80 * time.Millisecond}

// windowSizes are the old default, the new one and yamux's floor.
var windowSizes = []uint32{16 << 20, 1 << 20, 256 << 10}

func benchWindow(ctx context.Context, o *options, dir string, t *table) {
	size := int64(64 << 20)
	if o.quick {
		size = 16 << 20
	}
	for _, rtt := range windowRTTs {
		oneWay := rtt / 2
		runs := 1
		if rtt == 0 {
			runs = max(o.downloads, 1)
		}
		direct, err := directOverLink(ctx, dir, size, oneWay, runs)
		for _, w := range windowSizes {
			fig := fmt.Sprintf("window %s, RTT %s: %d MiB download", tunnel.Window(w), rtt, size>>20)
			if err != nil {
				t.add(row{Figure: fig, Err: err})
				continue
			}
			progress("tunnel window %s over a %s round trip", tunnel.Window(w), rtt)
			mbps, err := tunnelOverLink(ctx, dir, size, rigLink{window: w, oneWay: oneWay}, runs)
			if err != nil {
				t.add(row{Figure: fig, Err: err})
				continue
			}
			r := rateRow(fig, "MB/s", direct, mbps, 0)
			if rtt > 0 {
				r.Target = fmt.Sprintf("≤%s (window/RTT)", fmtRate(float64(w)/rtt.Seconds()/1e6, "MB/s"))
			}
			t.add(r)
		}
	}
	t.note("window rows: direct is one TCP connection to the origin through the same delaying relay; backhaul one")
	t.note("  stream through the tunnel rig with that window on hub and agent; the target column is the window's ceiling.")
}

// directOverLink is the median MB/s of runs downloads of size bytes from
// an origin reached over TCP through a relay that delays each way by
// oneWay.
func directOverLink(ctx context.Context, dir string, size int64, oneWay time.Duration, runs int) (float64, error) {
	origin, stop, err := startOrigin(size)
	if err != nil {
		return 0, err
	}
	defer stop()
	addr := origin
	if oneWay > 0 {
		relay, stopRelay, err := startDelayRelay(origin, oneWay)
		if err != nil {
			return 0, err
		}
		defer stopRelay()
		addr = relay
	}
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
	return medianDownload(ctx, "http://"+origin+"/big", size, runs, dial)
}

// tunnelOverLink is directOverLink through a tunnel rig on link.
func tunnelOverLink(ctx context.Context, dir string, size int64, link rigLink, runs int) (float64, error) {
	rig, err := startLinkRig(ctx, dir, size, link)
	if err != nil {
		return 0, fmt.Errorf("start tunnel: %w", err)
	}
	defer rig.close()
	dial := func(ctx context.Context, _, _ string) (net.Conn, error) {
		return rig.hub.Open(ctx, tunnel.Request{Kind: tunnel.KindTCP, Address: rig.origin})
	}
	return medianDownload(ctx, "http://"+rig.origin+"/big", size, runs, dial)
}

func medianDownload(ctx context.Context, url string, size int64, runs int, dial dialFunc) (float64, error) {
	var rates []float64
	for range runs {
		c := newClient(clientConfig{dial: dial, keepAlive: false})
		bps, err := download(ctx, c, url, size)
		c.CloseIdleConnections()
		if err != nil {
			return 0, err
		}
		rates = append(rates, bps/1e6)
	}
	return median(rates), nil
}

// startDelayRelay listens on loopback and relays each connection to
// target, delivering every chunk oneWay after it was read, in each
// direction: a link with that latency and no bandwidth limit of its own.
func startDelayRelay(target string, oneWay time.Duration) (addr string, stop func(), _ error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("relay: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { relay(ctx, c, target, oneWay) })
		}
	})
	return ln.Addr().String(), func() {
		cancel()
		_ = ln.Close()
		wg.Wait()
	}, nil
}

func relay(ctx context.Context, a net.Conn, target string, oneWay time.Duration) {
	var d net.Dialer
	b, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		_ = a.Close()
		return
	}
	stop := context.AfterFunc(ctx, func() { _ = a.Close(); _ = b.Close() })
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { delayed(b, a, oneWay) })
	wg.Go(func() { delayed(a, b, oneWay) })
	wg.Wait()
	_ = a.Close()
	_ = b.Close()
}

// delayed copies src to dst, each chunk oneWay after it arrived; the queue
// holds what is in flight on the link.
func delayed(dst, src net.Conn, oneWay time.Duration) {
	type chunk struct {
		b  []byte
		at time.Time
	}
	q := make(chan chunk, 1<<14)
	go func() {
		defer close(q)
		for {
			buf := make([]byte, 64<<10)
			n, err := src.Read(buf)
			if n > 0 {
				q <- chunk{buf[:n], time.Now().Add(oneWay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range q {
		time.Sleep(time.Until(c.at))
		if _, err := dst.Write(c.b); err != nil {
			_ = src.Close()
			for range q { // let the reader finish
			}
			return
		}
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}
