package ha

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"backhaul.io/backhaul/test/harness"
)

// Cadences of the client loop.
const (
	getEvery   = 100 * time.Millisecond
	writeEvery = 500 * time.Millisecond
	// callTimeout bounds one list or create; a hub that takes longer has
	// failed the caller.
	callTimeout = 15 * time.Second
)

// call is the outcome of one request through the virtual IP.
type call struct {
	kind    string // get, create, watch (the request that opens a watch)
	cluster string
	start   time.Time
	end     time.Time
	status  int    // HTTP status; 0 when no response came
	err     string // transport error or the body of a failed response
	refused bool   // the TCP connect was refused (a backend without a listener)
	// retryAfter is the answer's Retry-After: the hub says try again (a
	// replica that cannot reach its host cannot authenticate callers).
	retryAfter string
	// via is the replica the virtual IP sent a failed call to (from
	// conntrack), "" when it cannot be told (no connection was made).
	via string
}

func (c call) ok() bool { return c.err == "" && c.status >= 200 && c.status < 300 }

func (c call) String() string {
	return fmt.Sprintf("%s %s at %s (%v) via %s: status %d %s", c.kind, c.cluster, c.start.Format("15:04:05.000"),
		c.end.Sub(c.start).Round(time.Millisecond), orUnknown(c.via), c.status, c.err)
}

// traffic is the client loop of one scenario, per member: a list every
// 100 ms, a configmap created every 500 ms, and a watch following those
// configmaps, all through the virtual IP. Each list and create is a new
// connection (no keep-alive), so the kernel picks a replica for each.
type traffic struct {
	e     *environment
	label string // prefixes the configmaps this scenario creates
	calls *http.Client
	watch *http.Client

	stopLoops context.CancelFunc
	loops     sync.WaitGroup // the loops and the calls they started
	stopWatch context.CancelFunc
	watching  sync.WaitGroup

	mu       sync.Mutex
	log      []call
	created  map[string][]string // cluster → names created (201)
	watchers map[string]*watcher
	started  time.Time
	stopped  time.Time
}

func (e *environment) hubTLS() *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.ca.CertPEM)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// startTraffic starts the loops; stop ends them (t.Cleanup does too).
func (e *environment) startTraffic(t *testing.T, label string) *traffic {
	t.Helper()
	dial := recordingDial(&net.Dialer{Timeout: 5 * time.Second})
	tr := &traffic{
		e: e, label: label,
		calls: &http.Client{Timeout: callTimeout, Transport: &http.Transport{
			DialContext: dial, TLSClientConfig: e.hubTLS(), DisableKeepAlives: true,
		}},
		watch: &http.Client{Transport: &http.Transport{
			DialContext: dial, TLSClientConfig: e.hubTLS(), DisableKeepAlives: true,
			ResponseHeaderTimeout: callTimeout,
		}},
		created: map[string][]string{}, watchers: map[string]*watcher{}, started: time.Now(),
	}
	loopCtx, stopLoops := context.WithCancel(context.Background())
	watchCtx, stopWatch := context.WithCancel(context.Background())
	tr.stopLoops, tr.stopWatch = stopLoops, stopWatch
	for _, c := range memberNames {
		w := &watcher{tr: tr, cluster: c, seen: map[string]bool{}}
		tr.watchers[c] = w
		tr.watching.Go(func() { w.run(watchCtx) })
		tr.loops.Go(func() { tr.every(loopCtx, getEvery, func() { tr.list(c) }) })
		tr.loops.Go(func() {
			var n atomic.Int64 // each create runs in a goroutine of its own
			tr.every(loopCtx, writeEvery, func() {
				tr.create(c, fmt.Sprintf("%s-%05d", label, n.Add(1)))
			})
		})
	}
	t.Cleanup(func() { stopLoops(); stopWatch(); tr.loops.Wait(); tr.watching.Wait() })
	return tr
}

// every calls f in a goroutine of its own every interval: a slow call
// does not delay the next (the loop is open, as independent clients are).
func (tr *traffic) every(ctx context.Context, interval time.Duration, f func()) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			tr.loops.Go(f)
		}
	}
}

func (tr *traffic) url(cluster, path string) string {
	return "https://" + tr.e.vip.String() + "/clusters/" + cluster + path
}

func (tr *traffic) record(c call) {
	tr.mu.Lock()
	tr.log = append(tr.log, c)
	tr.mu.Unlock()
}

