package audit

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authnv1 "k8s.io/api/authentication/v1"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	"backhaul.io/backhaul/hub/auth"
)

var alice = &auth.User{Name: "alice", UID: "uid-1", Groups: []string{"dev", "system:authenticated"}, Extra: map[string][]string{"scopes": {"view"}}}

// The event says what kube-apiserver's would of the same path below
// /clusters/NAME, read by its own RequestInfoFactory.
func TestGatewayEventFromRequestInfo(t *testing.T) {
	tests := []struct {
		name, method, path string
		wantVerb           string
		wantRef            *auditv1.ObjectReference
		wantStages         []auditv1.Stage
	}{
		{name: "get a pod", method: http.MethodGet, path: "/clusters/m1/api/v1/namespaces/default/pods/web-0", wantVerb: "get",
			wantRef: &auditv1.ObjectReference{Resource: "pods", Namespace: "default", Name: "web-0", APIVersion: "v1"}},
		{name: "list deployments", method: http.MethodGet, path: "/clusters/m1/apis/apps/v1/namespaces/prod/deployments?limit=500", wantVerb: "list",
			wantRef: &auditv1.ObjectReference{Resource: "deployments", Namespace: "prod", APIGroup: "apps", APIVersion: "v1"}},
		{name: "watch is long-running", method: http.MethodGet, path: "/clusters/m1/api/v1/namespaces?watch=true&resourceVersion=7", wantVerb: "watch",
			wantRef: &auditv1.ObjectReference{Resource: "namespaces", APIVersion: "v1"}, wantStages: []auditv1.Stage{auditv1.StageResponseStarted, auditv1.StageResponseComplete}},
		{name: "exec is long-running", method: http.MethodPost, path: "/clusters/m1/api/v1/namespaces/ns/pods/p/exec?command=sh&stdin=true", wantVerb: "create",
			wantRef: &auditv1.ObjectReference{Resource: "pods", Subresource: "exec", Namespace: "ns", Name: "p", APIVersion: "v1"}, wantStages: []auditv1.Stage{auditv1.StageResponseStarted, auditv1.StageResponseComplete}},
		{name: "delete a cluster-scoped object", method: http.MethodDelete, path: "/clusters/edge-7/apis/rbac.authorization.k8s.io/v1/clusterroles/view", wantVerb: "delete",
			wantRef: &auditv1.ObjectReference{Resource: "clusterroles", Name: "view", APIGroup: "rbac.authorization.k8s.io", APIVersion: "v1"}},
		{name: "patch a status", method: http.MethodPatch, path: "/clusters/m1/apis/apps/v1/namespaces/a/deployments/d/status", wantVerb: "patch",
			wantRef: &auditv1.ObjectReference{Resource: "deployments", Subresource: "status", Namespace: "a", Name: "d", APIGroup: "apps", APIVersion: "v1"}},
		{name: "non-resource", method: http.MethodGet, path: "/clusters/m1/readyz", wantVerb: "get"},
		{name: "the cluster root", method: http.MethodGet, path: "/clusters/m1", wantVerb: "get"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l := newTestLog(t, DefaultConfig(), "")
			r := httptest.NewRequest(tc.method, tc.path, nil)
			r.Header.Set("User-Agent", "kubectl/v1.36.0")
			r.RemoteAddr = "192.0.2.7:40000"
			cluster := strings.Split(tc.path, "/")[2]
			a := l.Gateway(r, "c0ffee00-0000-4000-8000-000000000001", cluster)
			a.Authenticated(alice)
			a.Annotate(AnnotationMemberUser, "hub:alice")
			w := a.ResponseWriter(httptest.NewRecorder())
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, "twelve bytes")
			a.End(nil)

			evs := l.events(t)
			want := tc.wantStages
			if want == nil {
				want = []auditv1.Stage{auditv1.StageResponseComplete}
			}
			require.Len(t, evs, len(want))
			for i, ev := range evs {
				assert.Equal(t, want[i], ev.Stage)
				assert.Equal(t, "audit.k8s.io/v1", ev.APIVersion)
				assert.Equal(t, "Event", ev.Kind)
				assert.Equal(t, auditv1.LevelMetadata, ev.Level)
				assert.EqualValues(t, "c0ffee00-0000-4000-8000-000000000001", ev.AuditID)
				assert.Equal(t, tc.wantVerb, ev.Verb)
				assert.Equal(t, tc.path, ev.RequestURI)
				assert.Equal(t, tc.wantRef, ev.ObjectRef)
				assert.Equal(t, "alice", ev.User.Username)
				assert.Equal(t, "uid-1", ev.User.UID)
				assert.Equal(t, []string{"dev", "system:authenticated"}, ev.User.Groups)
				assert.Equal(t, map[string]authnv1.ExtraValue{"scopes": {"view"}}, ev.User.Extra)
				assert.Nil(t, ev.ImpersonatedUser)
				assert.Equal(t, []string{"192.0.2.7"}, ev.SourceIPs)
				assert.Equal(t, "kubectl/v1.36.0", ev.UserAgent)
				require.NotNil(t, ev.ResponseStatus)
				assert.EqualValues(t, http.StatusOK, ev.ResponseStatus.Code)
				assert.Equal(t, cluster, ev.Annotations[AnnotationCluster])
				assert.Equal(t, FrontEndGateway, ev.Annotations[AnnotationFrontEnd])
				assert.Equal(t, "hub:alice", ev.Annotations[AnnotationMemberUser])
				assert.False(t, ev.StageTimestamp.Before(&ev.RequestReceivedTimestamp))
			}
			done := evs[len(evs)-1]
			assert.Equal(t, "0", done.Annotations[AnnotationBytesIn])
			assert.Equal(t, "12", done.Annotations[AnnotationBytesOut])
			latency, err := time.ParseDuration(done.Annotations[AnnotationLatency])
			require.NoError(t, err)
			assert.Equal(t, done.StageTimestamp.Sub(done.RequestReceivedTimestamp.Time), latency)
		})
	}
}

