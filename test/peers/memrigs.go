package main

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rancher/remotedialer"
	"github.com/sirupsen/logrus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"k8s.io/klog/v2"
	knpoptions "sigs.k8s.io/apiserver-network-proxy/cmd/agent/app/options"
	knpagent "sigs.k8s.io/apiserver-network-proxy/pkg/agent"
	knputil "sigs.k8s.io/apiserver-network-proxy/pkg/util"

	"backhaul.io/backhaul/test/harness"
	"backhaul.io/backhaul/tunnel"
)

// simName names simulated agent i.
func simName(i int) string { return fmt.Sprintf("sim%05d", i) }

// bhMemRig is a fresh backhaul-hub with an agent token per simulated
// cluster; sessions are the project's own tunnel client, as
// test/bench/memory.go dials them, refusing every stream.
type bhMemRig struct {
	hub    *harness.Hub
	tls    *tls.Config
	sctx   context.Context // ends the sessions' Serve
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	opened []*tunnel.Session
}

func newBHMemRig(ctx context.Context, stops *stopList, dir, bin string, n int) (*bhMemRig, error) {
	names := make([]string, n)
	for i := range names {
		names[i] = simName(i)
	}
	hub, err := startBackhaulHub(ctx, stops, dir, bin, names, rand.Text())
	if err != nil {
		return nil, err
	}
	r := &bhMemRig{hub: hub, tls: hub.TLSConfig()}
	r.sctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	return r, nil
}

func (r *bhMemRig) pid() int { return r.hub.Process().PID() }

func (r *bhMemRig) goroutines(ctx context.Context) (float64, error) {
	m, err := scrapeMetrics(ctx, r.hub.AdminURL+"/metrics", "go_goroutines")
	return m["go_goroutines"], err
}

func (r *bhMemRig) sessions(ctx context.Context) (int, error) { return hubSessions(ctx, r.hub) }

func (r *bhMemRig) open(ctx context.Context, i int) error {
	h := http.Header{}
	h.Set("Authorization", "Bearer "+r.hub.AgentTokens[simName(i)])
	h.Set(tunnel.HeaderCluster, simName(i))
	d := &tunnel.Dialer{
		URL: fmt.Sprintf("wss://127.0.0.1:%d", r.hub.Port), TLSConfig: r.tls, Header: h,
		Proxy: func(*http.Request) (*url.URL, error) { return nil, nil }, Config: tunnel.DefaultConfig(),
	}
	s, err := d.Dial(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", simName(i), err)
	}
	r.mu.Lock()
	r.opened = append(r.opened, s)
	r.mu.Unlock()
	r.wg.Go(func() {
		_ = s.Serve(r.sctx, func(_ context.Context, in *tunnel.Incoming) {
			_ = in.Reject(tunnel.CodeNotAllowed, "simulated agent")
		})
	})
	return nil
}

func (r *bhMemRig) close() {
	r.mu.Lock()
	for _, s := range r.opened {
		_ = s.Close()
	}
	r.opened = nil
	r.mu.Unlock()
	r.cancel()
	r.wg.Wait()
}

