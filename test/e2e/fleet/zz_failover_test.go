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
// its own ports, named pod. It returns the process and its admin URL.
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

// TestSingletonFailover: a second replica is ready at once (every replica
// serves; none stands by), does no singleton work while the first holds
// the Lease, and takes over Cluster status writing when the first stops.
func TestSingletonFailover(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	holder := func() string {
		out, _ := e.hostKubectl(ctx, "", "-n", ns, "get", "lease", "backhaul-hub", "-o", "jsonpath={.spec.holderIdentity}")
		return out
	}
	first := holder()
	require.NotEmpty(t, first, "the first replica holds the Lease")

	second, adminB := e.standbyHub(t, ctx, "hub-b")
	require.NoError(t, harness.WaitFor(ctx, 30*time.Second, 200*time.Millisecond, func() error {
		if c := readyz(adminB); c != http.StatusOK {
			return fmt.Errorf("second replica /readyz = %d, want 200: every replica serves", c)
		}
		return nil
	}))
	require.Equal(t, http.StatusOK, readyz(e.hub.AdminURL))
	require.Equal(t, first, holder(), "the Lease stays where it is")

	// The agents dial the first replica only; when it stops, the second
	// takes the Lease (released on shutdown) and writes what it sees: no
	// agent connected.
	e.hub.Stop()
	require.NoError(t, harness.WaitFor(ctx, 60*time.Second, 250*time.Millisecond, func() error {
		if h := holder(); h != "hub-b" {
			return fmt.Errorf("lease holder %q", h)
		}
		if c := e.clusterCondition(ctx, "f1", "TunnelConnected"); c != "False" {
			return fmt.Errorf("f1 TunnelConnected %q, want False written by hub-b", c)
		}
		return nil
	}), "the second replica takes over singleton work\n%s", second.Tail(20))

	// The first replica returns; the agents with it, and hub-b reports
	// them through the session directory.
	require.NoError(t, e.hub.Start(ctx))
	require.NoError(t, harness.WaitFor(ctx, 60*time.Second, 500*time.Millisecond, func() error {
		for _, c := range memberNames {
			if code, body := e.gatewayDo(t, http.MethodGet, "/clusters/"+c+"/readyz", e.tokens["fleet-admin"], nil, ""); code != http.StatusOK {
				return fmt.Errorf("%s: %d %s", c, code, body)
			}
			if s := e.clusterCondition(ctx, c, "TunnelConnected"); s != "True" {
				return fmt.Errorf("%s TunnelConnected %q", c, s)
			}
		}
		return nil
	}))
	second.Stop()
}

// clusterCondition is the status of condition typ of Cluster name.
func (e *environment) clusterCondition(ctx context.Context, name, typ string) string {
	out, _ := e.hostKubectl(ctx, "", "get", "cluster", name, "-o", `jsonpath={.status.conditions[?(@.type=="`+typ+`")].status}`)
	return out
}
