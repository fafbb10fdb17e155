package ctl

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/pkg/version"
)

// Verdict grades one finding, and a whole diagnosis by its worst finding.
type Verdict string

// Verdicts, from best to worst.
const (
	VerdictOK      Verdict = "ok"
	VerdictWarning Verdict = "warning"
	VerdictProblem Verdict = "problem"
)

func (v Verdict) rank() int {
	switch v {
	case VerdictProblem:
		return 2
	case VerdictWarning:
		return 1
	default:
		return 0
	}
}

// Checks diagnose runs, in the order it reports them: from "does the hub
// know the cluster" through "is the tunnel up and why not" to the hub
// itself. Each names a Finding in -o json.
const (
	CheckRegistration = "registration"
	CheckTunnel       = "tunnel"
	CheckRefusals     = "refusals"
	CheckReadiness    = "readiness"
	CheckLatency      = "latency"
	CheckStability    = "stability"
	CheckCertificate  = "certificate"
	CheckClock        = "clock"
	CheckAgentVersion = "agent-version"
	CheckEnrollment   = "enrollment"
	CheckHubReplicas  = "hub-replicas"
	CheckHubEndpoint  = "hub-endpoint"
)

// Finding is one thing diagnose looked at: what it saw, how bad that is,
// and the next thing to check when it is not ok.
type Finding struct {
	Check   string  `json:"check"`
	Verdict Verdict `json:"verdict"`
	Summary string  `json:"summary"`
	Next    string  `json:"next,omitempty"`
}

// Diagnosis is what `backhaulctl diagnose` prints with -o json or yaml.
type Diagnosis struct {
	Cluster  string    `json:"cluster"`
	Time     time.Time `json:"time"`
	Verdict  Verdict   `json:"verdict"`
	Findings []Finding `json:"findings"`
}

// exitProblem is diagnose's exit code when it found a problem; 1 stays
// "could not run" (bad arguments, host cluster unreachable), so a script
// can tell a sick cluster from a failed check.
const exitProblem = 2

// Defaults of diagnose's flags.
const (
	// defaultCertWarning: agents renew at two thirds of a certificate's
	// life (30 days by default), so one with less than a week left
	// missed its renewal.
	defaultCertWarning = 7 * 24 * time.Hour
	// hubProbeTimeout bounds the TLS handshake with the hub.
	hubProbeTimeout = 5 * time.Second
)

type diagnoseOptions struct {
	output      string
	certWarning time.Duration
	probeHub    bool
}

func newDiagnoseCommand(r *runner) *cobra.Command {
	o := diagnoseOptions{certWarning: defaultCertWarning, probeHub: true}
	cmd := &cobra.Command{
		Use:   "diagnose NAME",
		Short: "Say why a member cluster is not connected, or slow, and what to check next",
		Long: `Reads what the hub's host cluster knows of one member cluster (its Cluster
object with the tunnel health the hub measured, its bootstrap tokens, the hub
replicas' session directory and the hub's published address and CA), shakes
hands with the hub's TLS endpoint, and reports each finding as ok, warning or
problem, with the next thing to check.

Exit status: 0 when nothing is a problem (warnings may be present); 2 when a
problem was found (including a cluster that is not registered); 1 when the
diagnosis could not run (bad arguments, host cluster unreachable).`,
		Example: `  backhaulctl diagnose edge-1
  backhaulctl diagnose edge-1 -o json
  backhaulctl diagnose edge-1 --cert-warning 24h --probe-hub=false`,
		Args: exactArgs(1, "a cluster name"),
		RunE: runE(func(ctx context.Context, args []string) error {
			return r.diagnose(ctx, args[0], o)
		}),
	}
	fs := cmd.Flags()
	fs.StringVarP(&o.output, "output", "o", "", "output format: json or yaml (default: a report for people)")
	fs.DurationVar(&o.certWarning, "cert-warning", o.certWarning, "warn when the agent's certificate, or the hub's, expires within this long")
	fs.BoolVar(&o.probeHub, "probe-hub", o.probeHub, "shake hands with the hub's TLS endpoint (from this machine) and check its serving certificate")
	return cmd
}

