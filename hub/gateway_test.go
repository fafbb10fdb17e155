package hub

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"backhaul.io/backhaul/tunnel"
)

func TestStripIdentity(t *testing.T) {
	h := http.Header{}
	strip := []string{
		"Authorization", "Proxy-Authorization", "Cookie",
		"Impersonate-User", "Impersonate-Uid", "Impersonate-Group", "Impersonate-Extra-Scopes",
		"Impersonate-Extra-Example.com%2fscopes", "X-Remote-User", "X-Remote-Group", "X-Remote-Extra-Foo",
	}
	keep := []string{"Accept", "User-Agent", "Content-Type", "X-Request-Id", "Impersonation-Note", "X-Remotely"}
	for _, k := range append(append([]string{}, strip...), keep...) {
		h.Set(k, "v")
	}
	// Keys that did not go through canonicalisation must go too.
	h["impersonate-user"] = []string{"root"}
	h["x-remote-user"] = []string{"root"}
	h["authorization"] = []string{"Bearer x"}

	stripIdentity(h)
	for _, k := range strip {
		assert.Empty(t, h.Values(k), k)
	}
	for _, k := range []string{"impersonate-user", "x-remote-user", "authorization"} {
		assert.NotContains(t, h, k)
	}
	for _, k := range keep {
		assert.Equal(t, "v", h.Get(k), k)
	}
}

func TestSetImpersonation(t *testing.T) {
	tests := []struct {
		name string
		user *User
		want http.Header
	}{
		{
			name: "user only",
			user: &User{Name: "alice"},
			want: http.Header{"Impersonate-User": {"alice"}},
		},
		{
			name: "everything",
			user: &User{
				Name: "alice", UID: "uid-1", Groups: []string{"dev", "ops"},
				Extra: map[string][]string{"example.com/scopes": {"a", "b"}, "reason": {"on call"}},
			},
			want: http.Header{
				"Impersonate-User":                       {"alice"},
				"Impersonate-Uid":                        {"uid-1"},
				"Impersonate-Group":                      {"dev", "ops"},
				"Impersonate-Extra-Example.com%2fscopes": {"a", "b"},
				"Impersonate-Extra-Reason":               {"on call"},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := http.Header{}
			setImpersonation(h, tc.user)
			// Compare case-insensitively: header keys are case-insensitive
			// and Kubernetes unescapes the extra key itself.
			assert.Equal(t, canonicalLower(tc.want), canonicalLower(h))
		})
	}
}

func canonicalLower(h http.Header) map[string][]string {
	out := map[string][]string{}
	for k, v := range h {
		out[strings.ToLower(k)] = v
	}
	return out
}

func TestEscapeExtraKey(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{in: "scopes", want: "scopes"},
		{in: "example.com/scopes", want: "example.com%2Fscopes"},
		{in: "a b", want: "a%20b"},
		{in: "100%", want: "100%25"},
		{in: "ü", want: "%C3%BC"},
		{in: "tokens-!#$&'*+.^_`|~", want: "tokens-!#$&'*+.^_`|~"},
		{in: "a:b", want: "a%3Ab"},
		{in: "", want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got := escapeExtraKey(tc.in)
			assert.Equal(t, tc.want, got)
			// kube-apiserver decodes the key with PathUnescape.
			back, err := url.PathUnescape(got)
			require.NoError(t, err)
			assert.Equal(t, tc.in, back)
		})
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantCode   int
		wantReason string
		wantMsg    string
	}{
		{name: "refused", err: &tunnel.DialError{Code: tunnel.CodeRefused, Message: "connection refused"}, wantCode: 502, wantReason: "refused", wantMsg: "cluster alpha: connection refused"},
		{name: "timeout", err: &tunnel.DialError{Code: tunnel.CodeTimeout, Message: "i/o timeout"}, wantCode: 504, wantReason: "timeout"},
		{name: "not allowed", err: &tunnel.DialError{Code: tunnel.CodeNotAllowed, Message: "no"}, wantCode: 403, wantReason: "not_allowed"},
		{name: "unavailable", err: &tunnel.DialError{Code: tunnel.CodeUnavailable, Message: "draining"}, wantCode: 503, wantReason: "unavailable"},
		{name: "bad request", err: &tunnel.DialError{Code: tunnel.CodeBadRequest}, wantCode: 400, wantReason: "bad_request"},
		{name: "internal", err: &tunnel.DialError{Code: tunnel.CodeInternal}, wantCode: 502, wantReason: "internal"},
		{
			name:     "dial error wrapped as the transport does",
			err:      &url.Error{Op: "Get", URL: "http://alpha.cluster.backhaul/api", Err: &net.OpError{Op: "dial", Err: &ClusterError{Cluster: "alpha", Err: &tunnel.DialError{Code: tunnel.CodeNotAllowed, Message: "no"}}}},
			wantCode: 403, wantReason: "not_allowed",
		},
		{name: "not connected", err: &ClusterError{Cluster: "alpha", Err: ErrNotConnected}, wantCode: 503, wantReason: reasonNotConnected, wantMsg: "cluster alpha is not connected"},
		{name: "session closed", err: fmt.Errorf("open: %w", tunnel.ErrSessionClosed), wantCode: 503, wantReason: reasonNotConnected, wantMsg: "cluster alpha is not connected"},
		{name: "deadline", err: fmt.Errorf("dial: %w", context.DeadlineExceeded), wantCode: 504, wantReason: "timeout"},
		{name: "canceled", err: context.Canceled, wantCode: 499, wantReason: "canceled"},
		{name: "anything else", err: io.ErrUnexpectedEOF, wantCode: 502, wantReason: reasonBadGateway},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, reason, msg := classify("alpha", tc.err)
			assert.Equal(t, tc.wantCode, code)
			assert.Equal(t, tc.wantReason, reason)
			if tc.wantMsg != "" {
				assert.Equal(t, tc.wantMsg, msg)
			}
			if tc.wantCode != 499 { // the caller itself gave up; nobody reads this
				assert.Contains(t, msg, "alpha", "the caller learns which cluster failed")
			}
		})
	}
}

