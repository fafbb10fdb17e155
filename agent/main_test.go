package agent

import (
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/client-go/rest"

	"backhaul.io/backhaul/pkg/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitBound turns a hang into a failure; nothing is timed against it.
const waitBound = 10 * time.Second

// testLogger writes through t.Log.
func testLogger(t testing.TB) hclog.Logger { return testutil.Logger(t) }

// fakeMember is a member API server that records requests. It answers
// SubjectAccessReviews with allow (nil: deny), recording them apart.
type fakeMember struct {
	srv     *httptest.Server
	mu      sync.Mutex
	reqs    []*http.Request
	allow   func(authorizationv1.SubjectAccessReviewSpec) bool
	reviews []authorizationv1.SubjectAccessReviewSpec
}

const reviewPath = "/apis/authorization.k8s.io/v1/subjectaccessreviews"

func newFakeMember(t *testing.T) *fakeMember {
	m := &fakeMember{}
	m.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == reviewPath {
			m.review(w, r)
			return
		}
		m.mu.Lock()
		m.reqs = append(m.reqs, r.Clone(r.Context()))
		m.mu.Unlock()
		if r.Header.Get("Upgrade") != "" {
			// As the API server answers exec: 101, then the raw connection.
			c, _, err := http.NewResponseController(w).Hijack()
			if err != nil {
				http.Error(w, "upgrade over "+r.Proto, http.StatusBadRequest)
				return
			}
			_, _ = c.Write([]byte("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + r.Header.Get("Upgrade") + "\r\n\r\n"))
			_ = c.Close()
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"APIVersions"}`))
	}))
	m.srv.EnableHTTP2 = true // as kube-apiserver
	m.srv.StartTLS()
	t.Cleanup(m.srv.Close)
	return m
}

func (m *fakeMember) review(w http.ResponseWriter, r *http.Request) {
	var sar authorizationv1.SubjectAccessReview
	if err := json.NewDecoder(r.Body).Decode(&sar); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	m.mu.Lock()
	m.reviews = append(m.reviews, sar.Spec)
	allow := m.allow
	m.mu.Unlock()
	sar.Status.Allowed = allow != nil && allow(sar.Spec)
	if !sar.Status.Allowed {
		sar.Status.Reason = "no RBAC policy matched"
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&sar)
}

func (m *fakeMember) setAllow(allow func(authorizationv1.SubjectAccessReviewSpec) bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.allow = allow
}

func (m *fakeMember) reviewed() []authorizationv1.SubjectAccessReviewSpec {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]authorizationv1.SubjectAccessReviewSpec(nil), m.reviews...)
}

func (m *fakeMember) requests() []*http.Request {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]*http.Request(nil), m.reqs...)
}

// restConfig is how the agent reaches the member: its own bearer token and
// the member's CA.
func (m *fakeMember) restConfig() *rest.Config {
	return &rest.Config{
		Host:        m.srv.URL,
		BearerToken: agentSAToken,
		TLSClientConfig: rest.TLSClientConfig{
			CAData: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: m.srv.Certificate().Raw}),
		},
	}
}

const agentSAToken = "agent-service-account-token"
