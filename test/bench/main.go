// Command bench measures Backhaul side by side with direct connections, in
// one run, and prints a table of figures, ratios and targets:
//
//   - the tunnel in process: an HTTP origin reached directly over loopback
//     TCP and through one TLS websocket tunnel served by the real agent;
//   - the hub's CONNECT front end in process: the same origin, as the
//     member's API server address, reached directly and through the real
//     hub and agent;
//   - the hub's L7 gateway in front of a real kube-apiserver, against the
//     same client inside the member's namespace;
//   - exec and port-forward to a pod on a test kubelet in that member,
//     through the hub and directly, and the gateway's small GET while four
//     `logs -f` stream flat out through the same tunnel;
//   - the resident memory a real backhaul-hub process spends per idle agent;
//   - the active-active hub (docs/ha.md): a gateway GET forwarded from one
//     replica to the one holding the agent's session against the same GET
//     served locally, and a reconnect storm of simulated agents on three
//     replicas, before and after one is killed.
//   - over an emulated WAN (-wan-rtt, -wan-rate; wan.go): kubectl, a
//     download and dead-link detection through the hub against direct.
//
// Targets are reported, never asserted: the exit status is non-zero only
// when a figure could not be measured. Run it as `make bench` or
// `go run ./test/bench [-quick] [-skip-window] [-skip-connect] [-skip-kube] [-skip-streams] [-skip-ha]`
// from the repository root, as root (the apiserver and HA figures use network
// namespaces).
package main

import (
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"backhaul.io/backhaul/test/harness"
)

// options are the bench's flags; quick shrinks every run.
type options struct {
	quick       bool
	skipTunnel  bool
	skipWindow  bool
	skipConnect bool
	skipKube    bool
	skipStreams bool
	skipWatches bool
	watches     int // client-go watches of the watches figure
	hubBinary   string
	agentBinary string
	skipMemory  bool
	skipHA      bool
	skipWAN     bool
	wanRTT      time.Duration // round trip of the emulated WAN
	wanRate     float64       // its bandwidth each way, Mbit/s (0: no cap)
	keep        bool
	profileDir  string

	requests        int // sequential GETs per side, tunnel figures
	workers         int
	duration        time.Duration
	downloadBytes   int64
	downloads       int
	kubeRequests    int
	connectRequests int // sequential connections per side, CONNECT setup figure
	agents          int
	settleLimit     time.Duration // longest wait for the member to settle
	execs           int           // sequential execs per side, exec figure
	forwardBytes    int64         // bytes per port-forward run
	loadRequests    int           // sequential GETs per side, GET-under-load figure
	haAgents        int           // simulated agents of the HA storm
	haSkipForward   bool
	haSkipStorm     bool

	internalDirect  bool
	internalStreams bool
	internalSource  string

	profiles []string // written profiles, for the closing note
}

func parseOptions(args []string) (*options, error) {
	o := &options{workers: 64, downloadBytes: 256 << 20}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.BoolVar(&o.quick, "quick", false, "short smoke run (under a minute)")
	fs.BoolVar(&o.skipTunnel, "skip-tunnel", false, "skip the in-process tunnel figures")
	fs.BoolVar(&o.skipWindow, "skip-window", false, "skip the stream-window figures (download MB/s per window size over emulated round trips)")
	fs.BoolVar(&o.skipConnect, "skip-connect", false, "skip the in-process CONNECT front end figures")
	fs.BoolVar(&o.skipKube, "skip-kube", false, "skip the kube-apiserver gateway and streams figures (they need root)")
	fs.BoolVar(&o.skipStreams, "skip-streams", false, "skip the exec, port-forward and GET-under-logs figures")
	fs.BoolVar(&o.skipWatches, "skip-watches", false, "skip the client-go watches figure (connections, goroutines and memory per watch)")
	fs.IntVar(&o.watches, "watches", 0, "client-go watches of the watches figure (default 500, -quick 100)")
	fs.StringVar(&o.hubBinary, "hub-binary", "", "run this backhaul-hub instead of building one (to compare builds in the same bench)")
	fs.StringVar(&o.agentBinary, "agent-binary", "", "run this backhaul-agent instead of building one")
	fs.BoolVar(&o.skipMemory, "skip-memory", false, "skip the hub memory figure")
	fs.IntVar(&o.agents, "agents", 0, "idle agent sessions for the hub memory figure (default 1000, -quick 200)")
	fs.BoolVar(&o.skipHA, "skip-ha", false, "skip the active-active hub figures (forwarding, reconnect storm; they need root)")
	fs.BoolVar(&o.haSkipForward, "skip-ha-forward", false, "skip the HA forwarding figure, keep the storm")
	fs.BoolVar(&o.haSkipStorm, "skip-ha-storm", false, "skip the HA reconnect storm, keep the forwarding figure")
	fs.IntVar(&o.haAgents, "ha-agents", 0, "simulated agents of the HA reconnect storm (default 10000, -quick 1000)")
	fs.BoolVar(&o.skipWAN, "skip-wan", false, "skip the emulated-WAN figures (kubectl get pods, a 64 MiB download and dead-link detection over a -wan-rtt, -wan-rate link; they need root and start their own member, whatever -skip-kube says)")
	fs.DurationVar(&o.wanRTT, "wan-rtt", 50*time.Millisecond, "round trip of the emulated WAN")
	fs.Float64Var(&o.wanRate, "wan-rate", 100, "bandwidth of the emulated WAN each way, in Mbit/s (0: no cap)")
	fs.StringVar(&o.profileDir, "profile", "", "directory for CPU profiles of the tunnel throughput runs and a heap profile of the agent side of idle sessions")
	fs.BoolVar(&o.keep, "keep", false, "keep the scratch directory with process logs")
	fs.BoolVar(&o.internalDirect, "internal-direct", false, "internal: run one direct latency run from a spec on stdin")
	fs.BoolVar(&o.internalStreams, "internal-streams", false, "internal: run one direct exec or port-forward run from a spec on stdin")
	fs.StringVar(&o.internalSource, "internal-source", "", "internal: serve the port-forward source on this address")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	o.requests, o.duration, o.downloads, o.kubeRequests, o.settleLimit = 5000, 10*time.Second, 3, 2000, 30*time.Second
	o.connectRequests = 2000
	o.execs, o.forwardBytes, o.loadRequests = 200, 256<<20, 1000
	if o.quick {
		o.requests, o.duration, o.downloads, o.kubeRequests, o.settleLimit = 1000, 2*time.Second, 1, 500, 10*time.Second
		o.connectRequests = 500
		o.execs, o.forwardBytes, o.loadRequests = 50, 64<<20, 250
	}
	if o.watches == 0 {
		o.watches = 500
		if o.quick {
			o.watches = 100
		}
	}
	if o.agents == 0 {
		o.agents = 1000
		if o.quick {
			o.agents = 200
		}
	}
	if o.agents < 1 || o.agents > 9999 {
		return nil, fmt.Errorf("-agents %d: want 1..9999", o.agents)
	}
	if o.haAgents == 0 {
		o.haAgents = 10000
		if o.quick {
			o.haAgents = 1000
		}
	}
	// Cluster names have five digits; each agent costs a descriptor here.
	if o.haAgents < 1 || o.haAgents > 99999 {
		return nil, fmt.Errorf("-ha-agents %d: want 1..99999", o.haAgents)
	}
	return o, nil
}

