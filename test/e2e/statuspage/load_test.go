package statuspage

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/statuspage"
	"backhaul.io/backhaul/hub/statuspage/statuspagetest"
)

// TestStatusPage10kClusters measures the page with a fleet of 10,000
// clusters in headless Chromium: the hub's own handler serves a fake
// fleet in-process (the browser and the page are the real ones). It
// prints, as "status page 10k:" lines, the time from navigation to the
// first rows drawn (a first viewer, whose request waits for the first
// snapshot, and a reload), what an update costs the browser, and how
// long search, filter and the tiles view take to redraw; and checks that
// only a screenful is drawn, that scrolling reaches the last cluster,
// that flapping clusters are highlighted, and that a change appears live.
func TestStatusPage10kClusters(t *testing.T) {
	const n = 10000
	fleet := statuspagetest.NewFleet(n)
	authz := statuspagetest.NewAuthz()
	authz.GrantAll("admin")
	cfg := statuspagetest.Config(t, fleet, authz, map[string]*auth.User{"admin-token": {Name: "admin"}})
	cfg.Refresh, cfg.Poll = 500*time.Millisecond, time.Second
	srv := httptest.NewServer(statuspagetest.Serve(t, cfg))
	t.Cleanup(srv.Close)

	b := newBrowser(t)
	tb := b.tab()
	tb.authorize("admin-token")

	load := func() (wall time.Duration, mark float64) {
		start := time.Now()
		tb.do(chromedp.Navigate(srv.URL+"/status"), chromedp.WaitVisible(chromedp.CSS("#rows tr.row")))
		wall = time.Since(start)
		return wall, eval[float64](tb, `performance.getEntriesByName('status-first-rows')[0].startTime`)
	}
	coldWall, coldMark := load()
	warmWall, warmMark := load()
	assert.Equal(t, fmt.Sprintf("%d shown", n), eval[string](tb, `document.getElementById('shown').textContent`))
	drawn := eval[int](tb, `document.querySelectorAll('#rows tr.row').length`)
	assert.Less(t, drawn, 200, "a screenful of rows is drawn, not the fleet")
	fetch, parse, apply := measures(tb, "status-fetch"), measures(tb, "status-parse"), measures(tb, "status-apply")
	// The rows on screen get their sparklines (and only they asked).
	waitJS(t, tb, `document.querySelectorAll('#rows svg.spark polyline').length > 10`, "sparklines")
	assert.LessOrEqual(t, fleet.Histories.Load(), int64(2*drawn), "histories are read for the rows on screen only")
	tb.screenshot("statuspage-10k")

	// The answer on the wire.
	req, err := http.NewRequest(http.MethodGet, srv.URL+statuspage.PathClusters, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer admin-token")
	req.Header.Set("Accept-Encoding", "gzip")
	resp, err := (&http.Transport{DisableCompression: true}).RoundTrip(req)
	require.NoError(t, err)
	wire, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	_ = resp.Body.Close()

	// Scrolling to the end draws the last clusters.
	tb.do(chromedp.Evaluate[chromedp.Void](`(() => { const s = document.getElementById('table-view'); s.scrollTop = s.scrollHeight; })()`))
	last := statuspagetest.Name(n - 1)
	waitJS(t, tb, fmt.Sprintf(`!!document.querySelector('#rows tr.row[data-name=%q]')`, last), "the last cluster after scrolling")
	tb.do(chromedp.Evaluate[chromedp.Void](`document.getElementById('table-view').scrollTop = 0`))

	// Redraws, timed in the page: the input's handler filters, sorts
	// and draws synchronously.
	timed := func(js string) float64 {
		return eval[float64](tb, `(() => { const t = performance.now(); `+js+`; return performance.now() - t; })()`)
	}
	searchMs := timed(`const s = document.getElementById('search'); s.value = 'site-0999'; s.dispatchEvent(new Event('input'))`)
	assert.Equal(t, fmt.Sprintf("10 of %d shown", n), eval[string](tb, `document.getElementById('shown').textContent`))
	timed(`const s = document.getElementById('search'); s.value = ''; s.dispatchEvent(new Event('input'))`)
	filterMs := timed(`const f = document.getElementById('filter'); f.value = 'flapping'; f.dispatchEvent(new Event('change'))`)
	flapping := (n + 96) / 97
	assert.Equal(t, fmt.Sprintf("%d of %d shown", flapping, n), eval[string](tb, `document.getElementById('shown').textContent`))
	assert.True(t, eval[bool](tb, `[...document.querySelectorAll('#rows tr.row')].every(r => r.dataset.flapping === 'true' && r.classList.contains('flapping'))`))
	assert.Equal(t, "rgb(255, 244, 214)", eval[string](tb, `getComputedStyle(document.querySelector('#rows tr.row td')).backgroundColor`), "flapping rows are highlighted")
	tb.screenshot("statuspage-10k-flapping")
	timed(`const f = document.getElementById('filter'); f.value = 'all'; f.dispatchEvent(new Event('change'))`)
	// Sorting by state puts the disconnected first, flapping ones ahead.
	sortMs := timed(`document.querySelector('th[data-sort=state]').click()`)
	assert.Equal(t, "disconnected true", eval[string](tb, `(r => r.dataset.state + ' ' + r.dataset.flapping)(document.querySelector('#rows tr.row'))`))
	timed(`document.querySelector('th[data-sort=name]').click()`)
	assert.Equal(t, statuspagetest.Name(0), eval[string](tb, `document.querySelector('#rows tr.row').dataset.name`))
	tilesMs := timed(`document.getElementById('view-tiles').click()`)
	tiles := eval[int](tb, `document.querySelectorAll('#tiles .tile').length`)
	assert.Positive(t, tiles)
	assert.Less(t, tiles, 300, "a screenful of tiles is drawn, not the fleet")
	tb.screenshot("statuspage-10k-tiles")
	timed(`document.getElementById('view-table').click()`)

	// A change in the fleet reaches the open page, and costs the browser
	// one parse and one redraw of what is on screen.
	before := len(measures(tb, "status-apply"))
	name := statuspagetest.Name(1)
	require.True(t, fleet.Update(name, func(c *statuspage.Cluster) { c.Connected, c.Ready = false, false }))
	waitJS(t, tb, fmt.Sprintf(`document.querySelector('#rows tr.row[data-name=%q]')?.dataset.state === 'disconnected'`, name), name+" disconnected, live")
	updates := measures(tb, "status-apply")[before:]
	require.NotEmpty(t, updates)
	updFetch, updParse := measures(tb, "status-fetch"), measures(tb, "status-parse")
	tb.noProblems()

	t.Logf("status page 10k: %d clusters, answer %d KiB gzip; %d rows drawn of %d", n, len(wire)/1024, drawn, n)
	t.Logf("status page 10k: navigation to first rows drawn: first viewer %.0f ms (page mark; %v by the driver), reload %.0f ms (%v)",
		coldMark, coldWall.Round(time.Millisecond), warmMark, warmWall.Round(time.Millisecond))
	t.Logf("status page 10k: first load in the page: fetch %.0f ms, JSON.parse %.0f ms, filter+sort+draw %.0f ms",
		fetch[0], parse[0], apply[0])
	t.Logf("status page 10k: one update: fetch %.0f ms, JSON.parse %.0f ms, filter+sort+draw %.0f ms",
		updFetch[len(updFetch)-1], updParse[len(updParse)-1], updates[len(updates)-1])
	t.Logf("status page 10k: redraw after search %.1f ms, filter %.1f ms, sort %.1f ms, switch to tiles %.1f ms", searchMs, filterMs, sortMs, tilesMs)
}

// measures are the durations (ms) of the page's performance measures
// called name, oldest first.
func measures(tb *tab, name string) []float64 {
	return eval[[]float64](tb, fmt.Sprintf(`performance.getEntriesByName(%q).map(e => e.duration)`, name))
}

// waitJS waits until the expression is true in the page.
func waitJS(t *testing.T, tb *tab, expr, what string) {
	t.Helper()
	deadline := time.Now().Add(bound)
	for !eval[bool](tb, expr) {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %s stayed false", what, strings.TrimSpace(expr))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