// kubectl --as: the caller is the user; whom it asked to act as is the
// impersonated user (the member decides whether it may).
func TestGatewayEventImpersonation(t *testing.T) {
	l := newTestLog(t, DefaultConfig(), "")
	r := httptest.NewRequest(http.MethodGet, "/clusters/m1/api/v1/secrets", nil)
	r.Header.Set("Impersonate-User", "bob")
	r.Header.Add("Impersonate-Group", "ops")
	r.Header.Add("Impersonate-Group", "dev")
	r.Header.Set("Impersonate-Uid", "uid-bob")
	r.Header.Set("Impersonate-Extra-Example.com%2fteam", "blue")
	a := l.Gateway(r, "id-1", "m1")
	a.Authenticated(alice)
	a.End(nil)
	evs := l.events(t)
	require.Len(t, evs, 1)
	assert.Equal(t, "alice", evs[0].User.Username)
	assert.Equal(t, &authnv1.UserInfo{Username: "bob", UID: "uid-bob", Groups: []string{"ops", "dev"},
		Extra: map[string]authnv1.ExtraValue{"example.com/team": {"blue"}}}, evs[0].ImpersonatedUser)
}

// Refusals are what security reads: each has an event with the code, the
// message the caller got, and why.
func TestRefusalEvents(t *testing.T) {
	l := newTestLog(t, DefaultConfig(), "")

	// Never authenticated: no user, the policy matched without one.
	r := httptest.NewRequest(http.MethodGet, "/clusters/m1/api/v1/pods", nil)
	a := l.Gateway(r, "id-401", "m1")
	a.Refused(http.StatusUnauthorized, "unauthenticated", "Unauthorized")
	w := a.ResponseWriter(httptest.NewRecorder())
	w.WriteHeader(http.StatusUnauthorized)
	a.End(nil)

	// Authenticated, refused by the hub's authorization.
	r = httptest.NewRequest(http.MethodGet, "/clusters/m2/api/v1/namespaces/kube-system/secrets/token", nil)
	a = l.Gateway(r, "id-403", "m2")
	a.Authenticated(alice)
	a.Refused(http.StatusForbidden, "forbidden", "alice may not reach cluster m2")
	a.End(nil)

	evs := l.events(t)
	require.Len(t, evs, 2)
	assert.Empty(t, evs[0].User.Username)
	assert.EqualValues(t, 401, evs[0].ResponseStatus.Code)
	assert.Equal(t, "unauthenticated", evs[0].Annotations[AnnotationRefusal])
	assert.Equal(t, "Unauthorized", evs[0].ResponseStatus.Message)
	assert.Equal(t, "alice", evs[1].User.Username)
	assert.EqualValues(t, 403, evs[1].ResponseStatus.Code)
	assert.Equal(t, "Failure", evs[1].ResponseStatus.Status)
	assert.Equal(t, "forbidden", evs[1].Annotations[AnnotationRefusal])
	assert.Equal(t, "alice may not reach cluster m2", evs[1].ResponseStatus.Message)
	assert.Equal(t, "secrets", evs[1].ObjectRef.Resource)
	assert.Equal(t, "m2", evs[1].Annotations[AnnotationCluster])
}