func main() { os.Exit(run()) }

func run() int {
	o, err := parseOptions(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if internal, err := runInternal(ctx, o); internal {
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench (internal):", err)
			return 1
		}
		return 0
	}
	// Every connection this program and its children make goes to loopback
	// or to a namespace it created; never through a proxy.
	for _, k := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"} {
		_ = os.Unsetenv(k)
	}
	dir, err := os.MkdirTemp("", "backhaul-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		return 1
	}
	defer func() {
		if o.keep {
			fmt.Fprintf(os.Stderr, "bench: logs kept in %s\n", dir)
		} else {
			_ = os.RemoveAll(dir)
		}
	}()
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
	}

	start := time.Now()
	t := &table{}
	if !o.skipTunnel {
		benchTunnel(ctx, o, dir, t)
	}
	if !o.skipWindow && ctx.Err() == nil {
		benchWindow(ctx, o, dir, t)
	}
	if !o.skipConnect && ctx.Err() == nil {
		benchConnect(ctx, o, dir, t)
	}
	if !o.skipKube || !o.skipMemory || !o.skipHA {
		progress("building backhaul-hub and backhaul-agent")
		hubBin, agentBin, err := harness.BackhaulBinaries(ctx)
		if err != nil {
			err = fmt.Errorf("build: %w", err)
		}
		hubBin, agentBin = cmp.Or(o.hubBinary, hubBin), cmp.Or(o.agentBinary, agentBin)
		if !o.skipKube && ctx.Err() == nil {
			if err != nil {
				t.add(row{Figure: "apiserver GET via gateway", Err: err})
			} else {
				benchKube(ctx, o, hubBin, agentBin, dir, t)
			}
		}
		if !o.skipMemory && ctx.Err() == nil {
			if err != nil {
				t.add(row{Figure: "hub RSS per idle agent", Err: err})
			} else {
				benchHubMemory(ctx, o, hubBin, dir, t)
			}
		}
		if !o.skipHA && ctx.Err() == nil {
			if err != nil {
				failHA(t, o, err)
			} else {
				benchHA(ctx, o, hubBin, agentBin, dir, t)
			}
		}
	}
	if !o.skipWAN && ctx.Err() == nil {
		benchWAN(ctx, o, dir, t)
	}
	t.note("direct: tunnel rows dial the origin over loopback TCP; backhaul rows open a stream on one TLS websocket")
	t.note("  tunnel to the real agent, which dials the origin. Ratios are backhaul / direct. Run took %s.",
		time.Since(start).Round(time.Second))
	for _, p := range o.profiles {
		t.note("profile: %s", p)
	}

	mode := ""
	if o.quick {
		mode = ", quick"
	}
	fmt.Println()
	t.print(os.Stdout, fmt.Sprintf("Backhaul bench (%d cores, %s, %s%s)",
		runtime.NumCPU(), runtime.Version(), time.Now().Format("2006-01-02 15:04 MST"), mode))
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "bench: interrupted")
		return 130
	case t.failed():
		return 1
	}
	return 0
}

// progress tells the operator what the bench is doing, on stderr so the
// table on stdout stays clean.
var progressStart = time.Now()

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%5.1fs] %s\n", time.Since(progressStart).Seconds(), fmt.Sprintf(format, args...))
}

// noProxy keeps tunnel dials on loopback whatever the environment says.
func noProxy(*http.Request) (*url.URL, error) { return nil, nil }

// quietLog swallows net/http's server log lines (closed connections at
// teardown are expected).
func quietLog() *log.Logger { return log.New(io.Discard, "", 0) }
