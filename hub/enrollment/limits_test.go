package enrollment

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"backhaul.io/backhaul/hub/internal/hubtest"
)

// fakeClock is the limiters' time; tests move it, never sleep.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)} }

func warnLogger(out *strings.Builder) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{Output: out, Level: hclog.Warn})
}

// noTokens is an empty token store: every token is a guess.
func noTokens(t *testing.T) *BootstrapTokens {
	c := fake.NewClientBuilder().Build()
	return &BootstrapTokens{Secrets: readerSecrets{c}, Writer: c, Namespace: testNS}
}

func enrollments(t *testing.T, te *testEnroller, kind, result string) float64 {
	t.Helper()
	return hubtest.Counter(t, te.reg, "backhaul_hub_enrollments_total", map[string]string{"kind": kind, "result": result})
}

// The attacker guesses tokens as fast as one address allows: past the
// burst, 429 with Retry-After and a Status saying why, counted, and the
// token is not even looked at; other addresses are not affected, and the
// address gets its allowance back with time.
func TestEnrollmentRateLimitPerSource(t *testing.T) {
	clock := newFakeClock()
	te := newTestEnroller(t, noTokens(t), Limits{SourceRate: 1.0 / 60, SourceBurst: 3, MaxSources: 100}, clock.now)
	tok := newTestToken(t).String()
	csr, _ := testCSR(t)
	for i := range 3 {
		rec := te.enroll(t, "198.51.100.7:4000", tok, csr)
		require.Equal(t, http.StatusUnauthorized, rec.Code, "request %d is within the burst", i)
	}
	for _, kind := range []string{"enroll", "status"} {
		t.Run(kind, func(t *testing.T) {
			var rec *httptest.ResponseRecorder
			if kind == "enroll" {
				rec = te.enroll(t, "198.51.100.7:4001", tok, csr)
			} else {
				rec = te.status(t, "198.51.100.7:4002", tok, nil)
			}
			require.Equal(t, http.StatusTooManyRequests, rec.Code)
			assert.Equal(t, "60", rec.Header().Get("Retry-After"))
			st := hubtest.DecodeStatus(t, rec.Header().Get("Content-Type"), rec.Body.Bytes())
			assert.Equal(t, int32(http.StatusTooManyRequests), st.Code)
			assert.Equal(t, "too many enrollment requests from this address; retry in 60s", st.Message)
			assert.Equal(t, 1.0, enrollments(t, te, kind, "rate_limited_source"))
		})
	}
	assert.Equal(t, 3.0, enrollments(t, te, "enroll", "unauthorized"), "refused requests never reached the token check")

	rec := te.enroll(t, "198.51.100.8:4000", tok, csr)
	assert.Equal(t, http.StatusUnauthorized, rec.Code, "another address has its own allowance")
	clock.add(time.Minute)
	rec = te.enroll(t, "198.51.100.7:4000", tok, csr)
	assert.Equal(t, http.StatusUnauthorized, rec.Code, "one more request a minute later")
}

// The attacker spreads guesses over many addresses: the global limit
// holds them all, and a refusal by it does not use up the address's own
// allowance.
func TestEnrollmentRateLimitGlobal(t *testing.T) {
	clock := newFakeClock()
	te := newTestEnroller(t, noTokens(t), Limits{SourceRate: 1, SourceBurst: 2, GlobalRate: 1.0 / 30, GlobalBurst: 5, MaxSources: 100}, clock.now)
	tok := newTestToken(t).String()
	for i := range 5 {
		rec := te.status(t, fmt.Sprintf("203.0.113.%d:5000", i+1), tok, nil)
		require.Equal(t, http.StatusUnauthorized, rec.Code)
	}
	rec := te.status(t, "203.0.113.100:5000", tok, nil)
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	assert.Equal(t, "30", rec.Header().Get("Retry-After"))
	assert.Contains(t, rec.Body.String(), "too many enrollment requests from all addresses")
	assert.Equal(t, 1.0, enrollments(t, te, "status", "rate_limited_global"))

	clock.add(30 * time.Second)
	// 203.0.113.100 was refused globally, so both of its own requests
	// are still there: the first passes (global has one again), the
	// second is refused globally, not by the source.
	rec = te.status(t, "203.0.113.100:5000", tok, nil)
	assert.Equal(t, http.StatusUnauthorized, rec.Code)
	rec = te.status(t, "203.0.113.100:5000", tok, nil)
	assert.Equal(t, http.StatusTooManyRequests, rec.Code)
	assert.Equal(t, 2.0, enrollments(t, te, "status", "rate_limited_global"))
	assert.Equal(t, 0.0, enrollments(t, te, "status", "rate_limited_source"))
}

