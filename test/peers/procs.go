package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"backhaul.io/backhaul/test/harness"
)

// stopList runs its functions in reverse order, once.
type stopList struct{ fns []func() }

func (s *stopList) add(f func()) { s.fns = append(s.fns, f) }

func (s *stopList) close() {
	for i := len(s.fns) - 1; i >= 0; i-- {
		s.fns[i]()
	}
	s.fns = nil
}

// startProcess starts cmd in its own process group with its output in
// <dir>/<name>.log (killed with the bench if the bench dies) and registers
// its stop, by its PID, on stops.
func startProcess(ctx context.Context, stops *stopList, dir, name string, cmd *exec.Cmd) (*harness.Process, error) {
	p, err := harness.Start(ctx, name, dir, cmd)
	if err != nil {
		return nil, err
	}
	stops.add(p.Stop)
	return p, nil
}

// self re-executes this binary in one of its roles.
func self(role string, args ...string) (*exec.Cmd, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	return exec.Command(exe, append([]string{role}, args...)...), nil
}

// waitUp polls cond until it holds, the process exits or limit passes.
func waitUp(ctx context.Context, p *harness.Process, limit time.Duration, cond func() error) error {
	err := harness.WaitFor(ctx, limit, 20*time.Millisecond, func() error {
		select {
		case <-p.Exited():
			return harness.Permanent(fmt.Errorf("%s exited: %v\n%s", p.Name(), p.Err(), p.Tail(20)))
		default:
		}
		return cond()
	})
	if err != nil {
		return fmt.Errorf("%s not up: %w", p.Name(), err)
	}
	return nil
}

// freePortIn returns a loopback TCP port in [lo, hi] that is free now
// (konnectivity refuses ports outside 1024–49151, where the kernel's
// ephemeral range mostly lies).
func freePortIn(lo, hi int) (int, error) {
	for range 200 {
		p := lo + rand.IntN(hi-lo+1)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		_ = l.Close()
		return p, nil
	}
	return 0, fmt.Errorf("no free port in %d-%d", lo, hi)
}

// loopbackAddr is a free loopback TCP address, as host:port.
func loopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// procCPU is the user and system CPU time a process has used (0 for nil or
// an unreadable process).
func procCPU(p *harness.Process) time.Duration {
	if p == nil {
		return 0
	}
	u, err := harness.ReadProcUsage(p.PID())
	if err != nil {
		return 0
	}
	return u.CPU
}

// vmRSS reads a process's resident set size in bytes.
func vmRSS(pid int) (float64, error) {
	u, err := harness.ReadProcUsage(pid)
	return float64(u.RSS), err
}

// httpGet returns the body of a GET on loopback.
func httpGet(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s: %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	return string(b), nil
}

// httpGetFloat reads a number served as a plain body.
func httpGetFloat(ctx context.Context, url string) (float64, error) {
	s, err := httpGet(ctx, url)
	if err != nil {
		return 0, err
	}
	return strconv.ParseFloat(strings.TrimSpace(s), 64)
}

// scrapeMetrics reads unlabelled series from a Prometheus text endpoint.
func scrapeMetrics(ctx context.Context, url string, names ...string) (map[string]float64, error) {
	body, err := httpGet(ctx, url)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		// An empty label set is written name{} by some exporters.
		name = strings.TrimSuffix(name, "{}")
		for _, n := range names {
			if name == n {
				if out[n], err = strconv.ParseFloat(strings.TrimSpace(val), 64); err != nil {
					return nil, fmt.Errorf("metric %s: %w", n, err)
				}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	var missing []string
	for _, n := range names {
		if _, ok := out[n]; !ok {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s has no %s", url, strings.Join(missing, ", "))
	}
	return out, nil
}
