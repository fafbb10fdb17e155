package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"backhaul.io/backhaul/test/harness"
)

const (
	// bhCluster is the one cluster of the load figures; CONNECT names its
	// API server (the origin, to the agent) as bhTarget.
	bhCluster = "bench"
	bhTarget  = bhCluster + ".cluster.backhaul:443"
	// bhSessions is the hub's gauge of agent sessions.
	bhSessions = "backhaul_hub_sessions"
)

// backhaulBinaries returns the paths of backhaul-hub and backhaul-agent in
// bin, or an error that says to run make build.
func backhaulBinaries(bin string) (hub, agent string, err error) {
	var paths [2]string
	for i, name := range []string{"backhaul-hub", "backhaul-agent"} {
		if paths[i], err = filepath.Abs(filepath.Join(bin, name)); err != nil {
			return "", "", err
		}
		if _, err := os.Stat(paths[i]); err != nil {
			return "", "", fmt.Errorf("%w (run make build, or point -bin at the binaries)", err)
		}
	}
	return paths[0], paths[1], nil
}

// backhaulVersion is what backhaul-hub -version prints.
func backhaulVersion(ctx context.Context, bin string) string {
	hub, _, err := backhaulBinaries(bin)
	if err != nil {
		return "unknown"
	}
	out, err := exec.CommandContext(ctx, hub, "-version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "backhaul-hub"))
}

// startBackhaulHub runs a backhaul-hub process with agent tokens for
// clusters and one caller, through the project's own test harness (CONNECT
// on loopback TCP with Proxy-Authorization, and on a Unix socket).
func startBackhaulHub(ctx context.Context, stops *stopList, dir, bin string, clusters []string, callerToken string) (*harness.Hub, error) {
	hubBin, _, err := backhaulBinaries(bin)
	if err != nil {
		return nil, err
	}
	hub, err := harness.StartHub(ctx, harness.HubConfig{
		Binary:   hubBin,
		Dir:      dir,
		Clusters: clusters,
		Callers:  map[string]harness.Caller{"bench": {Token: callerToken, User: "bench"}},
		Args:     []string{"--log-level", "warn"},
	})
	if hub != nil {
		stops.add(hub.Stop)
	}
	return hub, err
}

// hubSessions is how many agent sessions the hub holds.
func hubSessions(ctx context.Context, hub *harness.Hub) (int, error) {
	m, err := scrapeMetrics(ctx, hub.AdminURL+"/metrics", bhSessions)
	return int(m[bhSessions]), err
}

// startBackhaul runs backhaul-hub and one backhaul-agent whose member API
// server is the origin, and returns the CONNECT dials over TCP and the
// hub's Unix socket.
func startBackhaul(ctx context.Context, stops *stopList, dir, bin, origin string) ([]endpoint, error) {
	_, agentBin, err := backhaulBinaries(bin)
	if err != nil {
		return nil, err
	}
	caller := rand.Text()
	hub, err := startBackhaulHub(ctx, stops, dir, bin, []string{bhCluster}, caller)
	if err != nil {
		return nil, err
	}
	// The agent's member API server is the origin, in plain HTTP: a CONNECT
	// stream to the cluster is a raw TCP connection to it, and the hub's
	// background probes of /readyz and /version get their answers.
	kubeconfig := filepath.Join(dir, "member.kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: member
  cluster:
    server: http://%s
users:
- name: agent
  user:
    token: unused
contexts:
- name: member
  context: {cluster: member, user: agent}
current-context: member
`, origin)
	tokenFile := filepath.Join(dir, "agent.token")
	if err := os.WriteFile(kubeconfig, []byte(kc), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(tokenFile, []byte(hub.AgentTokens[bhCluster]), 0o600); err != nil {
		return nil, err
	}
	cmd := exec.Command(agentBin,
		"--hub-url", fmt.Sprintf("wss://127.0.0.1:%d", hub.Port),
		"--hub-ca-file", hub.CA.CertFile,
		"--cluster", bhCluster,
		"--token-file", tokenFile,
		"--kubeconfig", kubeconfig,
		"--admin-listen", "127.0.0.1:0",
		"--log-level", "warn",
	)
	agent, err := startProcess(ctx, stops, dir, "backhaul-agent", cmd)
	if err != nil {
		return nil, err
	}
	err = waitUp(ctx, hub.Process(), 30*time.Second, func() error {
		n, err := hubSessions(ctx, hub)
		if err == nil && n < 1 {
			err = fmt.Errorf("no agent session")
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return []endpoint{
		{(&connectDialer{network: "tcp", addr: hub.ConnectAddr, target: bhTarget, auth: "Bearer " + caller}).dial, hub.Process(), agent},
		{(&connectDialer{network: "unix", addr: hub.ConnectUDS, target: bhTarget}).dial, hub.Process(), agent},
	}, nil
}
