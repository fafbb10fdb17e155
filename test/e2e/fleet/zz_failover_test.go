package fleet

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/test/harness"
)

// standbyHub starts a second hub replica against the same host cluster, on
// its own ports, as Pod pod. It returns the process and its admin URL.
func (e *environment) standbyHub(t *testing.T, ctx context.Context, pod string) (*harness.Process, string) {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", e.hub.Process().PID()))
	require.NoError(t, err)
	args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
	free := func() int { p, err := harness.FreePort(); require.NoError(t, err); return p }
	admin := fmt.Sprintf("127.0.0.1:%d", free())
	for i := 1; i < len(args)-1; i++ {
		switch args[i] {
		case "--listen":
			args[i+1] = fmt.Sprintf(":%d", free())
		case "--admin-listen":
			args[i+1] = admin
		case "--connect-listen":
			args[i+1] = fmt.Sprintf("127.0.0.1:%d", free())
		case "--connect-uds":
			args[i+1] = args[i+1] + ".standby"
		}
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "POD_NAME="+pod)
	p, err := harness.Start(ctx, "hub-"+pod, t.TempDir(), cmd)
	require.NoError(t, err)
	t.Cleanup(p.Stop)
	return p, "http://" + admin
}

func readyz(url string) int {
	resp, err := http.Get(url + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestFailover: a second replica stands by (not serving) while the first
// leads, takes over when the leader stops, and labels its Pod so the
// Service routes to it; agents come back to whichever replica leads.
func TestFailover(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pod := `apiVersion: v1
kind: Pod
metadata: {name: hub-b, namespace: ` + ns + `}
spec: {serviceAccountName: backhaul-hub, automountServiceAccountToken: false, containers: [{name: hub, image: backhaul-hub:latest}]}
`
	out, err := e.hostKubectl(ctx, pod, "apply", "-f", "-")
	require.NoError(t, err, out)
	t.Cleanup(func() {
		_, _ = e.hostKubectl(context.Background(), "", "-n", ns, "delete", "pod", "hub-b", "--grace-period=0", "--force")
	})
	leaderLabel := func() string {
		out, _ := e.hostKubectl(ctx, "", "-n", ns, "get", "pod", "hub-b", "-o", `jsonpath={.metadata.labels.backhaul\.io/leader}`)
		return out
	}

	standby, adminB := e.standbyHub(t, ctx, "hub-b")
	require.NoError(t, harness.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error {
		if c := readyz(adminB); c != http.StatusServiceUnavailable {
			return fmt.Errorf("standby /readyz = %d, want 503", c)
		}
		return nil
	}))
	require.Equal(t, http.StatusOK, readyz(e.hub.AdminURL), "the first hub still leads")
	require.Empty(t, leaderLabel())

	e.hub.Stop()
	require.NoError(t, harness.WaitFor(ctx, 60*time.Second, 250*time.Millisecond, func() error {
		if c := readyz(adminB); c != http.StatusOK {
			return fmt.Errorf("standby /readyz = %d after the leader stopped", c)
		}
		if l := leaderLabel(); l != "true" {
			return fmt.Errorf("pod hub-b leader label %q", l)
		}
		return nil
	}), "the standby takes over\n%s", standby.Tail(20))

	// Hand back: the original replica leads again and the agents return.
	standby.Stop()
	require.NoError(t, harness.WaitFor(ctx, 10*time.Second, 250*time.Millisecond, func() error {
		if l := leaderLabel(); l != "" {
			return fmt.Errorf("a stopped leader keeps its label %q", l)
		}
		return nil
	}))
	require.NoError(t, e.hub.Start(ctx))
	require.NoError(t, harness.WaitFor(ctx, 60*time.Second, 500*time.Millisecond, func() error {
		for _, c := range memberNames {
			if code, body := e.gatewayDo(t, http.MethodGet, "/clusters/"+c+"/readyz", e.tokens["fleet-admin"], nil, ""); code != http.StatusOK {
				return fmt.Errorf("%s: %d %s", c, code, body)
			}
		}
		return nil
	}))
}
