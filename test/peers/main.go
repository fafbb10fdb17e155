// Command peers measures Backhaul beside its peers in one run, under one
// load tool: the same Go HTTP client code drives every system, against the
// same origin (a small Go HTTP server in its own process), on loopback only.
//
//   - direct: the origin over loopback TCP;
//   - rancher/remotedialer: its server and its client library, each in its
//     own process (this binary re-executed as rdserver and rdagent), the
//     tunnel over wss; the server takes HTTP CONNECT on TCP and on a Unix
//     socket and dials through remotedialer's Dialer for the agent;
//   - konnectivity (sigs.k8s.io/apiserver-network-proxy): its own
//     proxy-server and proxy-agent commands, built from the module proxy,
//     in http-connect mode, agent and server over mTLS; one pair serves the
//     frontend on a Unix socket, another on TCP (which it serves only with
//     mTLS);
//   - Backhaul: the real backhaul-hub and backhaul-agent processes (make
//     build), CONNECT on TCP and on the hub's Unix socket.
//
// For each it measures sequential small GETs on one kept-alive tunnelled
// connection (p50), a new connection per GET (p50: CONNECT, GET, close),
// 64 concurrent kept-alive connections (req/s), one bulk download (MB/s),
// and the server's resident memory and goroutines per idle agent session at
// several fleet sizes, the sessions simulated in this process with each
// system's own client library. It prints one table with ratios to direct
// and, for Backhaul, to the best peer. Figures are printed, never asserted.
//
// Run it as `make bench-peers`, or from test/peers as
// `go run . -bin ../../_output/bin [-quick]`.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// options are the bench's flags.
type options struct {
	bin        string
	quick      bool
	keep       bool
	systems    []string
	skipMemory bool
	skipLoad   bool

	requests    int           // sequential keep-alive GETs per row
	connections int           // sequential new-connection GETs per row
	workers     int           // concurrent keep-alive connections
	duration    time.Duration // of each concurrent run
	bulk        int64         // bytes of one download
	downloads   int           // downloads per row (median)
	agents      []int         // idle sessions for the memory figures
}

// allSystems are the systems, in the order of the table.
var allSystems = []string{sysDirect, sysRemotedialer, sysKonnectivity, sysBackhaul}

const (
	sysDirect       = "direct"
	sysRemotedialer = "remotedialer"
	sysKonnectivity = "konnectivity"
	sysBackhaul     = "backhaul"
)

