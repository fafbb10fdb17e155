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

// directSpec is what the bench hands a copy of itself inside the member's
// namespace, on stdin so that the token stays out of the process list.
type directSpec struct {
	Run latencyRun  `json:"run"`
	TLS tlsSettings `json:"tls"`
}

type directResult struct {
	LatenciesNs []int64 `json:"latenciesNs"`
}

// directInNetns runs r in a copy of this binary inside m's namespace and
// returns its latencies.
func directInNetns(ctx context.Context, m *harness.Member, r latencyRun) ([]time.Duration, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	spec, err := json.Marshal(directSpec{Run: r, TLS: tlsSettings{CAPEM: m.CAPEM}})
	if err != nil {
		return nil, err
	}
	cmd := m.Netns.Command(ctx, exe, "-internal-direct")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stdout, stderr bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = bytes.NewReader(spec), &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("direct run in %s: %w: %s", m.Netns.Name, err, strings.TrimSpace(stderr.String()))
	}
	var res directResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return nil, fmt.Errorf("direct run in %s: %w", m.Netns.Name, err)
	}
	if len(res.LatenciesNs) != r.N {
		return nil, fmt.Errorf("direct run in %s: %d latencies, want %d", m.Netns.Name, len(res.LatenciesNs), r.N)
	}
	out := make([]time.Duration, len(res.LatenciesNs))
	for i, ns := range res.LatenciesNs {
		out[i] = time.Duration(ns)
	}
	return out, nil
}

// internalDirect is the child side of directInNetns: read a directSpec from
// stdin, run it, write a directResult to stdout.
func internalDirect(ctx context.Context) error {
	var spec directSpec
	if err := json.NewDecoder(os.Stdin).Decode(&spec); err != nil {
		return fmt.Errorf("read spec: %w", err)
	}
	c := newClient(clientConfig{tls: spec.TLS, keepAlive: true})
	defer c.CloseIdleConnections()
	ds, err := sequential(ctx, c, spec.Run)
	if err != nil {
		return err
	}
	res := directResult{LatenciesNs: make([]int64, len(ds))}
	for i, d := range ds {
		res.LatenciesNs[i] = int64(d)
	}
	return json.NewEncoder(os.Stdout).Encode(res)
}