// An upgrade counts the bytes through the hijacked connection, and starts
// with 101.
func TestUpgradeCountsHijackedBytes(t *testing.T) {
	l := newTestLog(t, DefaultConfig(), "")
	ended := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer close(ended)
		a := l.Gateway(r, "id-exec", "m1")
		a.Authenticated(alice)
		defer func() { a.End(recover()) }()
		c, brw, err := http.NewResponseController(a.ResponseWriter(w)).Hijack()
		if !assert.NoError(t, err) {
			return
		}
		defer c.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
		_ = brw.Flush()
		buf := make([]byte, 5)
		_, err = io.ReadFull(c, buf)
		assert.NoError(t, err)
		_, _ = c.Write([]byte("stdout bytes"))
		_, half := c.(interface{ CloseWrite() error })
		assert.True(t, half, "a TCP connection keeps its half-close through the counter")
	}))
	defer srv.Close()
	c, err := net.Dial("tcp", srv.Listener.Addr().String())
	require.NoError(t, err)
	defer c.Close()
	_, err = io.WriteString(c, "GET /clusters/m1/api/v1/namespaces/n/pods/p/exec?command=sh HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
	require.NoError(t, err)
	// As exec clients do, wait for the switch before sending.
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	require.Equal(t, http.StatusSwitchingProtocols, resp.StatusCode)
	_, err = io.WriteString(c, "hello")
	require.NoError(t, err)
	got, err := io.ReadAll(br)
	require.NoError(t, err)
	require.Equal(t, "stdout bytes", string(got))
	<-ended

	evs := l.events(t)
	require.Len(t, evs, 2)
	assert.Equal(t, auditv1.StageResponseStarted, evs[0].Stage)
	assert.EqualValues(t, http.StatusSwitchingProtocols, evs[0].ResponseStatus.Code)
	assert.Empty(t, evs[0].Annotations[AnnotationBytesOut], "bytes are counted at the end")
	assert.Equal(t, auditv1.StageResponseComplete, evs[1].Stage)
	assert.Equal(t, "5", evs[1].Annotations[AnnotationBytesIn])
	assert.Equal(t, "12", evs[1].Annotations[AnnotationBytesOut])
	assert.Equal(t, "get", evs[1].Verb)
}

// A CONNECT: verb connect, the target as its URI, ResponseStarted when
// the tunnel is up, and the tunnel's bytes.
func TestConnectEvent(t *testing.T) {
	l := newTestLog(t, DefaultConfig(), "")
	r := httptest.NewRequest(http.MethodConnect, "http://m1.cluster.backhaul:443", nil)
	r.Host = "m1.cluster.backhaul:443"
	r.RequestURI = "m1.cluster.backhaul:443"
	a := l.Connect(r, "id-connect", FrontEndConnect)
	a.Authenticated(alice)
	a.SetCluster("m1")
	a.Started(http.StatusOK)
	hubSide, memberSide := net.Pipe()
	stream := a.Conn(hubSide)
	go func() {
		buf := make([]byte, 3)
		_, _ = io.ReadFull(memberSide, buf)
		_, _ = memberSide.Write([]byte("server hello"))
		_ = memberSide.Close()
	}()
	_, err := stream.Write([]byte("abc"))
	require.NoError(t, err)
	got, err := io.ReadAll(stream)
	require.NoError(t, err)
	assert.Equal(t, "server hello", string(got))
	_, half := stream.(interface{ CloseWrite() error })
	assert.False(t, half, "no half-close where the stream has none")
	a.End(nil)

	evs := l.events(t)
	require.Len(t, evs, 2)
	for _, ev := range evs {
		assert.Equal(t, "connect", ev.Verb)
		assert.Equal(t, "m1.cluster.backhaul:443", ev.RequestURI)
		assert.Nil(t, ev.ObjectRef)
		assert.Equal(t, "m1", ev.Annotations[AnnotationCluster])
		assert.Equal(t, FrontEndConnect, ev.Annotations[AnnotationFrontEnd])
		assert.EqualValues(t, http.StatusOK, ev.ResponseStatus.Code)
	}
	assert.Equal(t, auditv1.StageResponseStarted, evs[0].Stage)
	assert.Equal(t, "3", evs[1].Annotations[AnnotationBytesIn])
	assert.Equal(t, "12", evs[1].Annotations[AnnotationBytesOut])
}