func (r *runner) diagnose(ctx context.Context, name string, o diagnoseOptions) error {
	if o.output != outputTable && o.output != outputJSON && o.output != outputYAML {
		return usageErrorf("--output %q: want json or yaml", o.output)
	}
	if msgs := validation.IsDNS1123Label(name); len(msgs) > 0 {
		return usageErrorf("cluster name %q: %s", name, strings.Join(msgs, "; "))
	}
	if o.certWarning < 0 {
		return usageErrorf("--cert-warning %s: must not be negative", o.certWarning)
	}
	c, err := r.client()
	if err != nil {
		return err
	}
	f, err := r.gather(ctx, c, name, o)
	if err != nil {
		return err
	}
	d := f.diagnose()
	if o.output == outputTable {
		err = printDiagnosis(r.env.Out, d)
	} else {
		err = writeObject(r.env.Out, o.output, d)
	}
	if err != nil {
		return err
	}
	if d.Verdict == VerdictProblem {
		return exitCode(exitProblem)
	}
	return nil
}

// facts is everything diagnose reads, gathered once. The checks are pure
// functions of it, so tests can reason about each rule on its own.
type facts struct {
	name      string
	namespace string
	now       time.Time
	// cluster is nil when no Cluster of that name exists.
	cluster *v1alpha1.Cluster

	tokens      []tokenFact
	tokensErr   error
	replicas    []v1alpha1.HubReplica
	replicasErr error
	hub         HubInfo
	hubErr      error
	// probe is nil when the hub was not probed.
	probe *hubProbe

	// refVersion is what the agent's version is compared with.
	refVersion, refVersionFrom string
	certWarning                time.Duration
}

// tokenFact is one bootstrap token Secret of the cluster.
type tokenFact struct {
	id      string
	expires time.Time // zero when unreadable
	used    bool
}

// gather reads what the host cluster knows. Only a failure to read the
// Cluster itself stops the diagnosis; anything else becomes a finding.
func (r *runner) gather(ctx context.Context, c client.Client, name string, o diagnoseOptions) (*facts, error) {
	f := &facts{
		name: name, namespace: r.opts.Namespace, now: r.env.Now(), certWarning: o.certWarning,
		// Until a live replica says its version (older hubs do not),
		// backhaulctl's stands in: it ships in the same release.
		refVersion: version.Version, refVersionFrom: "backhaulctl",
	}
	var cl v1alpha1.Cluster
	switch err := c.Get(ctx, client.ObjectKey{Name: name}, &cl); {
	case apierrors.IsNotFound(err):
	case err != nil:
		return nil, explain(err)
	default:
		f.cluster = &cl
	}
	f.tokens, f.tokensErr = clusterTokens(ctx, c, f.namespace, name, f.cluster)

	var replicas v1alpha1.HubReplicaList
	if err := c.List(ctx, &replicas, client.InNamespace(f.namespace)); err != nil {
		f.replicasErr = explain(err)
	} else {
		f.replicas = replicas.Items
		if v, from := hubVersion(f.replicas, f.now); v != "" {
			f.refVersion, f.refVersionFrom = v, from
		}
	}

	f.hub, f.hubErr = resolveHubInfo(ctx, c, r.opts)
	if f.hubErr == nil && o.probeHub {
		pctx, cancel := context.WithTimeout(ctx, hubProbeTimeout)
		p := probeHub(pctx, f.hub, r.env.Now)
		cancel()
		f.probe = &p
	}
	return f, nil
}

// clusterTokens lists the bootstrap tokens backhaulctl issued for the
// cluster, skipping those of an earlier Cluster of the same name (the
// garbage collector deletes them with it).
func clusterTokens(ctx context.Context, c client.Reader, namespace, name string, cluster *v1alpha1.Cluster) ([]tokenFact, error) {
	var list corev1.SecretList
	if err := c.List(ctx, &list, client.InNamespace(namespace), client.MatchingLabels{identity.LabelCluster: name}); err != nil {
		return nil, err
	}
	var out []tokenFact
	for _, s := range list.Items {
		if s.Type != identity.BootstrapSecretType || cluster == nil || !ownedBy(&s, cluster) {
			continue
		}
		t := tokenFact{id: string(s.Data[identity.KeyTokenID]), used: string(s.Data[identity.KeyUsed]) == "true"}
		if t.id == "" {
			t.id = strings.TrimPrefix(s.Name, identity.BootstrapSecretPrefix)
		}
		if exp, err := time.Parse(time.RFC3339, string(s.Data[identity.KeyExpiration])); err == nil {
			t.expires = exp
		}
		out = append(out, t)
	}
	return out, nil
}

