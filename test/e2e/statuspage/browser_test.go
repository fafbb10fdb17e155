package statuspage

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/test/harness"
)

// envChromium names the browser binary; by default chromium on PATH
// (Debian's package, which `make deps` installs).
const envChromium = "BACKHAUL_CHROMIUM"

// bound is how long a test waits for the page to show something:
// generous, it fails only when something is stuck.
const bound = 60 * time.Second

func chromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv(envChromium); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	harness.Skip(t, "no chromium on PATH (apt-get install chromium, or `make deps`; or set %s)", envChromium)
	return ""
}

// browser is one headless Chromium for a test; each tab is a caller.
type browser struct {
	t     *testing.T
	ctx   context.Context // the first tab's, which owns the browser
	taken bool            // the first tab is in use
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)),
		chromedp.WindowSize(1440, 900),
		chromedp.Flag("disable-gpu", true),
		// The hub's serving certificate is the harness CA's.
		chromedp.Flag("ignore-certificate-errors", true),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to run as root otherwise
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc, chromedp.WithErrorf(t.Logf))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first action starts the browser; its context must not time out.
	require.NoError(t, chromedp.Do(ctx), "start %s", chromium(t))
	return &browser{t: t, ctx: ctx}
}

// tab is one page, with what its console said.
type tab struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	problems []string // exceptions, console errors, CSP violations
}

// tab opens a tab in the browser (the first call uses the first tab).
func (b *browser) tab() *tab {
	ctx := b.ctx
	if b.taken {
		var cancel context.CancelFunc
		ctx, cancel = chromedp.NewContext(b.ctx)
		b.t.Cleanup(cancel)
		require.NoError(b.t, chromedp.Do(ctx))
	}
	b.taken = true
	tb := &tab{t: b.t, ctx: ctx}
	_, err := chromedp.Call(ctx, log.Enable, struct{}{})
	require.NoError(b.t, err)
	entries := chromedp.Events(ctx, log.EntryAdded)
	exceptions := chromedp.Events(ctx, runtime.ExceptionThrown)
	console := chromedp.Events(ctx, runtime.ConsoleAPICalled)
	go func() {
		for ev, err := range entries {
			if err != nil {
				return
			}
			// A 401 before signing in is the page working as designed.
			if e := ev.Entry; e.Level == log.EntryLevelError && e.Source != log.EntrySourceNetwork {
				tb.problem("%s: %s (%s)", e.Source, e.Text, e.URL)
			}
		}
	}()
	go func() {
		for ev, err := range exceptions {
			if err != nil {
				return
			}
			d := ev.ExceptionDetails
			desc := ""
			if d.Exception != nil {
				desc = d.Exception.Description
			}
			tb.problem("exception at %s:%d: %s %s", d.URL, d.LineNumber, d.Text, desc)
		}
	}()
	go func() {
		for ev, err := range console {
			if err != nil {
				return
			}
			if ev.Type == runtime.ConsoleAPICalledTypeError {
				tb.problem("console.error: %v", ev.Args)
			}
		}
	}()
	return tb
}

func (tb *tab) problem(format string, args ...any) {
	tb.mu.Lock()
	tb.problems = append(tb.problems, fmt.Sprintf(format, args...))
	tb.mu.Unlock()
}

// noProblems fails when the page threw, logged an error or the browser
// refused something under the page's Content-Security-Policy.
func (tb *tab) noProblems() {
	tb.t.Helper()
	tb.mu.Lock()
	defer tb.mu.Unlock()
	require.Empty(tb.t, tb.problems, "the page ran cleanly")
}

func (tb *tab) do(steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, bound)
	defer cancel()
	require.NoError(tb.t, chromedp.Do(ctx, steps...))
}

func eval[T any](tb *tab, js string) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, bound)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js))
	require.NoError(tb.t, err, "%s", js)
	return v
}

// authorize makes every request of the tab carry the token, as a proxy
// in front of the browser would (the 10,000-cluster measurement skips the
// sign-in form this way).
func (tb *tab) authorize(token string) {
	tb.t.Helper()
	_, err := chromedp.Call(tb.ctx, network.Enable, network.EnableParams{})
	require.NoError(tb.t, err)
	_, err = chromedp.Call(tb.ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{
		Headers: network.Headers{"Authorization": "Bearer " + token}})
	require.NoError(tb.t, err)
}

// signIn opens the page as a human would: it answers 401 and asks for a
// token, which goes in the form.
func (tb *tab) signIn(url, token string) {
	tb.t.Helper()
	tb.do(
		chromedp.Navigate(url+"/status"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.ID("signin")),
		chromedp.WaitVisible(chromedp.ID("app")),
	)
}

// shown is what the page draws: cluster name → state, from the table's
// rows or the tiles, whichever is on.
func (tb *tab) shown() map[string]string {
	tb.t.Helper()
	raw := eval[[]byte](tb, `(() => {
		const sel = document.getElementById('tiles-view').hidden ? '#rows tr.row' : '#tiles .tile';
		const out = {};
		for (const e of document.querySelectorAll(sel)) out[e.dataset.name] = e.dataset.state;
		return out;
	})()`)
	got := map[string]string{}
	require.NoError(tb.t, json.Unmarshal(raw, &got))
	return got
}

// waitShown waits until the page draws exactly want.
func (tb *tab) waitShown(what string, want map[string]string) {
	tb.t.Helper()
	deadline := time.Now().Add(bound)
	for {
		got := tb.shown()
		if maps.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			tb.t.Fatalf("%s: the page shows %v, want %v", what, got, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// search types q into the search box (clearing it first).
func (tb *tab) search(q string) {
	tb.t.Helper()
	tb.do(chromedp.Evaluate[chromedp.Void](`(() => { const s = document.getElementById('search'); s.value = ''; s.dispatchEvent(new Event('input')); })()`))
	if q != "" {
		tb.do(chromedp.SendKeys(chromedp.ID("search"), q))
	}
}

// filter picks an option of the filter menu, as a click on it would.
func (tb *tab) filter(value string) {
	tb.t.Helper()
	tb.do(chromedp.Evaluate[chromedp.Void](fmt.Sprintf(`(() => { const f = document.getElementById('filter'); f.value = %q; f.dispatchEvent(new Event('change')); })()`, value)))
}

// screenshot saves the tab as _output/artifacts/NAME.png.
func (tb *tab) screenshot(name string) string {
	tb.t.Helper()
	root, err := harness.RepoRoot()
	require.NoError(tb.t, err)
	dir := filepath.Join(root, "_output", "artifacts")
	require.NoError(tb.t, os.MkdirAll(dir, 0o755))
	ctx, cancel := context.WithTimeout(tb.ctx, bound)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	require.NoError(tb.t, err)
	path := filepath.Join(dir, name+".png")
	require.NoError(tb.t, os.WriteFile(path, png, 0o644))
	tb.t.Logf("screenshot: %s", path)
	return path
}

func states(kv ...string) map[string]string {
	out := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}