func TestRewrite(t *testing.T) {
	tests := []struct {
		name             string
		target           string
		wantPath, rawOut string
		wantQuery        string
	}{
		{name: "api path", target: "/clusters/alpha/api/v1/namespaces?limit=1", wantPath: "/api/v1/namespaces", wantQuery: "limit=1"},
		{name: "cluster root", target: "/clusters/alpha", wantPath: "/"},
		{name: "cluster root with slash", target: "/clusters/alpha/", wantPath: "/"},
		{name: "escaped path", target: "/clusters/alpha/api/v1/namespaces/a%2Fb", wantPath: "/api/v1/namespaces/a/b", rawOut: "/api/v1/namespaces/a%2Fb"},
	}
	g := NewGateway(&Gateway{Log: testLogger(t)})
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := httptest.NewRequest(http.MethodGet, tc.target, nil)
			in.SetPathValue("name", "alpha")
			in.Header.Set("Authorization", "Bearer caller")
			in.Header.Set("Impersonate-User", "root")
			in.Header.Set("Accept", "application/json")
			ctx := context.WithValue(in.Context(), userKey{}, &User{Name: "alice", Groups: []string{"dev"}})
			ctx = context.WithValue(ctx, requestIDKey, "req-1")
			in = in.WithContext(ctx)
			pr := &httputil.ProxyRequest{In: in, Out: in.Clone(ctx)}
			g.rewrite(pr)

			assert.Equal(t, "http", pr.Out.URL.Scheme)
			assert.Equal(t, "alpha"+hostSuffix, pr.Out.URL.Host)
			assert.Empty(t, pr.Out.Host)
			assert.Equal(t, tc.wantPath, pr.Out.URL.Path)
			assert.Equal(t, tc.rawOut, pr.Out.URL.RawPath)
			assert.Equal(t, tc.wantQuery, pr.Out.URL.RawQuery)
			assert.Empty(t, pr.Out.Header.Get("Authorization"))
			assert.Equal(t, []string{"alice"}, pr.Out.Header.Values("Impersonate-User"))
			assert.Equal(t, []string{"dev"}, pr.Out.Header.Values("Impersonate-Group"))
			assert.Equal(t, "req-1", pr.Out.Header.Get("Backhaul-Request-Id"))
			assert.Equal(t, "application/json", pr.Out.Header.Get("Accept"))
		})
	}
}

// clusterSet is a fixed ClusterSource.
type clusterSet map[string]bool

func (c clusterSet) Known(name string) bool { return c[name] }

type fakeAuthz struct {
	allowed bool
	reason  string
	err     error
}

func (f fakeAuthz) Authorize(context.Context, *User, string) (bool, string, error) {
	return f.allowed, f.reason, f.err
}

