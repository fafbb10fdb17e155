package fleet

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/test/harness"
)

// agentCertSerial reads the certificate the agent of cluster stored.
func (e *environment) agentCert(ctx context.Context, cluster string) (string, error) {
	out, stderr, err := e.members[cluster].Kubectl(ctx, "-n", ns, "get", "secret", "backhaul-agent", "-o", "jsonpath={.data.tls\\.crt}")
	if err != nil {
		return "", fmt.Errorf("%w: %s", err, stderr)
	}
	return out, nil
}

// hubSessions lists the hub's sessions of cluster by ID (from /status).
func (e *environment) hubSessions(t *testing.T, cluster string) []uint64 {
	t.Helper()
	return e.statusSessions(t, "fleet-admin")[cluster]
}

// statusSessions is /status as caller sees it: session IDs by cluster.
func (e *environment) statusSessions(t *testing.T, caller string) map[string][]uint64 {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, e.hub.URL+"/status", nil)
	req.Header.Set("Authorization", "Bearer "+e.tokens[caller])
	req.Header.Set("Accept", "application/json")
	resp, err := e.hubHTTP(nil).Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var rows []struct {
		Cluster string `json:"cluster"`
		ID      uint64 `json:"id"`
	}
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&rows))
	ids := map[string][]uint64{}
	for _, s := range rows {
		ids[s.Cluster] = append(ids[s.Cluster], s.ID)
	}
	return ids
}

// TestRenewalKeepsStreams: the hub issues 2 min certificates in this suite,
// so the agent renews about 80 s after adopting one. A watch open across
// the renewal keeps delivering events, and the tunnel session is the same.
// (The session ends when the certificate it was opened with expires, 40 s
// after that renewal; so the test starts on a session opened with the
// current certificate.)
func TestRenewalKeepsStreams(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	admin := e.tokens["fleet-admin"]
	e.waitFreshSession(t, ctx, "f1")
	before, err := e.agentCert(ctx, "f1")
	require.NoError(t, err)
	sessions := e.hubSessions(t, "f1")
	require.Len(t, sessions, 1)

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet,
		e.hub.URL+"/clusters/f1/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=300", nil)
	req.Header.Set("Authorization", "Bearer "+admin)
	watcher := e.hubHTTP(nil)
	watcher.Timeout = 0 // the watch lives for minutes
	resp, err := watcher.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	events := make(chan string, 16)
	go func() {
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var ev struct {
				Type   string `json:"type"`
				Object struct {
					Metadata struct {
						Name string `json:"name"`
					} `json:"metadata"`
				} `json:"object"`
			}
			if json.Unmarshal(sc.Bytes(), &ev) == nil {
				events <- ev.Type + " " + ev.Object.Metadata.Name
			}
		}
	}()

	require.NoError(t, harness.WaitFor(ctx, 150*time.Second, time.Second, func() error {
		now, err := e.agentCert(ctx, "f1")
		if err != nil {
			return err
		}
		if now == before {
			return fmt.Errorf("the agent has not renewed yet")
		}
		return nil
	}), "the agent renews before its 2 min certificate expires")

	code, body := e.gatewayDo(t, http.MethodPost, "/clusters/f1/api/v1/namespaces/default/configmaps", admin, nil,
		`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"after-renewal"}}`)
	require.Equal(t, http.StatusCreated, code, body)
	t.Cleanup(func() {
		e.gatewayDo(t, http.MethodDelete, "/clusters/f1/api/v1/namespaces/default/configmaps/after-renewal", admin, nil, "")
	})
	for {
		select {
		case ev, ok := <-events:
			require.True(t, ok, "the watch ended across the renewal")
			if ev == "ADDED after-renewal" {
				require.Equal(t, sessions, e.hubSessions(t, "f1"), "the tunnel session survived the renewal")
				return
			}
		case <-ctx.Done():
			t.Fatal("no watch event after the renewal")
		}
	}
}

// waitFreshSession waits until cluster's only session was opened with the
// agent's current certificate: after a renewal, until the session of the
// certificate before it has been replaced (at that one's expiry).
func (e *environment) waitFreshSession(t *testing.T, ctx context.Context, cluster string) {
	t.Helper()
	cert, err := e.agentCert(ctx, cluster)
	require.NoError(t, err)
	require.NoError(t, harness.WaitFor(ctx, 150*time.Second, time.Second, func() error {
		if now, err := e.agentCert(ctx, cluster); err != nil || now == cert {
			return fmt.Errorf("the agent has not renewed yet (%v)", err)
		}
		return nil
	}), "the agent renews its 2 min certificate")
	old := e.hubSessions(t, cluster)
	require.NoError(t, harness.WaitFor(ctx, 150*time.Second, time.Second, func() error {
		now := e.hubSessions(t, cluster)
		if len(now) != 1 || slices.Contains(old, now[0]) {
			return fmt.Errorf("sessions %v, want one replacing %v", now, old)
		}
		return nil
	}), "the session of the previous certificate is replaced at its expiry")
}
