package main

import (
	"context"
	"fmt"
	"net"
	"time"
)

// Targets of the CONNECT figures.
const (
	// targetConnectP50 is the whole setup plus one exchange, not what the
	// proxy adds: a caller pays it on every new connection.
	targetConnectP50 = time.Millisecond
	// targetConnectShare is the least share of direct TCP throughput one
	// CONNECT tunnel should carry.
	targetConnectShare = 0.60
)

// benchConnect measures the hub's CONNECT front end (the L4 path kubectl's
// proxy-url and a kube-apiserver egress selector take) against direct
// loopback TCP to the same origin, with the same client code on both sides.
func benchConnect(ctx context.Context, o *options, dir string, t *table) {
	figSetup := "CONNECT setup + GET p50 / p99"
	figDL := fmt.Sprintf("CONNECT %d MiB download, median of %d", o.downloadBytes>>20, o.downloads)

	rig, err := startConnectRig(ctx, dir, o.downloadBytes)
	if err != nil {
		for _, f := range []string{figSetup, figDL} {
			t.add(row{Figure: f, Err: fmt.Errorf("start hub and agent: %w", err)})
		}
		return
	}
	defer rig.close()

	dials := [2]dialFunc{
		func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", rig.origin)
		},
		rig.dial,
	}
	small := "http://" + rig.origin + "/small"
	big := "http://" + rig.origin + "/big"

	var setup, dl writeRatio
	var handshake string // p50 / p99 of the CONNECT exchange alone
	progress("connect: %d sequential connections, each set up and used for one GET, direct and through CONNECT", o.connectRequests)
	if runs, err := interleaved(ctx, small, o.connectRequests, false, dials, &setup); err != nil {
		t.add(row{Figure: figSetup, Err: err})
	} else {
		t.add(latencyCeilingRow(figSetup, runs[0], runs[1], targetConnectP50))
		// The warm-up's handshakes come first; keep the measured ones.
		hs := rig.takeHandshakes()
		p50, p99 := percentiles(hs[max(len(hs)-len(runs[1]), 0):])
		handshake = fmt.Sprintf("%s / %s", fmtDur(p50), fmtDur(p99))
	}
	progress("connect: %d MiB downloads", o.downloadBytes>>20)
	t.add(profiled(o, "connect-download", func() row {
		mbps, err := downloads(ctx, big, o.downloadBytes, o.downloads, dials, &dl)
		if err != nil {
			return row{Figure: figDL, Err: err}
		}
		return rateShareRow(figDL, "MB/s", mbps[0], mbps[1], targetConnectShare)
	}))

	t.note("CONNECT: backhaul dials the in-process hub's CONNECT front end (plain TCP, Proxy-Authorization: Bearer),")
	t.note("  whose stream crosses the agent's TLS websocket tunnel to the member API server address, here the same")
	t.note("  plain HTTP origin that direct dials; each connection then carries GET /small (setup) or GET /big.")
	if handshake != "" {
		t.note("  Of the setup, TCP to the hub, CONNECT and its 200 alone took p50 / p99 %s.", handshake)
	}
	t.note("  write(2) calls in this process per connection, direct / backhaul: %s; per MiB downloaded: %s", setup, dl)

	// As for the tunnel figures: every client has closed its connections,
	// so the agent's session should be left with no streams.
	time.Sleep(200 * time.Millisecond)
	if sess, err := rig.hub.Sessions().Get(connectCluster); err != nil {
		t.note("warning: the hub lost the agent's session during the CONNECT runs: %v", err)
	} else if n := sess.Info().Streams; n > 0 {
		t.note("warning: the hub's session to the agent still holds %d streams after every CONNECT closed", n)
	}
}