// do sends req and records the outcome; the body of a successful
// response is returned.
func (tr *traffic) do(kind, cluster string, req *http.Request, want int) []byte {
	req.Header.Set("Authorization", "Bearer "+tr.e.callerToken)
	local := &localAddr{}
	req = req.WithContext(context.WithValue(req.Context(), localAddrKey{}, local))
	c := call{kind: kind, cluster: cluster, start: time.Now()}
	resp, err := tr.calls.Do(req)
	var body []byte
	if err == nil {
		body, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		c.status = resp.StatusCode
		c.retryAfter = resp.Header.Get("Retry-After")
	}
	c.end = time.Now()
	if req.Context().Err() != nil {
		return nil // the scenario ended it, not the hub
	}
	switch {
	case err != nil:
		c.err = err.Error()
		c.refused = errors.Is(err, syscall.ECONNREFUSED)
	case c.status != want:
		c.err = fmt.Sprintf("want %d: %s", want, truncate(string(body), 300))
	}
	if !c.ok() {
		c.via = tr.e.replicaOf(local.get())
	}
	tr.record(c)
	if !c.ok() {
		return nil
	}
	return body
}

func (tr *traffic) list(cluster string) {
	req, _ := http.NewRequest(http.MethodGet, tr.url(cluster, "/api/v1/namespaces/default/configmaps"), nil)
	tr.do("get", cluster, req, http.StatusOK)
}

func (tr *traffic) create(cluster, name string) {
	body := fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":%q},"data":{"by":"ha-e2e"}}`, name)
	req, _ := http.NewRequest(http.MethodPost, tr.url(cluster, "/api/v1/namespaces/"+watchNS+"/configmaps"), strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if tr.do("create", cluster, req, http.StatusCreated) != nil {
		tr.mu.Lock()
		tr.created[cluster] = append(tr.created[cluster], name)
		tr.mu.Unlock()
	}
}

// stop ends the list and create loops, lets the calls in flight finish,
// waits (generously) until each watcher has seen every configmap of this
// scenario that exists in its member, and ends the watches. It returns,
// per cluster, the names the member has that the watcher never saw.
func (tr *traffic) stop(ctx context.Context) map[string][]string {
	tr.stopLoops()
	tr.loops.Wait()
	missing := map[string][]string{}
	for _, c := range memberNames {
		var miss []string
		err := harness.WaitFor(ctx, 90*time.Second, 250*time.Millisecond, func() error {
			names, err := tr.e.memberConfigMaps(ctx, c, tr.label+"-")
			if err != nil {
				return err
			}
			tr.mu.Lock()
			for _, n := range tr.created[c] {
				if !slices.Contains(names, n) {
					names = append(names, n) // a 201 the member does not list: also missing
				}
			}
			tr.mu.Unlock()
			miss = tr.watchers[c].missing(names)
			if len(miss) > 0 {
				return fmt.Errorf("watch of %s has not seen %d of %d: %v", c, len(miss), len(names), head(miss, 5))
			}
			return nil
		})
		if err != nil {
			missing[c] = miss
			if len(miss) == 0 {
				missing[c] = []string{"(could not compare: " + err.Error() + ")"}
			}
		}
	}
	tr.stopWatch()
	tr.watching.Wait()
	tr.stopped = time.Now()
	return missing
}

// memberConfigMaps lists the configmaps in watchNS named with prefix,
// straight from the member (the truth the watch is compared with).
func (e *environment) memberConfigMaps(ctx context.Context, cluster, prefix string) ([]string, error) {
	out, stderr, err := e.members[cluster].Kubectl(ctx, "-n", watchNS, "get", "configmaps", "-o", "jsonpath={.items[*].metadata.name}")
	if err != nil {
		return nil, fmt.Errorf("%w: %s", err, stderr)
	}
	var names []string
	for _, n := range strings.Fields(out) {
		if strings.HasPrefix(n, prefix) {
			names = append(names, n)
		}
	}
	return names, nil
}

// calls returns a copy of the recorded calls.
func (tr *traffic) callsCopy() []call {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return slices.Clone(tr.log)
}

// localAddrKey carries a *localAddr in a request's context: the dialer
// stores the connection's local address there, which conntrack maps to
// the replica the virtual IP picked.
type localAddrKey struct{}

type localAddr struct {
	mu   sync.Mutex
	addr netip.AddrPort
}

func (l *localAddr) set(a net.Addr) {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return
	}
	l.mu.Lock()
	l.addr = ap
	l.mu.Unlock()
}

func (l *localAddr) get() netip.AddrPort {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.addr
}

// recordingDial dials with d and records the local address in the
// request's *localAddr, if it carries one.
func recordingDial(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			if l, ok := ctx.Value(localAddrKey{}).(*localAddr); ok {
				l.set(c.LocalAddr())
			}
		}
		return c, err
	}
}

// replicaOf names the replica the virtual IP sent the connection from
// local to, or "" if that cannot be told.
func (e *environment) replicaOf(local netip.AddrPort) string {
	if !local.IsValid() {
		return ""
	}
	b, ok := e.vip.BackendOf(local)
	if !ok {
		return ""
	}
	for _, r := range e.replicas {
		if r.backend() == b {
			return r.name
		}
	}
	return b.String()
}

