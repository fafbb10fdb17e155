package main

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"backhaul.io/backhaul/test/harness"
)

const (
	streamsNS   = "bench-streams"
	streamsPod  = "bench-pod"
	streamsNode = "bench-node"
	// streamsNodeIP is the test kubelet's address on the member namespace's
	// loopback (e2e uses 10.252.3.1 in its own namespace).
	streamsNodeIP = "10.252.90.1"
	// sourcePort is where the port-forward source listens, on the member
	// namespace's loopback, which is the pod's as the test kubelet sees it.
	sourcePort = 7001
)

// streamsEnv is what startStreams added to the member; stop removes
// whatever is set. The Node, namespace and Pod objects are not deleted:
// they live in the member's etcd, which goes with the member.
type streamsEnv struct {
	m       *harness.Member
	addr    bool // streamsNodeIP is on the namespace's lo
	kubelet *harness.Kubelet
	source  *harness.Process
}

func (e *streamsEnv) stop() {
	if e.source != nil {
		e.source.Stop()
	}
	if e.kubelet != nil {
		e.kubelet.Proc.Stop()
	}
	if e.addr {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if out, err := e.m.Netns.Command(ctx, "ip", "addr", "del", streamsNodeIP+"/32", "dev", "lo").CombinedOutput(); err != nil {
			progress("streams: remove %s from %s: %v: %s", streamsNodeIP, e.m.Netns.Name, err, out)
		}
	}
}

// startStreams runs the test kubelet and the port-forward source inside m's
// namespace and creates a Running Pod bound to the kubelet's Node, as the
// e2e suite does. The caller stops the returned env, error or not.
func startStreams(ctx context.Context, m *harness.Member, dir string) (*streamsEnv, error) {
	e := &streamsEnv{m: m}
	bin, err := harness.TestKubeletBinary(ctx)
	if err != nil {
		return e, err
	}
	if out, err := m.Netns.Command(ctx, "ip", "addr", "add", streamsNodeIP+"/32", "dev", "lo").CombinedOutput(); err != nil {
		return e, fmt.Errorf("node address: %w: %s", err, out)
	}
	e.addr = true
	if e.kubelet, err = harness.StartKubelet(ctx, bin, m.Netns, m.CA, m.CAFile, streamsNode, streamsNodeIP, filepath.Join(dir, "kubelet")); err != nil {
		return e, err
	}
	exe, err := os.Executable()
	if err != nil {
		return e, err
	}
	src := "127.0.0.1:" + strconv.Itoa(sourcePort)
	if e.source, err = harness.Start(ctx, "bench-source", dir, m.Netns.Command(context.Background(), exe, "-internal-source", src)); err != nil {
		return e, err
	}
	err = harness.WaitFor(ctx, 10*time.Second, 50*time.Millisecond, func() error {
		return m.Netns.Command(ctx, "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d", sourcePort)).Run()
	})
	if err != nil {
		return e, fmt.Errorf("port-forward source did not listen: %w\n%s", err, e.source.Tail(10))
	}
	if err := m.RegisterNode(ctx, e.kubelet); err != nil {
		return e, err
	}
	return e, m.RunningPod(ctx, streamsNS, streamsPod, streamsNode, []string{"app", "firehose"}, "")
}

// serveSource is the port-forward source, run inside the member's
// namespace: each connection sends an 8-byte big-endian count and gets that
// many bytes back, then the connection closes.
func serveSource(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go func() { <-ctx.Done(); _ = ln.Close() }()
	chunk := make([]byte, 256<<10)
	for i := range chunk {
		chunk[i] = byte(i)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		go func() {
			defer c.Close()
			var req [8]byte
			if _, err := io.ReadFull(c, req[:]); err != nil {
				return // a readiness probe, or a client gone
			}
			for left := int64(binary.BigEndian.Uint64(req[:])); left > 0; {
				n, err := c.Write(chunk[:min(left, int64(len(chunk)))])
				if err != nil {
					if !errors.Is(err, net.ErrClosed) {
						fmt.Fprintln(os.Stderr, "source:", err)
					}
					return
				}
				left -= int64(n)
			}
		}()
	}
}
