package statuspage

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStatusPageShowsTheReachableFleet signs in as two callers of the
// hub: admin sees the three registered clusters (two connected, one that
// never connected), alice only the one the host's RBAC lets her reach.
// Search, filters and the tiles view show what they should, the page
// runs under its Content-Security-Policy without an error, and the
// screenshots are kept.
func TestStatusPageShowsTheReachableFleet(t *testing.T) {
	e := requireEnv(t)
	b := newBrowser(t)

	// Without credentials, the API says 401; the page asks for a token.
	anon, err := e.hubClient().Get(e.hub.URL + "/status/api/clusters")
	require.NoError(t, err)
	_ = anon.Body.Close()
	assert.Equal(t, http.StatusUnauthorized, anon.StatusCode)

	admin := b.tab()
	admin.signIn(e.hub.URL, callers["admin"].Token)
	fleet := states("sp1", "connected", "sp2", "connected", never, "disconnected")
	admin.waitShown("admin's fleet", fleet)
	assert.Equal(t, "status-admin · via "+e.hubReplica(t), eval[string](admin, `document.getElementById('who').textContent`))
	summary := eval[string](admin, `document.getElementById('summary').textContent`)
	assert.Contains(t, summary, "3clusters")
	assert.Contains(t, summary, "2connected")
	assert.Contains(t, summary, "1disconnected")
	// The never-connected cluster says so.
	assert.Equal(t, "never connected here", eval[string](admin,
		`document.querySelector('#rows tr.row[data-name="sp3"] td:last-child').textContent`))
	// A sparkline per row, once the histories came (the prober's, of this
	// replica; a cluster never connected has none).
	waitJS(t, admin, `document.querySelectorAll('#rows tr.row .spark').length === 3 && !document.querySelector('#rows svg.spark:not(:has(polyline))')`, "the rows' histories")
	assert.Equal(t, "no samples", eval[string](admin, `document.querySelector('#rows tr.row[data-name="sp3"] .spark').textContent`))
	admin.screenshot("statuspage")

	t.Run("search", func(t *testing.T) {
		admin.search("sp2")
		admin.waitShown("search sp2", states("sp2", "connected"))
		admin.search("disconnected")
		admin.waitShown("search by state", states(never, "disconnected"))
		admin.search("")
		admin.waitShown("search cleared", fleet)
	})
	t.Run("filters", func(t *testing.T) {
		admin.filter("disconnected")
		admin.waitShown("disconnected", states(never, "disconnected"))
		admin.filter("connected")
		admin.waitShown("connected", states("sp1", "connected", "sp2", "connected"))
		admin.filter("flapping")
		admin.waitShown("flapping", states())
		assert.Equal(t, "No cluster matches.", eval[string](admin, `document.querySelector('#rows td.empty').textContent`))
		admin.filter("all")
		admin.waitShown("all", fleet)
	})
	t.Run("tiles", func(t *testing.T) {
		admin.do(chromedp.Click(chromedp.ID("view-tiles")))
		admin.waitShown("tiles", fleet)
		assert.Equal(t, "true", eval[string](admin, `document.getElementById('view-tiles').getAttribute('aria-pressed')`))
		assert.Contains(t, eval[string](admin, `location.hash`), "view=tiles", "the view is in the fragment, for wall screens")
		admin.screenshot("statuspage-tiles")
		admin.do(chromedp.Click(chromedp.ID("view-table")))
		admin.waitShown("table again", fleet)
	})
	t.Run("a caller sees only what it may reach", func(t *testing.T) {
		alice := b.tab()
		alice.signIn(e.hub.URL, callers["alice"].Token)
		alice.waitShown("alice's fleet", states("sp1", "connected"))
		alice.do(chromedp.Click(chromedp.ID("view-tiles")))
		alice.waitShown("alice's tiles", states("sp1", "connected"))
		alice.noProblems()
	})
	t.Run("a wrong token is refused", func(t *testing.T) {
		mallory := b.tab()
		mallory.do(
			chromedp.Navigate(e.hub.URL+"/status"),
			chromedp.WaitVisible(chromedp.ID("token")),
			chromedp.SendKeys(chromedp.ID("token"), "not-a-token"),
			chromedp.Click(chromedp.ID("signin")),
			chromedp.WaitVisible(chromedp.ID("login-error")),
		)
		assert.Equal(t, "The hub did not accept that token.", eval[string](mallory, `document.getElementById('login-error').textContent`))
		assert.True(t, eval[bool](mallory, `document.getElementById('app').hidden`))
	})
	admin.noProblems()
}

// TestStatusPageFollowsADisconnection keeps the page open while a
// member's agent stops and starts again: the row changes both ways
// without a reload.
func TestStatusPageFollowsADisconnection(t *testing.T) {
	e := requireEnv(t)
	b := newBrowser(t)
	admin := b.tab()
	admin.signIn(e.hub.URL, callers["admin"].Token)
	admin.waitShown("before", states("sp1", "connected", "sp2", "connected", never, "disconnected"))
	// Marks the document: a reload would lose it.
	admin.do(chromedp.Evaluate[chromedp.Void](`document.body.dataset.sameDocument = 'yes'`))

	e.stopAgent("sp2")
	restarted := false
	t.Cleanup(func() {
		if restarted {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), bound)
		defer cancel()
		if err := e.startAgent(ctx, "sp2"); err != nil {
			t.Errorf("restart sp2's agent: %v", err)
		}
	})
	start := time.Now()
	admin.waitShown("sp2 disconnected", states("sp1", "connected", "sp2", "disconnected", never, "disconnected"))
	t.Logf("the open page showed sp2 disconnected %v after its agent stopped", time.Since(start).Round(100*time.Millisecond))
	admin.screenshot("statuspage-disconnected")

	ctx, cancel := context.WithTimeout(context.Background(), bound)
	defer cancel()
	require.NoError(t, e.startAgent(ctx, "sp2"))
	restarted = true
	admin.waitShown("sp2 back", states("sp1", "connected", "sp2", "connected", never, "disconnected"))
	assert.Equal(t, "yes", eval[string](admin, `document.body.dataset.sameDocument`), "updated in place, not reloaded")
	admin.noProblems()
}

func (e *environment) hubClient() *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: e.hub.TLSConfig()}}
}

// hubReplica is the hub's replica name (its host name by default), as
// the API reports it.
func (e *environment) hubReplica(t *testing.T) string {
	req, err := http.NewRequest(http.MethodGet, e.hub.URL+"/status/api/clusters", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+callers["admin"].Token)
	resp, err := e.hubClient().Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var h struct {
		Replica string `json:"replica"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&h))
	require.NotEmpty(t, strings.TrimSpace(h.Replica))
	return h.Replica
}
