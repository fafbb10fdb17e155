package nodes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"backhaul.io/backhaul/test/harness"
)

// The client load the operations tests keep up through the hub: GETs on
// new and kept-alive connections, creates, and a watch re-opened from its
// last resourceVersion as client-go does.

// opsCall is the outcome of one request of the loop.
type opsCall struct {
	kind       string // get-new-conn, get-keepalive, create, watch-open
	start, end time.Time
	err        string
}

// opsLoad is the client loop through the hub to m1: GET /version every
// 100 ms on a new connection and on a kept-alive one, a ConfigMap
// created every 500 ms, and a watch of those ConfigMaps the way
// client-go's reflector keeps one: list, watch from there, and when a
// watch ends, watch again from the last resourceVersion seen. A watch the
// server ends between two events (the body ends: io.EOF) is clean; one
// that breaks (unexpected EOF, a reset, an ERROR event) is an error a
// client would see.
type opsLoad struct {
	e                   *environment
	ns                  string
	fresh, kept, watchC *http.Client

	stopLoops, stopWatch context.CancelFunc
	loops, watching      sync.WaitGroup

	mu      sync.Mutex
	calls   []opsCall
	created []string
	seen    map[string]bool
	rv      string
	opened  int
	clean   int
	errs    []string
}

func (e *environment) opsStartLoad(ctx context.Context, t *testing.T, label string) *opsLoad {
	t.Helper()
	l := &opsLoad{
		e: e, ns: "ops-" + label,
		fresh: e.opsHubClient(false), kept: e.opsHubClient(true),
		watchC: &http.Client{Transport: &http.Transport{
			TLSClientConfig:       e.opsHubTLS(),
			DisableKeepAlives:     true,
			ResponseHeaderTimeout: opsCallTimeout,
		}},
		seen: map[string]bool{},
	}
	_, stderr, err := e.m1.Kubectl(ctx, "create", "namespace", l.ns)
	require.NoError(t, err, stderr)
	t.Cleanup(func() { _, _, _ = e.m1.Kubectl(context.Background(), "delete", "namespace", l.ns, "--wait=false") })

	loopCtx, stopLoops := context.WithCancel(context.Background())
	watchCtx, stopWatch := context.WithCancel(context.Background())
	l.stopLoops, l.stopWatch = stopLoops, stopWatch
	l.watching.Go(func() { l.watch(watchCtx) })
	l.loops.Go(func() { l.every(loopCtx, opsGetEvery, func() { l.get(loopCtx, "get-new-conn", l.fresh) }) })
	l.loops.Go(func() { l.every(loopCtx, opsGetEvery, func() { l.get(loopCtx, "get-keepalive", l.kept) }) })
	l.loops.Go(func() {
		var n atomic.Int64 // each create runs in a goroutine of its own
		l.every(loopCtx, opsWriteEvery, func() { l.create(loopCtx, fmt.Sprintf("cm-%05d", n.Add(1))) })
	})
	t.Cleanup(func() { stopLoops(); stopWatch(); l.loops.Wait(); l.watching.Wait() })
	return l
}

// every calls f in a goroutine of its own every interval: a slow call
// does not delay the next, as with independent clients.
func (l *opsLoad) every(ctx context.Context, interval time.Duration, f func()) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			l.loops.Go(f)
		}
	}
}

func (l *opsLoad) record(c opsCall) {
	l.mu.Lock()
	l.calls = append(l.calls, c)
	l.mu.Unlock()
}

func (l *opsLoad) get(ctx context.Context, kind string, c *http.Client) {
	call := opsCall{kind: kind, start: time.Now()}
	err := l.e.opsGetVersion(ctx, c)
	call.end = time.Now()
	if ctx.Err() != nil {
		return // the test ended it, not the hub
	}
	if err != nil {
		call.err = err.Error()
	}
	l.record(call)
}

