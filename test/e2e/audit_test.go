package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"k8s.io/apimachinery/pkg/types"
	auditv1 "k8s.io/apiserver/pkg/apis/audit/v1"

	"backhaul.io/backhaul/test/harness"
)

// Issue 15, item 1: the hub's audit log, and its join with the members'.
// The suite's hub runs with --audit-log-path and a policy, and each
// member's kube-apiserver with an audit log of its own (auditArgs).

// hubAuditPolicy keeps the suite's readiness polling out of the hub's log
// (so the test sees the policy honoured) and records the rest.
const hubAuditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  nonResourceURLs: ["/readyz", "/healthz*", "/livez*"]
- level: Metadata
`

// memberAuditPolicy records every request at Metadata except the API
// server's own loopback traffic.
const memberAuditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  users: ["system:apiserver"]
- level: Metadata
`

// auditArgs writes the audit policies under dir and returns the hub's
// audit flags and, per member, its kube-apiserver's.
func auditArgs(dir string) (hub []string, member func(name string) []string, err error) {
	d := filepath.Join(dir, "audit")
	if err := os.MkdirAll(d, 0o755); err != nil {
		return nil, nil, err
	}
	hubPolicy, memberPolicy := filepath.Join(d, "hub-policy.yaml"), filepath.Join(d, "member-policy.yaml")
	if err := os.WriteFile(hubPolicy, []byte(hubAuditPolicy), 0o644); err != nil {
		return nil, nil, err
	}
	if err := os.WriteFile(memberPolicy, []byte(memberAuditPolicy), 0o644); err != nil {
		return nil, nil, err
	}
	hub = []string{"--audit-log-path", hubAuditLog(dir), "--audit-policy-file", hubPolicy}
	member = func(name string) []string {
		return []string{"--audit-log-path=" + memberAuditLog(dir, name), "--audit-policy-file=" + memberPolicy}
	}
	return hub, member, nil
}

func hubAuditLog(dir string) string          { return filepath.Join(dir, "audit", "hub.log") }
func memberAuditLog(dir, name string) string { return filepath.Join(dir, "audit", name+".log") }

// auditEvents reads an audit log's whole lines.
func auditEvents(t *testing.T, path string) []auditv1.Event {
	t.Helper()
	f, err := os.Open(path)
	require.NoError(t, err)
	defer f.Close()
	var out []auditv1.Event
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		var ev auditv1.Event
		require.NoError(t, json.Unmarshal(sc.Bytes(), &ev), "%s: %q", path, sc.Text())
		out = append(out, ev)
	}
	require.NoError(t, sc.Err())
	return out
}

// waitEvents waits until the log at path holds events that match, in
// stage order, and returns them. The hub writes behind its requests, and
// kube-apiserver writes ResponseComplete after the response is out.
func waitEvents(t *testing.T, path string, stages []auditv1.Stage, match func(auditv1.Event) bool) []auditv1.Event {
	t.Helper()
	var got []auditv1.Event
	err := harness.WaitFor(context.Background(), 30*time.Second, 100*time.Millisecond, func() error {
		got = got[:0]
		for _, ev := range auditEvents(t, path) {
			if match(ev) {
				got = append(got, ev)
			}
		}
		var have []auditv1.Stage
		for _, ev := range got {
			have = append(have, ev.Stage)
		}
		if fmt.Sprint(have) != fmt.Sprint(stages) {
			return fmt.Errorf("stages %v in %s, want %v", have, path, stages)
		}
		return nil
	})
	require.NoError(t, err)
	return got
}

var complete = []auditv1.Stage{auditv1.StageResponseComplete}

func marker(t *testing.T) string {
	var b [6]byte
	_, err := rand.Read(b[:])
	require.NoError(t, err)
	return "audit-" + hex.EncodeToString(b[:])
}

