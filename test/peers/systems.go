package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"backhaul.io/backhaul/test/harness"
)

// target is one row of the latency and throughput figures: a system
// reached through one front end.
type target struct {
	system string
	label  string
	short  string // for the best-peer line
	endpoint
	err error // the system could not be started
}

// endpoint is how the load tool reaches a system through one front end,
// and the system's server and agent processes, whose CPU time is read.
type endpoint struct {
	dial          dialFunc
	server, agent *harness.Process
}

// topology is every system of the run, up at once and idle but for the
// row being measured, all reaching the one origin.
type topology struct {
	origin  string // host:port
	targets []*target
	stopList
}

// startTopology starts the origin and every system the options name. A
// system that does not start gets rows with its error; the others run.
func startTopology(ctx context.Context, o *options, dir string, knp *knpBinaries) (_ *topology, err error) {
	t := &topology{}
	defer func() {
		if err != nil {
			t.close()
		}
	}()
	if t.origin, err = startOrigin(ctx, &t.stopList, dir); err != nil {
		return nil, fmt.Errorf("origin: %w", err)
	}
	t.targets = append(t.targets, &target{system: sysDirect, label: "direct (loopback TCP)", short: "direct", endpoint: endpoint{dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", t.origin)
	}}})
	type starter struct {
		system string
		labels [][2]string // label, short
		start  func() ([]endpoint, error)
	}
	starters := []starter{
		{sysRemotedialer, [][2]string{{"remotedialer CONNECT (TCP)", "rd TCP"}, {"remotedialer CONNECT (UDS)", "rd UDS"}}, func() ([]endpoint, error) {
			return startRemotedialer(ctx, &t.stopList, filepath.Join(dir, "remotedialer"), t.origin)
		}},
		{sysKonnectivity, [][2]string{{"konnectivity CONNECT (UDS)", "knp UDS"}, {"konnectivity CONNECT (TCP+mTLS)", "knp TCP"}}, func() ([]endpoint, error) {
			if knp.err != nil {
				return nil, knp.err
			}
			return startKonnectivity(ctx, &t.stopList, filepath.Join(dir, "konnectivity"), knp, t.origin)
		}},
		{sysBackhaul, [][2]string{{"backhaul CONNECT (TCP)", "bh TCP"}, {"backhaul CONNECT (UDS)", "bh UDS"}}, func() ([]endpoint, error) {
			return startBackhaul(ctx, &t.stopList, filepath.Join(dir, "backhaul"), o.bin, t.origin)
		}},
	}
	for _, s := range starters {
		if !o.has(s.system) {
			continue
		}
		progress("load: starting %s", s.system)
		eps, err := s.start()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		for i, l := range s.labels {
			tg := &target{system: s.system, label: l[0], short: l[1], err: err}
			if err == nil {
				tg.endpoint = eps[i]
			}
			t.targets = append(t.targets, tg)
		}
	}
	return t, nil
}

// startOrigin runs the origin in its own process and returns its address.
func startOrigin(ctx context.Context, stops *stopList, dir string) (string, error) {
	addr, err := loopbackAddr()
	if err != nil {
		return "", err
	}
	cmd, err := self("origin", "-listen", addr)
	if err != nil {
		return "", err
	}
	p, err := startProcess(ctx, stops, dir, "origin", cmd)
	if err != nil {
		return "", err
	}
	return addr, waitUp(ctx, p, 10*time.Second, func() error {
		_, err := httpGet(ctx, "http://"+addr+"/readyz")
		return err
	})
}

// rdServer is a running remotedialer server (rdserver role).
type rdServer struct {
	proc       *harness.Process
	url        string // wss://…/connect
	caFile     string
	tokenFile  string
	admin      string // http://host:port
	connectTCP string
	connectUDS string
}

// startRDServer starts remotedialer's server with its own CA and token.
func startRDServer(ctx context.Context, stops *stopList, dir, name string) (*rdServer, error) {
	ca, err := harness.NewCA(dir, name+"-ca")
	if err != nil {
		return nil, err
	}
	cert, key, err := ca.Serving(name, []string{"127.0.0.1", "localhost"})
	if err != nil {
		return nil, err
	}
	s := &rdServer{caFile: ca.CertFile, tokenFile: filepath.Join(dir, name+".token"), connectUDS: filepath.Join(dir, name+"-connect.sock")}
	if err := os.WriteFile(s.tokenFile, []byte(rand.Text()), 0o600); err != nil {
		return nil, err
	}
	var listen, admin string
	for _, a := range []*string{&listen, &admin, &s.connectTCP} {
		if *a, err = loopbackAddr(); err != nil {
			return nil, err
		}
	}
	s.url, s.admin = "wss://"+listen+rdPath, "http://"+admin
	cmd, err := self("rdserver", "-listen", listen, "-cert", cert, "-key", key,
		"-connect-listen", s.connectTCP, "-connect-uds", s.connectUDS,
		"-admin", admin, "-token-file", s.tokenFile, "-client", "bench")
	if err != nil {
		return nil, err
	}
	if s.proc, err = startProcess(ctx, stops, dir, name, cmd); err != nil {
		return nil, err
	}
	return s, waitUp(ctx, s.proc, 10*time.Second, func() error {
		_, err := s.clients(ctx)
		return err
	})
}

// clients is how many agent sessions the server holds.
func (s *rdServer) clients(ctx context.Context) (int, error) {
	n, err := httpGetFloat(ctx, s.admin+"/clients")
	return int(n), err
}

// startRemotedialer runs remotedialer's server and one agent, each in its
// own process, and returns the CONNECT dials over TCP and the Unix socket.
func startRemotedialer(ctx context.Context, stops *stopList, dir, origin string) ([]endpoint, error) {
	s, err := startRDServer(ctx, stops, dir, "rdserver")
	if err != nil {
		return nil, err
	}
	cmd, err := self("rdagent", "-url", s.url, "-ca", s.caFile, "-id", "bench", "-token-file", s.tokenFile, "-allow", origin)
	if err != nil {
		return nil, err
	}
	agent, err := startProcess(ctx, stops, dir, "rdagent", cmd)
	if err != nil {
		return nil, err
	}
	err = waitUp(ctx, s.proc, 30*time.Second, func() error {
		n, err := s.clients(ctx)
		if err == nil && n < 1 {
			err = fmt.Errorf("no agent session")
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return []endpoint{
		{(&connectDialer{network: "tcp", addr: s.connectTCP, target: origin}).dial, s.proc, agent},
		{(&connectDialer{network: "unix", addr: s.connectUDS, target: origin}).dial, s.proc, agent},
	}, nil
}