// rdMemRig is a fresh remotedialer server; sessions are remotedialer's own
// client (ConnectToProxy), which the server is never asked to use.
type rdMemRig struct {
	srv    *rdServer
	token  string
	ws     *websocket.Dialer
	sctx   context.Context // ends the sessions
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newRDMemRig(ctx context.Context, stops *stopList, dir string) (*rdMemRig, error) {
	logrus.SetLevel(logrus.WarnLevel) // ConnectToProxy logs two lines per session at info
	s, err := startRDServer(ctx, stops, dir, "rdserver-mem")
	if err != nil {
		return nil, err
	}
	tok, err := os.ReadFile(s.tokenFile)
	if err != nil {
		return nil, err
	}
	ws, err := rdWebsocketDialer(s.caFile)
	if err != nil {
		return nil, err
	}
	r := &rdMemRig{srv: s, token: strings.TrimSpace(string(tok)), ws: ws}
	r.sctx, r.cancel = context.WithCancel(context.WithoutCancel(ctx))
	return r, nil
}

func (r *rdMemRig) pid() int { return r.srv.proc.PID() }

func (r *rdMemRig) goroutines(ctx context.Context) (float64, error) {
	return httpGetFloat(ctx, r.srv.admin+"/goroutines")
}

func (r *rdMemRig) sessions(ctx context.Context) (int, error) { return r.srv.clients(ctx) }

func (r *rdMemRig) open(ctx context.Context, i int) error {
	up := make(chan struct{})
	ended := make(chan error, 1)
	r.wg.Go(func() {
		deny := func(string, string) bool { return false }
		ended <- remotedialer.ConnectToProxy(r.sctx, r.srv.url, rdHeaders(simName(i), r.token), deny, r.ws,
			func(context.Context, *remotedialer.Session) error {
				close(up)
				return nil
			})
	})
	select {
	case <-up:
		return nil
	case err := <-ended:
		return fmt.Errorf("%s: session ended: %w", simName(i), err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (r *rdMemRig) close() {
	r.cancel()
	r.wg.Wait()
}

// knpMemRig is a fresh konnectivity proxy-server (frontend on a Unix
// socket); sessions are konnectivity's own agent library (pkg/agent's
// ClientSet with proxy-agent's default options), one per agent id.
type knpMemRig struct {
	srv    *knpServer
	cfg    *knpoptions.GrpcProxyAgentOptions
	dial   []grpc.DialOption
	stopCh chan struct{}
	mu     sync.Mutex
	sets   []*knpagent.ClientSet
}

func newKNPMemRig(ctx context.Context, stops *stopList, dir string, bins *knpBinaries) (*knpMemRig, error) {
	if bins.err != nil {
		return nil, bins.err
	}
	pki, err := newKNPPKI(dir)
	if err != nil {
		return nil, err
	}
	s, err := startKNPServer(ctx, stops, dir, "knp-mem-server", bins.server, pki, true)
	if err != nil {
		return nil, err
	}
	// The agent library logs through klog: into a file, not over the
	// progress lines.
	logs, err := os.Create(filepath.Join(dir, "knp-sim-agents.log"))
	if err != nil {
		return nil, err
	}
	klog.LogToStderr(false)
	klog.SetOutput(logs)
	o := knpoptions.NewGrpcProxyAgentOptions()
	o.ProxyServerHost, o.ProxyServerPort = "127.0.0.1", s.agentPort
	o.CaCert, o.AgentCert, o.AgentKey = pki.ca.CertFile, pki.agentCert, pki.agentKey
	tlsCfg, err := knputil.GetClientTLSConfig(o.CaCert, o.AgentCert, o.AgentKey, o.ProxyServerHost, o.AlpnProtos)
	if err != nil {
		return nil, err
	}
	// As proxy-agent's runProxyConnection dials.
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: o.KeepaliveTime, PermitWithoutStream: true}),
	}
	return &knpMemRig{srv: s, cfg: o, dial: dial, stopCh: make(chan struct{})}, nil
}

func (r *knpMemRig) pid() int { return r.srv.proc.PID() }

func (r *knpMemRig) goroutines(ctx context.Context) (float64, error) { return r.srv.goroutines(ctx) }

func (r *knpMemRig) sessions(ctx context.Context) (int, error) { return r.srv.backends(ctx) }

func (r *knpMemRig) open(ctx context.Context, i int) error {
	o := *r.cfg
	o.AgentID = simName(i)
	cs := o.ClientSetConfig(r.dial...).NewAgentClientSet(r.stopCh, r.stopCh)
	cs.SetServerCounter(knpagent.NewAggregateServerCounter(nil, knpagent.NewResponseBasedCounter(cs), o.ServerCountSource))
	cs.Serve()
	r.mu.Lock()
	r.sets = append(r.sets, cs)
	r.mu.Unlock()
	deadline := time.Now().Add(30 * time.Second)
	for cs.HealthyClientsCount() < 1 {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not connected after 30s", simName(i))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

func (r *knpMemRig) close() {
	close(r.stopCh)
	// Each ClientSet closes its connection at its next sync tick (~1 s).
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		left := 0
		r.mu.Lock()
		for _, cs := range r.sets {
			left += cs.ClientsCount()
		}
		r.mu.Unlock()
		if left == 0 {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Goroutines of the library may still log: the file stays open.
	klog.Flush()
}

var (
	_ memRig = (*bhMemRig)(nil)
	_ memRig = (*rdMemRig)(nil)
	_ memRig = (*knpMemRig)(nil)
)