// A response ReverseProxy aborts completes, marked; any other panic is a
// Panic event; either way the panic goes on.
func TestEndOnPanic(t *testing.T) {
	l := newTestLog(t, DefaultConfig(), "")
	end := func(id string, p any) (recovered any) {
		defer func() { recovered = recover() }()
		r := httptest.NewRequest(http.MethodGet, "/clusters/m1/api/v1/pods?watch=1", nil)
		a := l.Gateway(r, id, "m1")
		a.Authenticated(alice)
		a.Started(http.StatusOK)
		a.End(p)
		return nil
	}
	assert.Equal(t, http.ErrAbortHandler, end("aborted", http.ErrAbortHandler))
	boom := errors.New("boom")
	assert.Equal(t, boom, end("panicked", boom))

	evs := l.events(t)
	require.Len(t, evs, 4)
	assert.Equal(t, auditv1.StageResponseComplete, evs[1].Stage)
	assert.Equal(t, "true", evs[1].Annotations[AnnotationAborted])
	assert.EqualValues(t, http.StatusOK, evs[1].ResponseStatus.Code, "the code the caller got")
	assert.Equal(t, auditv1.StagePanic, evs[3].Stage)
	assert.EqualValues(t, http.StatusInternalServerError, evs[3].ResponseStatus.Code)
}

// A caller that goes away before any answer: kube-apiserver's record.
func TestNothingAnswered(t *testing.T) {
	l := newTestLog(t, DefaultConfig(), "")
	a := l.Gateway(httptest.NewRequest(http.MethodGet, "/clusters/m1/version", nil), "id", "m1")
	a.Authenticated(alice)
	a.End(nil)
	a.End(nil) // once only
	evs := l.events(t)
	require.Len(t, evs, 1)
	assert.EqualValues(t, http.StatusOK, evs[0].ResponseStatus.Code)
	assert.Equal(t, "Connection closed early", evs[0].ResponseStatus.Message)
}

// Without an audit log nothing is recorded and nothing is wrapped.
func TestNilLogger(t *testing.T) {
	var l *Logger
	r := httptest.NewRequest(http.MethodPost, "/clusters/m1/api/v1/pods", strings.NewReader("{}"))
	body := r.Body
	a := l.Gateway(r, "id", "m1")
	assert.Nil(t, a)
	assert.Equal(t, body, r.Body)
	rec := httptest.NewRecorder()
	assert.Equal(t, http.ResponseWriter(rec), a.ResponseWriter(rec))
	a.Authenticated(alice)
	a.Refused(403, "forbidden", "no")
	a.Started(200)
	a.End(nil)
	assert.Panics(t, func() { a.End("boom") })
	assert.NoError(t, l.Run(t.Context()))
}

// The request body is counted as it is read.
func TestBodyBytesIn(t *testing.T) {
	l := newTestLog(t, DefaultConfig(), "")
	r := httptest.NewRequest(http.MethodPost, "/clusters/m1/api/v1/namespaces/a/configmaps", strings.NewReader(`{"kind":"ConfigMap"}`))
	a := l.Gateway(r, "id", "m1")
	a.Authenticated(alice)
	_, err := io.Copy(io.Discard, r.Body)
	require.NoError(t, err)
	a.ResponseWriter(httptest.NewRecorder()).WriteHeader(http.StatusCreated)
	a.End(nil)
	evs := l.events(t)
	require.Len(t, evs, 1)
	assert.Equal(t, "20", evs[0].Annotations[AnnotationBytesIn])
	assert.EqualValues(t, http.StatusCreated, evs[0].ResponseStatus.Code)
	assert.Equal(t, "create", evs[0].Verb)
}