func (l *opsLoad) create(ctx context.Context, name string) {
	body := fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":%q},"data":{"by":"ops-e2e"}}`, name)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.e.opsURL("/api/v1/namespaces/"+l.ns+"/configmaps"), strings.NewReader(body))
	if err != nil {
		return
	}
	req.Header.Set("Content-Type", "application/json")
	call := opsCall{kind: "create", start: time.Now()}
	_, err = l.e.opsDo(l.fresh, req, http.StatusCreated)
	call.end = time.Now()
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		call.err = err.Error()
	} else {
		l.mu.Lock()
		l.created = append(l.created, name)
		l.mu.Unlock()
	}
	l.record(call)
}

func (l *opsLoad) watch(ctx context.Context) {
	for ctx.Err() == nil {
		if l.resourceVersion() == "" {
			if err := l.list(ctx); err != nil {
				if ctx.Err() == nil {
					l.fail(fmt.Errorf("list: %w", err))
					opsSleep(ctx, 200*time.Millisecond)
				}
				continue
			}
		}
		err := l.watchOnce(ctx)
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			l.mu.Lock()
			l.clean++
			l.mu.Unlock()
		default:
			l.fail(err)
			opsSleep(ctx, 200*time.Millisecond)
		}
	}
}

func (l *opsLoad) resourceVersion() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.rv
}

func (l *opsLoad) fail(err error) {
	l.mu.Lock()
	l.errs = append(l.errs, time.Now().Format("15:04:05.000")+" "+err.Error())
	l.mu.Unlock()
}

type opsObjectMeta struct {
	Metadata struct {
		Name            string `json:"name"`
		ResourceVersion string `json:"resourceVersion"`
	} `json:"metadata"`
}