func ownedBy(s *corev1.Secret, cluster *v1alpha1.Cluster) bool {
	for _, ref := range s.OwnerReferences {
		if ref.Kind == "Cluster" && ref.UID == cluster.UID {
			return true
		}
	}
	return false
}

// diagnose runs every check that applies, in report order.
func (f *facts) diagnose() Diagnosis {
	d := Diagnosis{Cluster: f.name, Time: f.now.UTC(), Verdict: VerdictOK}
	checks := []func() (Finding, bool){f.registration}
	if f.cluster != nil {
		checks = append(checks, f.tunnelCheck, f.refusals, f.readiness, f.latency, f.stability,
			f.certificate, f.clock, f.agentVersion, f.enrollment)
	}
	checks = append(checks, f.hubReplicas, f.hubEndpoint)
	for _, check := range checks {
		if fd, ok := check(); ok {
			d.Findings = append(d.Findings, fd)
			if fd.Verdict.rank() > d.Verdict.rank() {
				d.Verdict = fd.Verdict
			}
		}
	}
	return d
}

// printDiagnosis writes the report for people: a headline, then one
// finding per line with its next step indented under it.
func printDiagnosis(w io.Writer, d Diagnosis) error {
	counts := map[Verdict]int{}
	width := 0
	for _, fd := range d.Findings {
		counts[fd.Verdict]++
		width = max(width, len(fd.Check))
	}
	var tally []string
	for _, v := range []Verdict{VerdictProblem, VerdictWarning} {
		if n := counts[v]; n > 0 {
			tally = append(tally, plural(n, string(v)))
		}
	}
	// Warnings alone leave a cluster healthy (and the exit status 0).
	headline := strings.Join(tally, ", ")
	if counts[VerdictProblem] == 0 {
		headline = strings.Join(append([]string{"healthy"}, tally...), ", ")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Cluster %s: %s (checked %s)\n\n", d.Cluster, headline, d.Time.Format(time.RFC3339))
	indent := strings.Repeat(" ", 9+width+2)
	for _, fd := range d.Findings {
		fmt.Fprintf(&b, "%-9s%-*s  %s\n", strings.ToUpper(string(fd.Verdict)), width, fd.Check, fd.Summary)
		if fd.Next != "" {
			fmt.Fprintf(&b, "%snext: %s\n", indent, fd.Next)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// at prints an instant with how long ago (or how far ahead) it is.
func (f *facts) at(t time.Time) string {
	s := t.UTC().Format(time.RFC3339)
	if d := f.now.Sub(t); d >= 0 {
		return s + " (" + duration.HumanDuration(d) + " ago)"
	}
	return s + " (in " + duration.HumanDuration(t.Sub(f.now)) + ")"
}

// short prints a round trip or skew to a sensible precision.
func short(d time.Duration) string {
	a := d.Abs()
	switch {
	case a < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case a < time.Second:
		return d.Round(100 * time.Microsecond).String()
	default:
		return d.Round(10 * time.Millisecond).String()
	}
}

// hubVersion is the version a live replica publishes, preferring the
// newest (a rollout in progress compares agents with where it is going),
// and which replica said it.
func hubVersion(replicas []v1alpha1.HubReplica, now time.Time) (v, from string) {
	var newest time.Time
	for _, r := range replicas {
		st := r.Status
		if st.Version == "" || st.RenewTime == nil {
			continue
		}
		if now.After(st.RenewTime.Add(time.Duration(st.LeaseDurationSeconds) * time.Second)) {
			continue // expired: not serving
		}
		if t := r.CreationTimestamp.Time; v == "" || t.After(newest) {
			v, from, newest = st.Version, "hub "+r.Name, t
		}
	}
	return v, from
}
