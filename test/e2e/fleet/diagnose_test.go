package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/hub/ctl"
	"backhaul.io/backhaul/test/harness"
)

// diagnosis is one run of `backhaulctl diagnose NAME -o json`.
type diagnosis struct {
	ctl.Diagnosis
	code int
	raw  string
}

func (d diagnosis) finding(check string) (ctl.Finding, bool) {
	for _, fd := range d.Findings {
		if fd.Check == check {
			return fd, true
		}
	}
	return ctl.Finding{}, false
}

// diagnose runs backhaulctl diagnose against the host cluster; stdout is
// the JSON report, whatever the exit code.
func (e *environment) diagnose(ctx context.Context, name string, extra ...string) (diagnosis, error) {
	args := append([]string{"--kubeconfig", e.hostKubeconfig, "--namespace", ns, "diagnose", name, "-o", "json"}, extra...)
	cmd := exec.CommandContext(ctx, e.ctlBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	d := diagnosis{raw: stdout.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		d.code = ee.ExitCode()
	case err != nil:
		return d, err
	}
	if d.code == 1 {
		return d, fmt.Errorf("diagnose could not run: %s", stderr.String())
	}
	if err := json.Unmarshal(stdout.Bytes(), &d.Diagnosis); err != nil {
		return d, fmt.Errorf("%w: %s%s", err, stdout.String(), stderr.String())
	}
	return d, nil
}

// report is the text people read, for the test log.
func (e *environment) report(ctx context.Context, name string) string {
	out, _ := e.ctl(ctx, "diagnose", name)
	return out
}

// rttLine is the latency finding once the hub measured the tunnel: the
// moving average, and the p99 over its window.
var rttLine = regexp.MustCompile(`^RTT \d[^ ]*s \(moving average\), p99 \d[^ ]*s over the last \S+$`)

// TestDiagnose runs backhaulctl diagnose against the real hub: on a
// connected cluster (exit 0, the RTT the hub measured), on one whose agent
// was stopped (disconnected since when, the last disconnect reason, what
// to check), on one registered but never onboarded, and on a name that is
// not registered. It asserts on what the hub records in Cluster
// status.tunnel, so a field the hub stops filling fails here.
func TestDiagnose(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	t.Run("connected", func(t *testing.T) {
		var d diagnosis
		// The hub writes tunnel health in batches after it measured a
		// few round trips; wait for the first batch.
		require.NoError(t, harness.WaitFor(ctx, 60*time.Second, time.Second, func() (err error) {
			if d, err = e.diagnose(ctx, "f1"); err != nil {
				return err
			}
			if fd, _ := d.finding(ctl.CheckLatency); !rttLine.MatchString(fd.Summary) {
				return fmt.Errorf("no RTT measured yet: %q", fd.Summary)
			}
			return nil
		}), "last report:\n%s", d.raw)
		t.Logf("backhaulctl diagnose f1:\n%s", e.report(ctx, "f1"))

		assert.Equal(t, 0, d.code, d.raw)
		for _, fd := range d.Findings {
			assert.NotEqual(t, ctl.VerdictProblem, fd.Verdict, "%s: %s", fd.Check, fd.Summary)
		}
		want := map[string][]string{
			ctl.CheckRegistration: {"registered", "site=f1"},
			ctl.CheckTunnel:       {"connected since"},
			ctl.CheckReadiness:    {"(Kubernetes v1.36", "answers /readyz ok"},
			ctl.CheckLatency:      {"RTT "},
			ctl.CheckStability:    {"reconnect"},
			ctl.CheckClock:        {"the agent's clock is"},
			ctl.CheckAgentVersion: {"(the same)"},
			ctl.CheckHubReplicas:  {"f1 on "},
		}
		for check, parts := range want {
			fd, ok := d.finding(check)
			if !assert.True(t, ok, "no %s finding:\n%s", check, d.raw) {
				continue
			}
			assert.Equal(t, ctl.VerdictOK, fd.Verdict, "%s: %s", check, fd.Summary)
			for _, p := range parts {
				assert.Contains(t, fd.Summary, p, check)
			}
		}
		// The harness's hub CA and serving certificate live 7 days: a
		// warning with the default --cert-warning, but the handshake from
		// here verified against the CA the hub published.
		fd, ok := d.finding(ctl.CheckHubEndpoint)
		require.True(t, ok)
		assert.NotEqual(t, ctl.VerdictProblem, fd.Verdict, fd.Summary)
		assert.Contains(t, fd.Summary, e.agentURL+": ")
		assert.Contains(t, fd.Summary, "serving certificate")
		assert.NotContains(t, fd.Summary, "not reachable")
		// The suite's agent certificates live 2 min, so with the default
		// --cert-warning (7 days) the expiry is a warning, never a problem
		// while the agent is connected.
		fd, ok = d.finding(ctl.CheckCertificate)
		require.True(t, ok, "the hub records the agent certificate's expiry:\n%s", d.raw)
		assert.Contains(t, fd.Summary, "the agent's certificate exp")
		assert.Equal(t, ctl.VerdictWarning, fd.Verdict)
	})

	t.Run("agent stopped", func(t *testing.T) {
		e.agent("f3").Stop()
		defer func() {
			require.NoError(t, e.startAgent(ctx, "f3", e.agentURL))
			require.NoError(t, harness.WaitFor(ctx, 60*time.Second, 500*time.Millisecond, func() error {
				d, err := e.diagnose(ctx, "f3")
				if err != nil {
					return err
				}
				if fd, _ := d.finding(ctl.CheckTunnel); fd.Verdict != ctl.VerdictOK {
					return fmt.Errorf("f3 not back: %s", fd.Summary)
				}
				return nil
			}), "f3's agent reconnects")
		}()
		var d diagnosis
		require.NoError(t, harness.WaitFor(ctx, 60*time.Second, 500*time.Millisecond, func() (err error) {
			if d, err = e.diagnose(ctx, "f3"); err != nil {
				return err
			}
			if fd, _ := d.finding(ctl.CheckTunnel); fd.Verdict != ctl.VerdictProblem {
				return fmt.Errorf("f3 not shown disconnected yet: %s", fd.Summary)
			}
			return nil
		}), "last report:\n%s", d.raw)
		t.Logf("backhaulctl diagnose f3:\n%s", e.report(ctx, "f3"))

		assert.Equal(t, 2, d.code, "a disconnected cluster is a problem")
		assert.Equal(t, ctl.VerdictProblem, d.Verdict)
		fd, _ := d.finding(ctl.CheckTunnel)
		// SIGTERM: the agent closes its session, a goodbye the hub records
		// as agent_closed.
		assert.Regexp(t, `^disconnected since \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \([^)]+ ago\); last disconnect: agent_closed;`, fd.Summary,
			"the hub records when and why the last session ended (status.tunnel.lastDisconnectTime and lastDisconnectReason)")
		assert.Contains(t, fd.Next, "the agent said goodbye: it was stopped")
		assert.Contains(t, fd.Next, "kubectl -n backhaul-system logs -l app.kubernetes.io/name=backhaul-agent")
		for _, check := range []string{ctl.CheckReadiness, ctl.CheckLatency} {
			_, ok := d.finding(check)
			assert.False(t, ok, "%s is not judged without a tunnel", check)
		}
		fd, _ = d.finding(ctl.CheckHubReplicas)
		assert.Contains(t, fd.Summary, "none holds a session of f3")
		out, err := e.hostKubectl(ctx, "", "get", "clusters.backhaul.io", "f3", "-o", "jsonpath={.status.tunnel.lastDisconnectTime}")
		require.NoError(t, err, out)
		assert.NotEmpty(t, out, "status.tunnel.lastDisconnectTime")
	})

	t.Run("never onboarded", func(t *testing.T) {
		token := e.addCluster(t, "x9")
		id, _, _ := strings.Cut(token, ".")
		d, err := e.diagnose(ctx, "x9")
		require.NoError(t, err)
		t.Logf("backhaulctl diagnose x9:\n%s", e.report(ctx, "x9"))
		assert.Equal(t, 2, d.code)
		fd, _ := d.finding(ctl.CheckTunnel)
		assert.Equal(t, ctl.VerdictProblem, fd.Verdict)
		assert.Contains(t, fd.Summary, "never connected since it was registered")
		assert.Contains(t, fd.Next, "run the onboard.sh command")
		assert.Contains(t, fd.Next, "before token "+id+" expires")
		assert.Contains(t, fd.Next, "check the agent reaches "+e.agentURL)
		fd, _ = d.finding(ctl.CheckEnrollment)
		assert.Equal(t, ctl.VerdictOK, fd.Verdict)
		assert.Contains(t, fd.Summary, "token "+id+" unused, expires")
	})

	t.Run("not registered", func(t *testing.T) {
		d, err := e.diagnose(ctx, "nowhere")
		require.NoError(t, err)
		assert.Equal(t, 2, d.code)
		fd, _ := d.finding(ctl.CheckRegistration)
		assert.Equal(t, ctl.VerdictProblem, fd.Verdict)
		assert.Contains(t, fd.Next, "backhaulctl cluster list")
	})
}