// staticTokens builds a StaticTokens without a file.
func staticTokens(users map[string]*User) *StaticTokens {
	s := &StaticTokens{byDigest: map[[32]byte]*User{}}
	for tok, u := range users {
		s.byDigest[sha256.Sum256([]byte(tok))] = u
	}
	return s
}

// gatewayHarness is a Gateway behind the hub's routes, with clusters whose
// "agents" sit at the other end of a net.Pipe session.
type gatewayHarness struct {
	g       *Gateway
	mux     *http.ServeMux
	metrics *Metrics
}

func newGatewayHarness(t *testing.T, authz Authorizer, known ...string) *gatewayHarness {
	clusters := clusterSet{}
	for _, k := range known {
		clusters[k] = true
	}
	log := testLogger(t)
	m := NewMetrics(prometheus.NewRegistry())
	g := NewGateway(&Gateway{
		Authn:       staticTokens(map[string]*User{"alice-token": {Name: "alice", UID: "uid-1", Groups: []string{"dev", "ops"}}}),
		Authz:       authz,
		Clusters:    clusters,
		Registry:    NewRegistry(log, m),
		Log:         log,
		Metrics:     m,
		DialTimeout: waitBound,
	})
	t.Cleanup(g.transport.CloseIdleConnections)
	mux := http.NewServeMux()
	mux.Handle("/clusters/{name}/{path...}", g)
	mux.Handle("/clusters/{name}", g)
	return &gatewayHarness{g: g, mux: mux, metrics: m}
}

// connect registers cluster with an agent that serves streams with h.
func (h *gatewayHarness) connect(t *testing.T, cluster string, handler tunnel.Handler) {
	hubSide, agentSide := pipeSessions(t)
	remove := h.g.Registry.Add(cluster, hubSide, "test", "", nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = agentSide.Serve(ctx, handler)
	}()
	t.Cleanup(func() {
		remove()
		_ = hubSide.Close()
		cancel()
		<-done
	})
}

func (h *gatewayHarness) do(r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.mux.ServeHTTP(rec, r)
	return rec
}

// decodeStatus reads a Kubernetes Status body.
func decodeStatus(t *testing.T, contentType string, body []byte) metav1.Status {
	t.Helper()
	assert.Equal(t, "application/json", contentType)
	var st metav1.Status
	require.NoError(t, json.Unmarshal(body, &st), "body: %s", body)
	assert.Equal(t, "Status", st.Kind)
	assert.Equal(t, "v1", st.APIVersion)
	assert.Equal(t, metav1.StatusFailure, st.Status)
	return st
}

// rejecting answers every stream with code.
func rejecting(code tunnel.Code) tunnel.Handler {
	return func(_ context.Context, in *tunnel.Incoming) { _ = in.Reject(code, "agent says "+code.String()) }
}