func orUnknown(s string) string {
	if s == "" {
		return "?"
	}
	return s
}

func truncate(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func head[T any](s []T, n int) []T {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// callFigures summarize the calls of one kind to one cluster.
type callFigures struct {
	total, failed int
	// maxGap is the longest time between two successive successful
	// answers (by completion); firstFail..lastFail spans the failures.
	maxGap              time.Duration
	firstFail, lastFail time.Time
	p50, p99, max       time.Duration
}

func summarize(cs []call) callFigures {
	var f callFigures
	var okEnds []time.Time
	var lat []time.Duration
	for _, c := range cs {
		f.total++
		if !c.ok() {
			f.failed++
			if f.firstFail.IsZero() || c.start.Before(f.firstFail) {
				f.firstFail = c.start
			}
			if c.end.After(f.lastFail) {
				f.lastFail = c.end
			}
			continue
		}
		okEnds = append(okEnds, c.end)
		lat = append(lat, c.end.Sub(c.start))
	}
	slices.SortFunc(okEnds, func(a, b time.Time) int { return a.Compare(b) })
	for i := 1; i < len(okEnds); i++ {
		f.maxGap = max(f.maxGap, okEnds[i].Sub(okEnds[i-1]))
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		f.p50, f.p99, f.max = lat[len(lat)/2], lat[len(lat)*99/100], lat[len(lat)-1]
	}
	return f
}

func ms(d time.Duration) int64 { return d.Milliseconds() }

// haLine logs one parseable figure line: "HA: scenario=S k=v k=v ...".
func haLine(t *testing.T, scenario string, kv ...any) {
	t.Helper()
	var b bytes.Buffer
	fmt.Fprintf(&b, "HA: scenario=%s", scenario)
	for i := 0; i+1 < len(kv); i += 2 {
		v := fmt.Sprint(kv[i+1])
		if strings.ContainsAny(v, " \t\"") || v == "" {
			v = fmt.Sprintf("%q", v)
		}
		fmt.Fprintf(&b, " %v=%s", kv[i], v)
	}
	t.Log(b.String())
}

// reportTraffic logs the figures of the calls and watches, per cluster and
// kind, and returns the calls that failed and are not excused by lost.
func (tr *traffic) reportTraffic(t *testing.T, scenario string, lost func(call) bool) (failed []call, excused []call) {
	t.Helper()
	cs := tr.callsCopy()
	for _, c := range cs {
		if c.ok() {
			continue
		}
		if lost != nil && lost(c) {
			excused = append(excused, c)
		} else {
			failed = append(failed, c)
		}
	}
	for _, cl := range memberNames {
		for _, kind := range []string{"get", "create", "watch"} {
			var sel []call
			for _, c := range cs {
				if c.cluster == cl && c.kind == kind {
					sel = append(sel, c)
				}
			}
			f := summarize(sel)
			var outage time.Duration
			if f.failed > 0 {
				outage = f.lastFail.Sub(f.firstFail)
			}
			haLine(t, scenario, "cluster", cl, "calls", kind, "total", f.total, "failed", f.failed,
				"max_gap_ms", ms(f.maxGap), "fail_span_ms", ms(outage),
				"p50_ms", ms(f.p50), "p99_ms", ms(f.p99), "max_ms", ms(f.max))
		}
		wf := tr.watchers[cl].figures()
		haLine(t, scenario, "cluster", cl, "watch_opened", wf.opened, "watch_clean_ends", wf.cleanEnds,
			"watch_errors", len(wf.errs), "relists", wf.relists, "clean_ends_via", strings.Join(wf.cleanVia, ","))
		for _, e := range wf.errs {
			t.Logf("watch %s error: %s", cl, e)
		}
	}
	for _, c := range excused {
		t.Logf("excused: %s", c)
	}
	// The failures, the first few in full and all by replica and answer.
	kinds := map[string]int{}
	for i, c := range failed {
		if i < 20 {
			t.Logf("FAILED: %s", c)
		}
		kinds[fmt.Sprintf("via %s: %d %s", orUnknown(c.via), c.status, truncate(c.err, 120))]++
	}
	for k, n := range kinds {
		t.Logf("FAILED %d× %s", n, k)
	}
	return failed, excused
}

// waitWatching waits until every watcher has a watch open.
func (tr *traffic) waitWatching(ctx context.Context) error {
	return harness.WaitFor(ctx, time.Minute, 100*time.Millisecond, func() error {
		for c, w := range tr.watchers {
			if w.figures().opened == 0 {
				return fmt.Errorf("no watch open on %s yet", c)
			}
		}
		return nil
	})
}
