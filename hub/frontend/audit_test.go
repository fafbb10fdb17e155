package frontend

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	"backhaul.io/backhaul/hub/audit"
	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/kubestatus"
	"backhaul.io/backhaul/pkg/testutil"
)

// auditLog is an audit log of f's front ends in a temporary file.
type auditLog struct {
	path   string
	cancel context.CancelFunc
	done   chan error
}

func withAudit(t *testing.T, f *frontEnds) *auditLog {
	t.Helper()
	cfg := audit.DefaultConfig()
	cfg.Path = filepath.Join(t.TempDir(), "audit.log")
	l, err := audit.New(cfg, testutil.Logger(t), prometheus.NewRegistry())
	require.NoError(t, err)
	f.gateway.cfg.Audit, f.connect.cfg.Audit = l, l
	ctx, cancel := context.WithCancel(context.Background())
	a := &auditLog{path: cfg.Path, cancel: cancel, done: make(chan error, 1)}
	go func() { a.done <- l.Run(ctx) }()
	t.Cleanup(func() { a.stop(t) })
	return a
}

func (a *auditLog) stop(t *testing.T) {
	if a.cancel != nil {
		a.cancel()
		require.NoError(t, <-a.done)
		a.cancel = nil
	}
}

// events stops the log and reads it.
func (a *auditLog) events(t *testing.T) []auditv1.Event {
	t.Helper()
	a.stop(t)
	return a.written(t)
}

// written reads the whole lines written so far.
func (a *auditLog) written(t *testing.T) []auditv1.Event {
	t.Helper()
	b, err := os.ReadFile(a.path)
	require.NoError(t, err)
	var out []auditv1.Event
	for len(b) > 0 {
		line, rest, whole := bytes.Cut(b, []byte("\n"))
		if !whole {
			break // the writer is half way through it
		}
		var ev auditv1.Event
		require.NoError(t, json.Unmarshal(line, &ev), "%q", line)
		out = append(out, ev)
		b = rest
	}
	return out
}

// Every refusal of the gateway is on record: the code and message the
// caller got, why (the errors_total reason), who (if the hub knew), and
// the id the caller was given.
func TestGatewayAuditsRefusals(t *testing.T) {
	for _, tc := range gatewayRefusals {
		t.Run(tc.name, func(t *testing.T) {
			f := refusingFrontEnds(t, tc.authz)
			log := withAudit(t, f)
			r := httptest.NewRequest(http.MethodGet, tc.path, nil)
			if tc.token != "" {
				r.Header.Set("Authorization", "Bearer "+tc.token)
			}
			rec := httptest.NewRecorder()
			f.mux.ServeHTTP(rec, r)
			require.Equal(t, tc.wantCode, rec.Code)

			evs := log.events(t)
			require.Len(t, evs, 1)
			ev := evs[0]
			assert.Equal(t, auditv1.StageResponseComplete, ev.Stage)
			assert.EqualValues(t, rec.Header().Get("Backhaul-Request-Id"), ev.AuditID)
			assert.EqualValues(t, tc.wantCode, ev.ResponseStatus.Code)
			assert.Equal(t, hubtest.DecodeStatus(t, rec.Header().Get("Content-Type"), rec.Body.Bytes()).Message, ev.ResponseStatus.Message)
			assert.Equal(t, tc.metric, ev.Annotations[audit.AnnotationRefusal])
			assert.Equal(t, strings.Split(tc.path, "/")[2], ev.Annotations[audit.AnnotationCluster])
			assert.Equal(t, tc.path, ev.RequestURI)
			assert.Equal(t, "get", ev.Verb)
			if tc.wantCode == http.StatusUnauthorized || tc.name == "invalid cluster name" {
				assert.Empty(t, ev.User.Username, "refused before the caller was known")
			} else {
				assert.Equal(t, "alice", ev.User.Username)
				assert.Equal(t, []string{"dev", "ops"}, ev.User.Groups)
			}
		})
	}
}

