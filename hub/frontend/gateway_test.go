package frontend

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/tunnel"
)

var gatewayRefusals = []struct {
	name       string
	path       string
	token      string
	authz      auth.Authorizer
	wantCode   int
	wantReason metav1.StatusReason
	wantMsg    string // a substring of the Status message
	metric     string // errors_total reason that must count it
	retry      string // Retry-After, when the caller should try again
}{
	{name: "invalid cluster name", path: "/clusters/Not_A_Name/api", token: "alice-token", wantCode: 404, wantReason: metav1.StatusReasonNotFound, metric: session.ReasonUnknownCluster},
	{name: "no credentials", path: "/clusters/alpha/api", wantCode: 401, wantReason: metav1.StatusReasonUnauthorized, metric: session.ReasonUnauthorized},
	{name: "bad token", path: "/clusters/alpha/api", token: "mallory-token", wantCode: 401, wantReason: metav1.StatusReasonUnauthorized, metric: session.ReasonUnauthorized},
	{name: "not authorized", path: "/clusters/alpha/api", token: "alice-token", authz: fakeAuthz{reason: "not on the list"}, wantCode: 403, wantReason: metav1.StatusReasonForbidden, wantMsg: "not on the list", metric: session.ReasonForbidden},
	{name: "authorizer fails", path: "/clusters/alpha/api", token: "alice-token", authz: fakeAuthz{err: errors.New("sar unavailable")}, wantCode: 500, metric: session.ReasonForbidden},
	{name: "host unavailable", path: "/clusters/alpha/api", token: "alice-token", authz: fakeAuthz{err: fmt.Errorf("%w: sar", auth.ErrUnavailable)}, wantCode: 503, wantMsg: "host cluster is unavailable", metric: session.ReasonForbidden, retry: "1"},
	{name: "unknown cluster", path: "/clusters/gamma/api", token: "alice-token", wantCode: 404, wantReason: metav1.StatusReasonNotFound, wantMsg: "gamma", metric: session.ReasonUnknownCluster},
	{name: "not connected", path: "/clusters/beta/api", token: "alice-token", wantCode: 503, wantReason: metav1.StatusReasonServiceUnavailable, wantMsg: "cluster beta is not connected", metric: session.ReasonNotConnected},
	{name: "agent refuses", path: "/clusters/refused/api", token: "alice-token", wantCode: 502, wantMsg: "agent says refused", metric: "refused"},
	{name: "agent times out", path: "/clusters/timeout/api", token: "alice-token", wantCode: 504, wantReason: metav1.StatusReasonTimeout, metric: "timeout"},
	{name: "agent not allowed", path: "/clusters/not-allowed/api", token: "alice-token", wantCode: 403, wantReason: metav1.StatusReasonForbidden, metric: "not_allowed"},
	{name: "agent unavailable", path: "/clusters/unavailable/api", token: "alice-token", wantCode: 503, wantReason: metav1.StatusReasonServiceUnavailable, metric: "unavailable"},
	{name: "agent bad request", path: "/clusters/bad-request/api", token: "alice-token", wantCode: 400, metric: "bad_request"},
	{name: "agent internal", path: "/clusters/internal/api", token: "alice-token", wantCode: 502, metric: "internal"},
}

func TestGatewayRefusals(t *testing.T) {
	for _, tc := range gatewayRefusals {
		t.Run(tc.name, func(t *testing.T) {
			f := refusingFrontEnds(t, tc.authz)
			r := httptest.NewRequest(http.MethodGet, tc.path, nil)
			if tc.token != "" {
				r.Header.Set("Authorization", "Bearer "+tc.token)
			}
			rec := httptest.NewRecorder()
			f.mux.ServeHTTP(rec, r)
			require.Equal(t, tc.wantCode, rec.Code, "body: %s", rec.Body)
			st := hubtest.DecodeStatus(t, rec.Header().Get("Content-Type"), rec.Body.Bytes())
			assert.EqualValues(t, tc.wantCode, st.Code)
			if tc.wantReason != "" {
				assert.Equal(t, tc.wantReason, st.Reason)
			}
			assert.Contains(t, st.Message, tc.wantMsg)
			assert.Equal(t, tc.retry, rec.Header().Get("Retry-After"))
			if tc.retry != "" {
				assert.Equal(t, "close", rec.Header().Get("Connection"), "try again on a new connection: another replica")
			}
			assert.Equal(t, 1.0, f.errors(t, tc.metric))
			assert.Equal(t, 1.0, hubtest.Counter(t, f.metrics, "backhaul_hub_gateway_requests_total", map[string]string{"code": fmt.Sprintf("%dxx", tc.wantCode/100)}))
		})
	}
}

