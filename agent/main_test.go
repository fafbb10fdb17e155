package agent

import (
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"
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

// fakeMember is a member API server that records requests.
type fakeMember struct {
	srv  *httptest.Server
	mu   sync.Mutex
	reqs []*http.Request
}

func newFakeMember(t *testing.T) *fakeMember {
	m := &fakeMember{}
	m.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		m.reqs = append(m.reqs, r.Clone(r.Context()))
		m.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"kind":"APIVersions"}`))
	}))
	t.Cleanup(m.srv.Close)
	return m
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