// The attacker sets X-Forwarded-For (or X-Real-Ip) to a new address on
// every request to get a new allowance each time: the hub limits by the
// TCP peer and ignores the headers.
func TestEnrollmentIgnoresForwardedFor(t *testing.T) {
	clock := newFakeClock()
	te := newTestEnroller(t, noTokens(t), Limits{SourceRate: 1.0 / 60, SourceBurst: 2, MaxSources: 100}, clock.now)
	tok := newTestToken(t).String()
	codes := map[int]int{}
	for i := range 10 {
		h := http.Header{"X-Forwarded-For": {fmt.Sprintf("10.0.0.%d", i)}, "X-Real-Ip": {fmt.Sprintf("10.1.0.%d", i)}}
		codes[te.status(t, "192.0.2.50:6000", tok, h).Code]++
	}
	assert.Equal(t, map[int]int{http.StatusUnauthorized: 2, http.StatusTooManyRequests: 8}, codes)
}

// The attacker comes from a new address every time (an IPv6 /48 has
// plenty): the hub remembers at most MaxSources of them, so its memory
// does not grow; addresses in one /64 are one source.
func TestEnrollmentSourcesAreBounded(t *testing.T) {
	clock := newFakeClock()
	l := newLimiter(Limits{SourceRate: 1.0 / 60, SourceBurst: 1, MaxSources: 50}, clock.now)
	for i := range 5000 {
		_ = l.allow(fmt.Sprintf("[2001:db8:%x:%x::1]:443", i/65536, i%65536))
	}
	assert.Equal(t, 50, l.trackedSources())

	l = newLimiter(Limits{SourceRate: 1.0 / 60, SourceBurst: 1, MaxSources: 50}, clock.now)
	require.NoError(t, l.allow("[2001:db8:1:2::1]:443"))
	var rl *RateLimitError
	require.ErrorAs(t, l.allow("[2001:db8:1:2:ffff::9]:443"), &rl, "the same /64")
	assert.Equal(t, scopeSource, rl.Scope)
	assert.Equal(t, 1, l.trackedSources())
}

func TestSourceKey(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"ipv4", "192.0.2.1:443", "192.0.2.1"},
		{"ipv4 mapped in ipv6", "[::ffff:192.0.2.1]:443", "192.0.2.1"},
		{"ipv6 is its /64", "[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"ipv6 zone dropped", "[fe80::1%eth0]:443", "fe80::/64"},
		{"no port", "192.0.2.1", "192.0.2.1"},
		{"not an address", "@unix", "@unix"},
	} {
		t.Run(tc.name, func(t *testing.T) { assert.Equal(t, tc.want, sourceKey(tc.in)) })
	}
}

func TestLimitsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		l    Limits
		ok   bool
	}{
		{"defaults", DefaultLimits(), true},
		{"all off", Limits{}, true},
		{"negative rate", Limits{SourceRate: -1, SourceBurst: 1, MaxSources: 1}, false},
		{"rate without burst", Limits{GlobalRate: 1}, false},
		{"source rate without sources", Limits{SourceRate: 1, SourceBurst: 1}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.l.Validate(); tc.ok {
				assert.NoError(t, err)
			} else {
				assert.Error(t, err)
			}
		})
	}
}

// The attacker floods bad tokens to flood the hub's log: every refusal is
// counted, few are logged, and the next line logged says how many were
// dropped.
func TestEnrollmentLimitsRefusalLogs(t *testing.T) {
	var logs strings.Builder
	te := newTestEnroller(t, noTokens(t), Limits{}, nil, &logs)
	tok := newTestToken(t).String()
	for range 500 {
		require.Equal(t, http.StatusUnauthorized, te.status(t, "192.0.2.9:7000", tok, nil).Code)
	}
	assert.LessOrEqual(t, strings.Count(logs.String(), "refused enrollment request"), 25)
	assert.Equal(t, 500.0, enrollments(t, te, "status", "unauthorized"))
}