func parseOptions(args []string) (*options, error) {
	o := &options{}
	var systems, agents string
	var bulkMiB int
	fs := flag.NewFlagSet("peers", flag.ContinueOnError)
	fs.StringVar(&o.bin, "bin", "../../_output/bin", "directory holding backhaul-hub and backhaul-agent (make build); konnectivity's commands are built into its peers/ subdirectory")
	fs.BoolVar(&o.quick, "quick", false, "short run (a minute or two): fewer requests, shorter runs, fewer agents")
	fs.BoolVar(&o.keep, "keep", false, "keep the scratch directory with every process's log")
	fs.StringVar(&systems, "systems", strings.Join(allSystems, ","), "comma-separated systems to run (direct is always run)")
	fs.BoolVar(&o.skipMemory, "skip-memory", false, "skip the memory per idle session figures")
	fs.BoolVar(&o.skipLoad, "skip-load", false, "skip the latency and throughput figures")
	fs.IntVar(&o.requests, "requests", 0, "sequential keep-alive GETs per row (default 5000, -quick 1000)")
	fs.IntVar(&o.connections, "connections", 0, "sequential new-connection GETs per row (default 2000, -quick 300)")
	fs.IntVar(&o.workers, "workers", 64, "concurrent keep-alive connections of the req/s figure")
	fs.DurationVar(&o.duration, "duration", 0, "length of each req/s run (default 10s, -quick 2s)")
	fs.IntVar(&bulkMiB, "bulk-mib", 0, "MiB of one bulk download (default 256, -quick 64)")
	fs.IntVar(&o.downloads, "downloads", 0, "bulk downloads per row, the median is shown (default 3, -quick 1)")
	fs.StringVar(&agents, "agents", "", "comma-separated idle session counts for the memory figures (default 1000,10000; -quick 100,1000)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	def := func(v *int, full, quick int) {
		if *v == 0 {
			*v = full
			if o.quick {
				*v = quick
			}
		}
	}
	def(&o.requests, 5000, 1000)
	def(&o.connections, 2000, 300)
	def(&bulkMiB, 256, 64)
	def(&o.downloads, 3, 1)
	if o.duration == 0 {
		o.duration = 10 * time.Second
		if o.quick {
			o.duration = 2 * time.Second
		}
	}
	o.bulk = int64(bulkMiB) << 20
	if agents == "" {
		agents = "1000,10000"
		if o.quick {
			agents = "100,1000"
		}
	}
	for _, a := range strings.Split(agents, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(a))
		if err != nil || n < 1 || n > maxAgents {
			return nil, fmt.Errorf("-agents %q: want counts from 1 to %d", agents, maxAgents)
		}
		o.agents = append(o.agents, n)
	}
	slices.Sort(o.agents)
	o.agents = slices.Compact(o.agents)
	o.systems = []string{sysDirect}
	for _, s := range strings.Split(systems, ",") {
		s = strings.TrimSpace(s)
		switch {
		case s == "" || s == sysDirect:
		case slices.Contains(allSystems, s):
			o.systems = append(o.systems, s)
		default:
			return nil, fmt.Errorf("-systems: unknown system %q (have %s)", s, strings.Join(allSystems, ", "))
		}
	}
	if o.requests < latencyBlocks || o.connections < latencyBlocks || o.workers < 1 || o.downloads < 1 || o.bulk < 1 {
		return nil, errors.New("-requests and -connections must be at least 10; -workers, -downloads and -bulk-mib at least 1")
	}
	return o, nil
}

// maxAgents bounds -agents: each simulated session costs a descriptor
// here and one in the server (RLIMIT_NOFILE).
const maxAgents = 50000

func (o *options) has(system string) bool { return slices.Contains(o.systems, system) }

func main() { os.Exit(run(os.Args[1:])) }

func run(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The re-executed roles: remotedialer's server and agent, the origin.
	if len(args) > 0 {
		if role, ok := roles[args[0]]; ok {
			if err := role(ctx, args[1:]); err != nil && ctx.Err() == nil {
				fmt.Fprintf(os.Stderr, "peers %s: %v\n", args[0], err)
				return 1
			}
			return 0
		}
	}
	o, err := parseOptions(args)
	if err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		return 2
	}
	// Every connection this program and its children make stays on
	// loopback; never through a proxy.
	for _, k := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"} {
		_ = os.Unsetenv(k)
	}
	dir, err := os.MkdirTemp("", "backhaul-peers-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		return 1
	}
	defer func() {
		if o.keep {
			fmt.Fprintf(os.Stderr, "peers: logs kept in %s\n", dir)
		} else {
			_ = os.RemoveAll(dir)
		}
	}()

	start := time.Now()
	res, err := bench(ctx, o, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "peers:", err)
		return 1
	}
	mode := ""
	if o.quick {
		mode = ", quick"
	}
	fmt.Println()
	res.print(os.Stdout, fmt.Sprintf("Backhaul and its peers (%d cores, %s, %s%s, run took %s)",
		runtime.NumCPU(), runtime.Version(), time.Now().Format("2006-01-02 15:04 MST"), mode, time.Since(start).Round(time.Second)), o)
	switch {
	case ctx.Err() != nil:
		fmt.Fprintln(os.Stderr, "peers: interrupted")
		return 130
	case res.failed():
		return 1
	}
	return 0
}

// roles are the subcommands this binary runs as when the bench re-executes
// it: each a process of its own, as deployed.
var roles = map[string]func(context.Context, []string) error{
	"origin":   runOrigin,
	"rdserver": runRDServer,
	"rdagent":  runRDAgent,
}

// progress tells the operator what the bench is doing, on stderr so the
// table on stdout stays clean.
var progressStart = time.Now()

func progress(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "[%6.1fs] %s\n", time.Since(progressStart).Seconds(), fmt.Sprintf(format, args...))
}