// A request the member answers is on record with the member's code, and
// under the id the member's kube-apiserver was given as Audit-ID.
func TestGatewayAuditsProxiedRequests(t *testing.T) {
	f := newFrontEnds(t, auth.AllowAuthenticated{}, "alpha")
	log := withAudit(t, f)
	auditIDs := make(chan string, 2)
	f.agent(t, "alpha", hubtest.HTTPAgent(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auditIDs <- r.Header.Get("Audit-Id")
		_, _ = io.Copy(io.Discard, r.Body)
		if strings.Contains(r.URL.Path, "secrets") {
			kubestatus.Write(w, http.StatusForbidden, `secrets is forbidden: User "alice" cannot list resource "secrets"`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"kind":"ConfigMap"}`)
	})), session.Agent{})

	do := func(method, path, body string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, path, strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer alice-token")
		r.Header.Set("Audit-ID", "planted")
		rec := httptest.NewRecorder()
		f.mux.ServeHTTP(rec, r)
		return rec
	}
	created := do(http.MethodPost, "/clusters/alpha/api/v1/namespaces/team/configmaps", `{"kind":"ConfigMap","metadata":{"name":"c"}}`)
	require.Equal(t, http.StatusOK, created.Code)
	denied := do(http.MethodGet, "/clusters/alpha/api/v1/namespaces/team/secrets", "")
	require.Equal(t, http.StatusForbidden, denied.Code)

	evs := log.events(t)
	require.Len(t, evs, 2)
	for i, rec := range []*httptest.ResponseRecorder{created, denied} {
		ev := evs[i]
		id := rec.Header().Get("Backhaul-Request-Id")
		assert.EqualValues(t, id, ev.AuditID)
		assert.Equal(t, id, <-auditIDs, "the member's audit id is the hub's")
		assert.Equal(t, "alice", ev.User.Username)
		assert.Equal(t, "alice", ev.Annotations[audit.AnnotationMemberUser])
		assert.Equal(t, "alpha", ev.Annotations[audit.AnnotationCluster])
		assert.Empty(t, ev.Annotations[audit.AnnotationRefusal], "the member answered")
		assert.Equal(t, strconv.Itoa(rec.Body.Len()), ev.Annotations[audit.AnnotationBytesOut])
	}
	assert.Equal(t, "create", evs[0].Verb)
	assert.Equal(t, &auditv1.ObjectReference{Resource: "configmaps", Namespace: "team", APIVersion: "v1"}, evs[0].ObjectRef)
	assert.EqualValues(t, http.StatusOK, evs[0].ResponseStatus.Code)
	assert.Equal(t, "44", evs[0].Annotations[audit.AnnotationBytesIn])
	assert.Equal(t, "list", evs[1].Verb)
	assert.EqualValues(t, http.StatusForbidden, evs[1].ResponseStatus.Code)
}

// Every CONNECT refusal is on record, as a "connect" of its target.
func TestConnectAuditsRefusals(t *testing.T) {
	for _, tc := range connectRefusals {
		t.Run(tc.name, func(t *testing.T) {
			f := refusingFrontEnds(t, tc.authz)
			f.agent(t, "alpha", echoAgent, session.Agent{Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.7")}})
			log := withAudit(t, f)
			status, _, _ := rawConnect(t, f.connect, tc.target, tc.auth)
			require.True(t, strings.HasPrefix(status, tc.want), "got %q, want %q", status, tc.want)

			// The handler ends after the caller has its answer.
			var evs []auditv1.Event
			require.Eventually(t, func() bool { evs = log.written(t); return len(evs) > 0 }, hubtest.WaitBound, time.Millisecond)
			require.Len(t, log.events(t), 1)
			ev := evs[0]
			assert.Equal(t, "connect", ev.Verb)
			assert.Equal(t, tc.target, ev.RequestURI)
			assert.Equal(t, audit.FrontEndConnect, ev.Annotations[audit.AnnotationFrontEnd])
			assert.Equal(t, tc.want[:3], strconv.Itoa(int(ev.ResponseStatus.Code)))
			assert.Equal(t, strings.TrimPrefix(status, tc.want[:4]), ev.ResponseStatus.Message)
			reason := tc.metric
			if reason == "" {
				reason = "bad_request"
			}
			assert.Equal(t, reason, ev.Annotations[audit.AnnotationRefusal])
			if strings.HasPrefix(tc.want, "407") {
				assert.Empty(t, ev.User.Username)
			} else {
				assert.Equal(t, "alice", ev.User.Username)
			}
			if name, ok := strings.CutSuffix(tc.target, ".cluster.backhaul:443"); ok {
				assert.Equal(t, name, ev.Annotations[audit.AnnotationCluster], "the cluster asked for, refused or not")
			}
		})
	}
}

// A CONNECT carried is on record when the tunnel opens (ResponseStarted)
// and when it closes, with the bytes both ways and the caller.
func TestConnectAuditsTunnels(t *testing.T) {
	f := newFrontEnds(t, auth.AllowAuthenticated{}, "alpha")
	f.agent(t, "alpha", echoAgent, session.Agent{Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.7")}})
	log := withAudit(t, f)
	for _, tc := range []struct {
		name, target, auth, frontEnd, user string
		handler                            http.Handler
	}{
		{"cluster", "alpha.cluster.backhaul:443", "Bearer alice-token", audit.FrontEndConnect, "alice", f.connect},
		{"node", "10.0.0.7:10250", "Bearer alice-token", audit.FrontEndConnect, "alice", f.connect},
		{"socket", "alpha.cluster.backhaul:443", "", audit.FrontEndConnectSocket, "system:egress", f.connect.ForSocket(&auth.User{Name: "system:egress"})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(log.written(t))
			status, br, c := rawConnect(t, tc.handler, tc.target, tc.auth)
			require.Equal(t, "200 Connection established", status)
			first, err := br.ReadString('\n')
			require.NoError(t, err)
			_, err = io.WriteString(c, "ping\n")
			require.NoError(t, err)
			_, err = br.ReadString('\n')
			require.NoError(t, err)
			require.NoError(t, c.Close())

			var evs []auditv1.Event
			require.Eventually(t, func() bool {
				evs = log.written(t)[before:]
				return len(evs) == 2
			}, hubtest.WaitBound, time.Millisecond, "the tunnel's two events")
			for _, ev := range evs {
				assert.Equal(t, "connect", ev.Verb)
				assert.Equal(t, tc.user, ev.User.Username)
				assert.Equal(t, "alpha", ev.Annotations[audit.AnnotationCluster])
				assert.Equal(t, tc.frontEnd, ev.Annotations[audit.AnnotationFrontEnd])
				assert.EqualValues(t, http.StatusOK, ev.ResponseStatus.Code)
				assert.Equal(t, evs[0].AuditID, ev.AuditID)
			}
			assert.Equal(t, auditv1.StageResponseStarted, evs[0].Stage)
			assert.Equal(t, auditv1.StageResponseComplete, evs[1].Stage)
			assert.Equal(t, "5", evs[1].Annotations[audit.AnnotationBytesIn])
			assert.Equal(t, strconv.Itoa(len(first)+len("ping\n")), evs[1].Annotations[audit.AnnotationBytesOut])
		})
	}
}