func (l *opsLoad) list(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.e.opsURL("/api/v1/namespaces/"+l.ns+"/configmaps"), nil)
	if err != nil {
		return err
	}
	body, err := l.e.opsDo(l.fresh, req, http.StatusOK)
	if err != nil {
		return err
	}
	var list struct {
		opsObjectMeta
		Items []opsObjectMeta `json:"items"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, it := range list.Items {
		l.seen[it.Metadata.Name] = true
	}
	l.rv = list.Metadata.ResourceVersion
	return nil
}

// watchOnce runs one watch to its end: nil when the server ended it
// cleanly.
func (l *opsLoad) watchOnce(ctx context.Context) error {
	url := l.e.opsURL("/api/v1/namespaces/" + l.ns + "/configmaps?watch=true&allowWatchBookmarks=true&resourceVersion=" + l.resourceVersion())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+l.e.adminToken)
	call := opsCall{kind: "watch-open", start: time.Now()}
	resp, err := l.watchC.Do(req)
	call.end = time.Now()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		call.err = err.Error()
		l.record(call)
		return fmt.Errorf("open watch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		call.err = fmt.Sprintf("status %d: %s", resp.StatusCode, opsTruncate(string(b), 300))
		l.record(call)
		return fmt.Errorf("open watch: %s", call.err)
	}
	l.record(call)
	l.mu.Lock()
	l.opened++
	l.mu.Unlock()
	dec := json.NewDecoder(resp.Body)
	for {
		var ev struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		if err := dec.Decode(&ev); err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("watch opened %s: stream: %w", call.start.Format("15:04:05.000"), err)
		}
		if ev.Type == "ERROR" {
			var st metav1.Status
			_ = json.Unmarshal(ev.Object, &st)
			if st.Code == http.StatusGone {
				l.mu.Lock()
				l.rv = "" // too old: list again
				l.mu.Unlock()
			}
			return fmt.Errorf("watch: ERROR event: %d %s", st.Code, st.Message)
		}
		var obj opsObjectMeta
		if err := json.Unmarshal(ev.Object, &obj); err != nil {
			return fmt.Errorf("watch event: %w", err)
		}
		l.mu.Lock()
		if ev.Type == "ADDED" || ev.Type == "MODIFIED" {
			l.seen[obj.Metadata.Name] = true
		}
		if obj.Metadata.ResourceVersion != "" {
			l.rv = obj.Metadata.ResourceVersion
		}
		l.mu.Unlock()
	}
}

// waitWatching waits until the first watch is open.
func (l *opsLoad) waitWatching(ctx context.Context) error {
	return harness.WaitFor(ctx, time.Minute, 100*time.Millisecond, func() error {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.opened == 0 {
			return fmt.Errorf("no watch open yet: %v", l.errs)
		}
		return nil
	})
}

// stop ends the loops, lets the calls in flight finish, waits until the
// watch has seen every ConfigMap created (or that m1 has), and ends the
// watch. It returns the names the watch never saw.
func (l *opsLoad) stop(ctx context.Context) []string {
	l.stopLoops()
	l.loops.Wait()
	var miss []string
	err := harness.WaitFor(ctx, 90*time.Second, 250*time.Millisecond, func() error {
		out, _, err := l.e.m1.Kubectl(ctx, "-n", l.ns, "get", "configmaps", "-o", "jsonpath={.items[*].metadata.name}")
		if err != nil {
			return err
		}
		names := strings.Fields(out)
		l.mu.Lock()
		for _, n := range l.created {
			if !slices.Contains(names, n) {
				names = append(names, n) // a 201 m1 does not list: missing too
			}
		}
		miss = miss[:0]
		for _, n := range names {
			if strings.HasPrefix(n, "cm-") && !l.seen[n] {
				miss = append(miss, n)
			}
		}
		l.mu.Unlock()
		if len(miss) > 0 {
			return fmt.Errorf("the watch has not seen %d of %d: %v", len(miss), len(names), opsHead(miss, 5))
		}
		return nil
	})
	if err != nil && len(miss) == 0 {
		miss = []string{"(could not compare: " + err.Error() + ")"}
	}
	l.stopWatch()
	l.watching.Wait()
	return miss
}

// stopAndReport stops the loop, reports it, and asserts that nothing a
// client would see failed; it returns the failed calls.
func (l *opsLoad) stopAndReport(ctx context.Context, t *testing.T, test string) []opsCall {
	t.Helper()
	missing := l.stop(ctx)
	failed := l.report(t, test)
	w := l.watchFigures()
	assert.Empty(t, failed, "requests through the hub failed")
	assert.Empty(t, w.errs, "the watch ended with an error a client would see")
	assert.Empty(t, missing, "the watch missed ConfigMaps")
	return failed
}

type opsWatchFigures struct {
	opened, cleanEnds, created int
	errs                       []string
}

func (l *opsLoad) watchFigures() opsWatchFigures {
	l.mu.Lock()
	defer l.mu.Unlock()
	return opsWatchFigures{opened: l.opened, cleanEnds: l.clean, created: len(l.created), errs: slices.Clone(l.errs)}
}

// report logs, per kind of call, how many were sent and failed and the
// longest time between two successful answers, then every failure, and
// the watch's figures; it returns the failed calls.
func (l *opsLoad) report(t *testing.T, test string) []opsCall {
	t.Helper()
	l.mu.Lock()
	calls := slices.Clone(l.calls)
	l.mu.Unlock()
	var failed []opsCall
	for _, kind := range []string{"get-new-conn", "get-keepalive", "create", "watch-open"} {
		var n, bad int
		var okEnds []time.Time
		var slowest time.Duration
		for _, c := range calls {
			if c.kind != kind {
				continue
			}
			n++
			if c.err != "" {
				bad++
				failed = append(failed, c)
				continue
			}
			okEnds = append(okEnds, c.end)
			slowest = max(slowest, c.end.Sub(c.start))
		}
		slices.SortFunc(okEnds, func(a, b time.Time) int { return a.Compare(b) })
		var gap time.Duration
		for i := 1; i < len(okEnds); i++ {
			gap = max(gap, okEnds[i].Sub(okEnds[i-1]))
		}
		opsFigure(t, test, "load", kind, "requests", n, "failed", bad, "max_gap_between_answers_ms", gap.Milliseconds(),
			"slowest_ms", slowest.Milliseconds())
	}
	for _, c := range failed {
		t.Logf("failed %s at %s after %v: %s", c.kind, c.start.Format("15:04:05.000"), c.end.Sub(c.start).Round(time.Millisecond), c.err)
	}
	w := l.watchFigures()
	opsFigure(t, test, "load", "watch", "opened", w.opened, "clean_ends", w.cleanEnds, "errors", len(w.errs))
	for _, e := range w.errs {
		t.Logf("watch error: %s", e)
	}
	return failed
}

// --- Logs.
