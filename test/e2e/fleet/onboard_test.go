package fleet

import (
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/test/harness"
)

// TestOnboarding checks what setup did for f1 and f2: backhaulctl cluster
// add, onboard.sh against the member, an agent run with exactly the Secret
// the script created, enrolling for a certificate and connecting with it.
func TestOnboarding(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, name := range memberNames {
		t.Run(name, func(t *testing.T) {
			m := e.members[name]
			out, stderr, err := m.Kubectl(ctx, "-n", ns, "get", "secret", "backhaul-agent", "-o", "json")
			require.NoError(t, err, stderr)
			var sec struct {
				Data map[string][]byte `json:"data"`
			}
			require.NoError(t, json.Unmarshal([]byte(out), &sec))
			assert.NotEmpty(t, sec.Data[identity.KeyTLSCert], "the agent stored its certificate")
			assert.NotEmpty(t, sec.Data[identity.KeyTLSKey])
			assert.NotContains(t, sec.Data, identity.KeyBootstrapToken, "the spent token is forgotten")
			assert.Contains(t, e.onboardOut[name], "connected", "onboard.sh saw the hub report the cluster connected")
		})
	}
	// cluster list shows both connected and Ready, with versions.
	require.NoError(t, harness.WaitFor(ctx, 30*time.Second, 500*time.Millisecond, func() error {
		out, err := e.ctl(ctx, "cluster", "list")
		if err != nil {
			return err
		}
		for _, name := range memberNames {
			line := lineOf(out, name)
			if !strings.Contains(line, "True") || !strings.Contains(line, "v1.36") {
				return errorf("cluster list row for %s not connected and ready yet:\n%s", name, out)
			}
		}
		return nil
	}))
}

func lineOf(out, first string) string {
	for _, l := range strings.Split(out, "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[0] == first {
			return l
		}
	}
	return ""
}

// TestKubeconfig: backhaulctl writes one context per cluster through the
// hub with the caller's own host credentials, and kubectl uses it as is.
func TestKubeconfig(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	path := t.TempDir() + "/fleet.kubeconfig"
	out, err := e.ctl(ctx, "kubeconfig", "--output", path)
	require.NoError(t, err, out)
	for _, c := range memberNames {
		cmd := exec.CommandContext(ctx, e.bins.Kubectl, "--kubeconfig", path, "--context", c, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}")
		got, err := cmd.CombinedOutput()
		require.NoError(t, err, string(got))
		// The host admin's identity, impersonated in the member (without
		// system:masters, which the agent never passes on).
		assert.Equal(t, "admin", string(got), c)
	}
}