// TestAuditLogJoinsTheMembers: real kubectl through the hub — a list, a
// list the member refuses, kubectl --as, refusals of the hub's own, exec
// and CONNECT — each on record in the hub's audit log with the caller,
// verb, resource and code, and, where the request reached the member's
// kube-apiserver, in the member's audit log under the same auditID.
func TestAuditLogJoinsTheMembers(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	hubLog, m1Log := hubAuditLog(e.dir), memberAuditLog(e.dir, "m1")
	admin := callers["admin"]

	// join finds the hub's event of the request whose URI contains mark,
	// and the member's event with the same auditID.
	join := func(t *testing.T, mark string, hubStages, memberStages []auditv1.Stage) (hub, member []auditv1.Event) {
		t.Helper()
		hub = waitEvents(t, hubLog, hubStages, func(ev auditv1.Event) bool { return strings.Contains(ev.RequestURI, mark) })
		id := hub[0].AuditID
		for _, ev := range hub {
			require.Equal(t, id, ev.AuditID)
		}
		if memberStages == nil {
			return hub, nil
		}
		member = waitEvents(t, m1Log, memberStages, func(ev auditv1.Event) bool { return ev.AuditID == id })
		for _, ev := range member {
			assert.Contains(t, hub[0].RequestURI, ev.RequestURI, "the member saw the path below /clusters/m1")
		}
		return hub, member
	}

	t.Run("list", func(t *testing.T) {
		mark := marker(t)
		e.kubectl(t, "--context", "m1", "get", "configmaps", "-n", "default", "-l", "e2e="+mark)
		hub, member := join(t, mark, complete, complete)
		ev := hub[0]
		assert.Equal(t, "list", ev.Verb)
		assert.Equal(t, &auditv1.ObjectReference{Resource: "configmaps", Namespace: "default", APIVersion: "v1"}, ev.ObjectRef)
		assert.Equal(t, admin.User, ev.User.Username)
		assert.Subset(t, ev.User.Groups, admin.Groups)
		assert.Nil(t, ev.ImpersonatedUser)
		assert.EqualValues(t, http.StatusOK, ev.ResponseStatus.Code)
		assert.Equal(t, "m1", ev.Annotations["backhaul.io/cluster"])
		assert.Equal(t, "gateway", ev.Annotations["backhaul.io/front-end"])
		assert.NotEqual(t, "0", ev.Annotations["backhaul.io/bytes-out"])
		_, err := time.ParseDuration(ev.Annotations["backhaul.io/latency"])
		assert.NoError(t, err)
		assert.Contains(t, ev.UserAgent, "kubectl")

		m := member[0]
		assert.Equal(t, "list", m.Verb)
		assert.Equal(t, "configmaps", m.ObjectRef.Resource)
		assert.EqualValues(t, http.StatusOK, m.ResponseStatus.Code)
		require.NotNil(t, m.ImpersonatedUser, "the agent acts as the caller")
		assert.Equal(t, ev.Annotations["backhaul.io/member-user"], m.ImpersonatedUser.Username)
	})

	t.Run("refused by the member", func(t *testing.T) {
		mark := marker(t)
		out, err := e.kubectlErr(ctx, "--context", "m1", "--token", callers["mallory"].Token, "get", "secrets", "-n", "default", "-l", "e2e="+mark)
		require.Error(t, err, out)
		hub, member := join(t, mark, complete, complete)
		assert.Equal(t, "mallory", hub[0].User.Username)
		assert.EqualValues(t, http.StatusForbidden, hub[0].ResponseStatus.Code)
		assert.Empty(t, hub[0].Annotations["backhaul.io/refusal"], "the member refused, not the hub")
		assert.EqualValues(t, http.StatusForbidden, member[0].ResponseStatus.Code)
		assert.Equal(t, "mallory", member[0].ImpersonatedUser.Username)
	})

	t.Run("kubectl --as", func(t *testing.T) {
		mark := marker(t)
		out, err := e.kubectlErr(ctx, "--context", "m1", "--as", "mallory", "get", "secrets", "-n", "default", "-l", "e2e="+mark)
		require.Error(t, err, out) // the member lets the admin act as mallory, who may not list secrets
		hub, member := join(t, mark, complete, complete)
		assert.Equal(t, admin.User, hub[0].User.Username)
		require.NotNil(t, hub[0].ImpersonatedUser)
		assert.Equal(t, "mallory", hub[0].ImpersonatedUser.Username)
		assert.EqualValues(t, http.StatusForbidden, hub[0].ResponseStatus.Code)
		assert.Equal(t, "mallory", member[0].ImpersonatedUser.Username)
	})

	t.Run("refused by the hub", func(t *testing.T) {
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: e.hub.TLSConfig()}, Timeout: 30 * time.Second}
		for _, tc := range []struct {
			name, cluster, token, user, refusal string
			code                                int
		}{
			{"bad token", "m1", "not-a-token", "", "unauthenticated", http.StatusUnauthorized},
			{"not connected", "ghost", admin.Token, admin.User, "not_connected", http.StatusServiceUnavailable},
		} {
			t.Run(tc.name, func(t *testing.T) {
				mark := marker(t)
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.hub.ClusterURL(tc.cluster)+"/api/v1/namespaces/default/secrets?labelSelector=e2e%3D"+mark, nil)
				require.NoError(t, err)
				req.Header.Set("Authorization", "Bearer "+tc.token)
				resp, err := client.Do(req)
				require.NoError(t, err)
				resp.Body.Close()
				require.Equal(t, tc.code, resp.StatusCode)
				hub, _ := join(t, mark, complete, nil)
				ev := hub[0]
				assert.EqualValues(t, resp.Header.Get("Backhaul-Request-Id"), ev.AuditID)
				assert.Equal(t, tc.user, ev.User.Username)
				assert.EqualValues(t, tc.code, ev.ResponseStatus.Code)
				assert.Equal(t, tc.refusal, ev.Annotations["backhaul.io/refusal"])
				assert.Equal(t, "list", ev.Verb)
				assert.Equal(t, "secrets", ev.ObjectRef.Resource)
				assert.Equal(t, tc.cluster, ev.Annotations["backhaul.io/cluster"])
				assert.Empty(t, eventsOf(t, m1Log, ev.AuditID), "the member never saw it")
			})
		}
	})

	t.Run("policy None", func(t *testing.T) {
		e.kubectl(t, "--context", "m1", "get", "--raw", "/readyz")
		for _, ev := range auditEvents(t, hubLog) {
			assert.NotEqual(t, "/clusters/m1/readyz", ev.RequestURI, "the policy records no /readyz")
		}
	})

	t.Run("exec", func(t *testing.T) {
		e, _ := requireStreams(t)
		mark := marker(t)
		stdout, stderr, err := e.kubectlStreams(ctx, nil, "", "exec", streamsPod, "-c", "app", "--", "echo", mark)
		require.NoError(t, err, stderr)
		require.Equal(t, mark+"\n", stdout)
		// Long-running: on record when it starts, as kube-apiserver does.
		stages := []auditv1.Stage{auditv1.StageResponseStarted, auditv1.StageResponseComplete}
		hub, member := join(t, mark, stages, stages)
		for _, ev := range hub {
			assert.Equal(t, "exec", ev.ObjectRef.Subresource)
			assert.Equal(t, streamsPod, ev.ObjectRef.Name)
			assert.Equal(t, streamsNS, ev.ObjectRef.Namespace)
			assert.EqualValues(t, http.StatusSwitchingProtocols, ev.ResponseStatus.Code)
			assert.Equal(t, admin.User, ev.User.Username)
		}
		bytesOut, err := strconv.Atoi(hub[1].Annotations["backhaul.io/bytes-out"])
		require.NoError(t, err)
		assert.Greater(t, bytesOut, len(mark), "the command's output went through")
		for _, ev := range member {
			assert.Equal(t, "exec", ev.ObjectRef.Subresource)
			assert.Equal(t, admin.User, ev.ImpersonatedUser.Username)
		}
	})

	t.Run("CONNECT", func(t *testing.T) {
		start := time.Now().Add(-time.Second)
		path := e.connectKubeconfig(t, "m1")
		out, err := execCommand(ctx, e.bins.Kubectl, "--kubeconfig", path, "get", "namespaces", "default", "-o", "name").CombinedOutput()
		require.NoError(t, err, string(out))

		// TLS is end to end: the hub records each tunnel kubectl opened
		// (it may open more than one), not the requests in it, and its id
		// reaches the agent, not the member.
		var tunnels map[types.UID][]auditv1.Event
		require.NoError(t, harness.WaitFor(ctx, 30*time.Second, 100*time.Millisecond, func() error {
			tunnels = map[types.UID][]auditv1.Event{}
			for _, ev := range auditEvents(t, hubLog) {
				if ev.Verb == "connect" && ev.RequestURI == "m1.cluster.backhaul:6443" && !ev.RequestReceivedTimestamp.Time.Before(start) {
					tunnels[ev.AuditID] = append(tunnels[ev.AuditID], ev)
				}
			}
			for id, evs := range tunnels {
				if len(evs) != 2 {
					return fmt.Errorf("tunnel %s: %d events", id, len(evs))
				}
			}
			if len(tunnels) == 0 {
				return errors.New("no CONNECT on record")
			}
			return nil
		}))
		for _, hub := range tunnels {
			assert.Equal(t, auditv1.StageResponseStarted, hub[0].Stage)
			assert.Equal(t, auditv1.StageResponseComplete, hub[1].Stage)
			for _, ev := range hub {
				assert.Equal(t, admin.User, ev.User.Username)
				assert.Equal(t, "m1", ev.Annotations["backhaul.io/cluster"])
				assert.Equal(t, "connect", ev.Annotations["backhaul.io/front-end"])
				assert.EqualValues(t, http.StatusOK, ev.ResponseStatus.Code)
			}
			for _, k := range []string{"backhaul.io/bytes-in", "backhaul.io/bytes-out"} {
				n, err := strconv.Atoi(hub[1].Annotations[k])
				require.NoError(t, err)
				assert.Positive(t, n, "%s: the TLS session went through", k)
			}
			assert.Empty(t, eventsOf(t, m1Log, hub[0].AuditID), "the member's kube-apiserver never sees the tunnel's id")
		}
	})
}

// eventsOf returns the events of auditID in the log at path.
func eventsOf(t *testing.T, path string, auditID types.UID) []auditv1.Event {
	var out []auditv1.Event
	for _, ev := range auditEvents(t, path) {
		if ev.AuditID == auditID {
			out = append(out, ev)
		}
	}
	return out
}