func TestGatewayProxiesWithCallerIdentity(t *testing.T) {
	f := newFrontEnds(t, auth.AllowAuthenticated{}, "alpha")
	seen := make(chan *http.Request, 2)
	f.agent(t, "alpha", hubtest.HTTPAgent(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"kind":"NamespaceList"}`)
	})), session.Agent{Features: []string{tunnel.FeatureHubAPIServer, tunnel.FeatureImpersonation}})

	do := func() *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "/clusters/alpha/api/v1/namespaces?limit=1", nil)
		r.Header.Set("Authorization", "Bearer alice-token")
		r.Header.Set("Impersonate-User", "system:admin")
		r.Header.Set("Impersonate-Group", "system:masters")
		r.Header.Set("X-Remote-User", "system:admin")
		r.Header.Set("Audit-ID", "planted-by-the-caller")
		r.Header.Set("Backhaul-Request-Id", "planted-by-the-caller")
		r.Header.Set("Backhaul-Planted", "x")
		rec := httptest.NewRecorder()
		f.mux.ServeHTTP(rec, r)
		return rec
	}
	rec := do()
	require.Equal(t, http.StatusOK, rec.Code, "body: %s", rec.Body)
	assert.JSONEq(t, `{"kind":"NamespaceList"}`, rec.Body.String())

	got := <-seen
	assert.Equal(t, "/api/v1/namespaces", got.URL.Path)
	assert.Equal(t, "limit=1", got.URL.RawQuery)
	assert.Empty(t, got.Header.Values("Authorization"))
	assert.Empty(t, got.Header.Values("X-Remote-User"))
	assert.Equal(t, []string{"alice"}, got.Header.Values("Impersonate-User"))
	assert.Equal(t, []string{"uid-1"}, got.Header.Values("Impersonate-Uid"))
	assert.Equal(t, []string{"dev", "ops"}, got.Header.Values("Impersonate-Group"))
	// The caller's own impersonation goes aside, for the agent to check
	// with the member (agent/identity.go).
	assert.Equal(t, []string{"system:admin"}, got.Header.Values("Backhaul-Impersonate-User"))
	assert.Equal(t, []string{"system:masters"}, got.Header.Values("Backhaul-Impersonate-Group"))
	id := rec.Header().Get("Backhaul-Request-Id")
	_, err := uuid.Parse(id)
	require.NoError(t, err, "request ids are UUIDs, as kube-apiserver's audit ids")
	assert.Equal(t, id, got.Header.Get("Backhaul-Request-Id"))
	// The member's kube-apiserver adopts Audit-ID as its audit event's id;
	// what the caller sent is not what it gets.
	assert.Equal(t, []string{id}, got.Header.Values("Audit-Id"))
	assert.Empty(t, got.Header.Values("Backhaul-Planted"))

	// A second request reuses the session's pooled stream.
	require.Equal(t, http.StatusOK, do().Code)
	second := <-seen
	assert.NotEqual(t, id, second.Header.Get("Backhaul-Request-Id"), "each request has its own id")
	assert.Equal(t, 1.0, hubtest.Counter(t, f.metrics, "backhaul_hub_streams_opened_total", map[string]string{"kind": "apiserver"}))
}

// TestGatewayRefusesImpersonationAnOldAgentWouldDrop plays kubectl --as
// towards an agent that does not announce the check: refused, where the
// agent would have answered for the caller instead.
func TestGatewayRefusesImpersonationAnOldAgentWouldDrop(t *testing.T) {
	f := newFrontEnds(t, auth.AllowAuthenticated{}, "alpha")
	f.agent(t, "alpha", hubtest.HTTPAgent(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("the member was reached: %s", r.URL)
	})), session.Agent{})
	r := httptest.NewRequest(http.MethodGet, "/clusters/alpha/api/v1/namespaces", nil)
	r.Header.Set("Authorization", "Bearer alice-token")
	r.Header.Set("Impersonate-User", "bob")
	rec := httptest.NewRecorder()
	f.mux.ServeHTTP(rec, r)
	require.Equal(t, http.StatusForbidden, rec.Code, "body: %s", rec.Body)
	assert.Contains(t, rec.Body.String(), "impersonation (Impersonate-User) is not supported by the agent of cluster alpha")
}

// leakyAuthn refuses credentials with the host's own words, as a
// TokenReview's status.error carries them.
type leakyAuthn struct{}

func (leakyAuthn) Authenticate(*http.Request) (*auth.User, bool, error) {
	return nil, false, fmt.Errorf("%w: [invalid bearer token, lookup in tenant-db-7.internal failed]", auth.ErrBadCredentials)
}

// Why credentials were refused is the operator's to read in the log; the
// caller, who may be anyone, gets what kube-apiserver gives.
func TestRefusedCredentialsSayNothingMore(t *testing.T) {
	f := newFrontEnds(t, auth.AllowAuthenticated{}, "alpha")
	f.gateway.cfg.Authn, f.connect.cfg.Authn = leakyAuthn{}, leakyAuthn{}

	r := httptest.NewRequest(http.MethodGet, "/clusters/alpha/api", nil)
	r.Header.Set("Authorization", "Bearer whatever")
	rec := httptest.NewRecorder()
	f.mux.ServeHTTP(rec, r)
	require.Equal(t, http.StatusUnauthorized, rec.Code)
	assert.Equal(t, "Unauthorized", hubtest.DecodeStatus(t, rec.Header().Get("Content-Type"), rec.Body.Bytes()).Message)
	assert.NotContains(t, rec.Body.String(), "tenant-db")

	status, _, _ := rawConnect(t, f.connect, "alpha.cluster.backhaul:443", "Bearer whatever")
	assert.Equal(t, "407 invalid credentials", status)
}