func TestGatewayRefusals(t *testing.T) {
	tests := []struct {
		name       string
		path       string
		token      string
		authz      Authorizer
		wantCode   int
		wantReason metav1.StatusReason
		wantMsg    string // a substring of the Status message
		metric     string // errors_total reason that must count it
	}{
		{name: "invalid cluster name", path: "/clusters/Not_A_Name/api", token: "alice-token", wantCode: 404, wantReason: metav1.StatusReasonNotFound, metric: reasonUnknownCluster},
		{name: "no credentials", path: "/clusters/alpha/api", wantCode: 401, wantReason: metav1.StatusReasonUnauthorized, metric: reasonUnauthorized},
		{name: "bad token", path: "/clusters/alpha/api", token: "mallory-token", wantCode: 401, wantReason: metav1.StatusReasonUnauthorized, metric: reasonUnauthorized},
		{name: "not authorized", path: "/clusters/alpha/api", token: "alice-token", authz: fakeAuthz{reason: "not on the list"}, wantCode: 403, wantReason: metav1.StatusReasonForbidden, wantMsg: "not on the list", metric: reasonForbidden},
		{name: "authorizer fails", path: "/clusters/alpha/api", token: "alice-token", authz: fakeAuthz{err: errors.New("sar unavailable")}, wantCode: 500, metric: reasonForbidden},
		{name: "unknown cluster", path: "/clusters/gamma/api", token: "alice-token", wantCode: 404, wantReason: metav1.StatusReasonNotFound, wantMsg: "gamma", metric: reasonUnknownCluster},
		{name: "not connected", path: "/clusters/beta/api", token: "alice-token", wantCode: 503, wantReason: metav1.StatusReasonServiceUnavailable, wantMsg: "cluster beta is not connected", metric: reasonNotConnected},
		{name: "agent refuses", path: "/clusters/refused/api", token: "alice-token", wantCode: 502, wantMsg: "agent says refused", metric: "refused"},
		{name: "agent times out", path: "/clusters/timeout/api", token: "alice-token", wantCode: 504, wantReason: metav1.StatusReasonTimeout, metric: "timeout"},
		{name: "agent not allowed", path: "/clusters/not-allowed/api", token: "alice-token", wantCode: 403, wantReason: metav1.StatusReasonForbidden, metric: "not_allowed"},
		{name: "agent unavailable", path: "/clusters/unavailable/api", token: "alice-token", wantCode: 503, wantReason: metav1.StatusReasonServiceUnavailable, metric: "unavailable"},
		{name: "agent bad request", path: "/clusters/bad-request/api", token: "alice-token", wantCode: 400, metric: "bad_request"},
		{name: "agent internal", path: "/clusters/internal/api", token: "alice-token", wantCode: 502, metric: "internal"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			authz := tc.authz
			if authz == nil {
				authz = AllowAuthenticated{}
			}
			h := newGatewayHarness(t, authz, "alpha", "beta", "refused", "timeout", "not-allowed", "unavailable", "bad-request", "internal")
			for _, code := range []tunnel.Code{tunnel.CodeRefused, tunnel.CodeTimeout, tunnel.CodeNotAllowed, tunnel.CodeUnavailable, tunnel.CodeBadRequest, tunnel.CodeInternal} {
				h.connect(t, strings.ReplaceAll(code.String(), "_", "-"), rejecting(code))
			}
			r := httptest.NewRequest(http.MethodGet, tc.path, nil)
			if tc.token != "" {
				r.Header.Set("Authorization", "Bearer "+tc.token)
			}
			rec := h.do(r)
			require.Equal(t, tc.wantCode, rec.Code, "body: %s", rec.Body)
			st := decodeStatus(t, rec.Header().Get("Content-Type"), rec.Body.Bytes())
			assert.EqualValues(t, tc.wantCode, st.Code)
			if tc.wantReason != "" {
				assert.Equal(t, tc.wantReason, st.Reason)
			}
			assert.Contains(t, st.Message, tc.wantMsg)
			assert.Equal(t, 1.0, counterValue(t, h.metrics.errors.WithLabelValues(tc.metric)))
			assert.Equal(t, 1.0, counterValue(t, h.metrics.requests.WithLabelValues(fmt.Sprintf("%dxx", tc.wantCode/100))))
		})
	}
}

// chanListener feeds accepted tunnel streams to an http.Server.
type chanListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *chanListener) Addr() net.Addr { return &net.TCPAddr{} }

// httpAgent serves every stream as HTTP with h.
func httpAgent(t *testing.T, h http.Handler) tunnel.Handler {
	l := &chanListener{conns: make(chan net.Conn), done: make(chan struct{})}
	srv := &http.Server{Handler: h}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(l)
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
	})
	return func(ctx context.Context, in *tunnel.Incoming) {
		c, err := in.Accept()
		if err != nil {
			return
		}
		select {
		case l.conns <- c:
		case <-ctx.Done():
			_ = c.Close()
		case <-l.done:
			_ = c.Close()
		}
	}
}

func TestGatewayProxiesWithCallerIdentity(t *testing.T) {
	h := newGatewayHarness(t, AllowAuthenticated{}, "alpha")
	seen := make(chan *http.Request, 1)
	h.connect(t, "alpha", httpAgent(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen <- r
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"kind":"NamespaceList"}`)
	})))

	r := httptest.NewRequest(http.MethodGet, "/clusters/alpha/api/v1/namespaces?limit=1", nil)
	r.Header.Set("Authorization", "Bearer alice-token")
	r.Header.Set("Impersonate-User", "system:admin")
	r.Header.Set("Impersonate-Group", "system:masters")
	r.Header.Set("X-Remote-User", "system:admin")
	rec := h.do(r)
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
	id := rec.Header().Get("Backhaul-Request-Id")
	assert.Len(t, id, 16)
	assert.Equal(t, id, got.Header.Get("Backhaul-Request-Id"))
	assert.Equal(t, 1.0, counterValue(t, h.metrics.streamsOpened.WithLabelValues("apiserver")))
}

// counterValue reads a counter without the testutil package.
func counterValue(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, c.Write(&m))
	return m.GetCounter().GetValue()
}
