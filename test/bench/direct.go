package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"syscall"
	"time"

	"backhaul.io/backhaul/test/harness"
)

// The member's firewall drops inbound connections, so every "direct"
// figure runs in a copy of this binary inside the member's namespace: the
// parent hands it a spec as JSON on stdin (so tokens stay out of the process
// list) and reads a JSON result from its stdout.

// directSpec is the work of a direct GET latency run.
type directSpec struct {
	Run latencyRun  `json:"run"`
	TLS tlsSettings `json:"tls"`
}

type directResult struct {
	LatenciesNs []int64 `json:"latenciesNs"`
}

// runInternal runs the child side of a re-executed copy when one of the
// -internal-* flags asks for it, and reports whether it did.
func runInternal(ctx context.Context, o *options) (bool, error) {
	switch {
	case o.internalDirect:
		return true, serveChild(ctx, runDirect)
	case o.internalStreams:
		return true, serveChild(ctx, runStreams)
	case o.internalSource != "":
		return true, serveSource(ctx, o.internalSource)
	}
	return false, nil
}

// inNetns runs a copy of this binary with flag inside m's namespace, hands
// it spec on stdin and decodes its answer into res.
func inNetns(ctx context.Context, m *harness.Member, flag string, spec, res any) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	in, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	cmd := m.Netns.Command(ctx, exe, flag)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(in), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("direct run in %s: %w: %s", m.Netns.Name, err, strings.TrimSpace(stderr.String()))
	}
	if err := json.Unmarshal(stdout.Bytes(), res); err != nil {
		return fmt.Errorf("direct run in %s: %w", m.Netns.Name, err)
	}
	return nil
}

// serveChild is the child side of inNetns: read a spec from stdin, run it,
// write the result to stdout.
func serveChild[S, R any](ctx context.Context, run func(context.Context, S) (R, error)) error {
	var spec S
	if err := json.NewDecoder(os.Stdin).Decode(&spec); err != nil {
		return fmt.Errorf("read spec: %w", err)
	}
	res, err := run(ctx, spec)
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}

// directInNetns runs r inside m's namespace and returns its latencies.
func directInNetns(ctx context.Context, m *harness.Member, r latencyRun) ([]time.Duration, error) {
	var res directResult
	if err := inNetns(ctx, m, "-internal-direct", directSpec{Run: r, TLS: tlsSettings{CAPEM: m.CAPEM}}, &res); err != nil {
		return nil, err
	}
	if len(res.LatenciesNs) != r.N {
		return nil, fmt.Errorf("direct run in %s: %d latencies, want %d", m.Netns.Name, len(res.LatenciesNs), r.N)
	}
	return fromNanos(res.LatenciesNs), nil
}

func runDirect(ctx context.Context, spec directSpec) (directResult, error) {
	c := newClient(clientConfig{tls: spec.TLS, keepAlive: true})
	defer c.CloseIdleConnections()
	ds, err := sequential(ctx, c, spec.Run)
	if err != nil {
		return directResult{}, err
	}
	return directResult{LatenciesNs: toNanos(ds)}, nil
}

func toNanos(ds []time.Duration) []int64 {
	out := make([]int64, len(ds))
	for i, d := range ds {
		out[i] = int64(d)
	}
	return out
}

func fromNanos(ns []int64) []time.Duration {
	out := make([]time.Duration, len(ns))
	for i, n := range ns {
		out[i] = time.Duration(n)
	}
	return out
}
