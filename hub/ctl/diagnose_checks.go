package ctl

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/duration"
	utilversion "k8s.io/apimachinery/pkg/util/version"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
	"backhaul.io/backhaul/pkg/identity"
)

// Thresholds of the checks. They grade a report for people, so they lean
// towards saying something: a warning costs a glance, a missed cause an
// outage.
const (
	// A clock this far off is worth fixing; past clockSkewProblem (the
	// hub back-dates certificates by 5 min) fresh certificates look not
	// yet valid to the member.
	clockSkewWarning = time.Minute
	clockSkewProblem = 5 * time.Minute
	// The tail is "much worse than the average" when p99 is at least
	// tailFactor times the EWMA and at least tailGap above it: retransmits
	// on a lossy link stall the tunnel's one TCP stream.
	tailFactor = 4
	tailGap    = 50 * time.Millisecond
	// Every API call through the hub pays the round trip, several times
	// over for a TLS handshake through CONNECT.
	highRTT = 250 * time.Millisecond
	// staleHeartbeat: the hub rewrites a connected cluster's status at
	// least every --cluster-heartbeat-interval (1 min by default).
	staleHeartbeat = 5 * time.Minute
	// hubCAWarning: a CA is replaced by hand, which takes planning.
	hubCAWarning = 30 * 24 * time.Hour
)

// Commands the hints name. The agent's namespace is onboard.sh's default:
// the host cluster does not know which one a site chose.
var agentLogs = fmt.Sprintf("kubectl -n %s logs -l app.kubernetes.io/name=backhaul-agent --tail=100", identity.AgentNamespace)

func (f *facts) reissue() string {
	return fmt.Sprintf("backhaulctl cluster add %s --reissue-token", f.name)
}

func (f *facts) hubLogs() string {
	return fmt.Sprintf("kubectl -n %s logs -l app.kubernetes.io/name=backhaul-hub --tail=500 | grep %s", f.namespace, f.name)
}

func (f *facts) hubURL() string {
	if f.hub.URL == nil {
		return "the hub's URL"
	}
	return f.hub.TunnelURL()
}

func (f *facts) cond(typ string) *metav1.Condition {
	return meta.FindStatusCondition(f.cluster.Status.Conditions, typ)
}

func (f *facts) connected() bool {
	c := f.cond(v1alpha1.ClusterTunnelConnected)
	return c != nil && c.Status == metav1.ConditionTrue
}

// tunnel is the hub's tunnel health record; never nil (empty when the hub
// recorded none).
func (f *facts) tunnel() *v1alpha1.TunnelStatus {
	if t := f.cluster.Status.Tunnel; t != nil {
		return t
	}
	return &v1alpha1.TunnelStatus{}
}

// everConnected: some agent of this Cluster held a session at some point.
func (f *facts) everConnected() bool {
	st, t := &f.cluster.Status, f.tunnel()
	return f.connected() || st.AgentVersion != "" || st.LastHeartbeatTime != nil ||
		t.ConnectedSince != nil || t.LastDisconnectTime != nil
}

func (f *facts) registration() (Finding, bool) {
	fd := Finding{Check: CheckRegistration}
	switch c := f.cluster; {
	case c == nil:
		fd.Verdict, fd.Summary = VerdictProblem, fmt.Sprintf("no Cluster %q in the hub's host cluster", f.name)
		fd.Next = fmt.Sprintf("`backhaulctl cluster list` shows the registered names; `backhaulctl cluster add %s` registers this one", f.name)
	case c.DeletionTimestamp != nil:
		fd.Verdict, fd.Summary = VerdictProblem, "being removed since "+f.at(c.DeletionTimestamp.Time)+": its agents' credentials are revoked"
		fd.Next = fmt.Sprintf("wait until `backhaulctl cluster get %s` says NotFound, then `backhaulctl cluster add %s` and onboard the site again", f.name, f.name)
	default:
		fd.Verdict, fd.Summary = VerdictOK, "registered "+f.at(c.CreationTimestamp.Time)
		if len(c.Labels) > 0 {
			fd.Summary += ", labels " + labels.FormatLabels(c.Labels)
		}
	}
	return fd, true
}

func (f *facts) tunnelCheck() (Finding, bool) {
	fd := Finding{Check: CheckTunnel}
	st, t := &f.cluster.Status, f.tunnel()
	cond := f.cond(v1alpha1.ClusterTunnelConnected)
	if f.connected() {
		since := cond.LastTransitionTime.Time
		if t.ConnectedSince != nil {
			since = t.ConnectedSince.Time
		}
		fd.Verdict, fd.Summary = VerdictOK, "connected since "+f.at(since)
		if cond.Message != "" {
			fd.Summary += ": " + cond.Message
		}
		return fd, true
	}
	fd.Verdict = VerdictProblem
	if !f.everConnected() {
		fd.Summary = "never connected since it was registered " + duration.HumanDuration(f.now.Sub(f.cluster.CreationTimestamp.Time)) + " ago"
		fd.Next = f.neverConnectedNext()
		return fd, true
	}
	var since time.Time
	switch {
	case t.LastDisconnectTime != nil:
		since = t.LastDisconnectTime.Time
	case cond != nil && cond.Status == metav1.ConditionFalse:
		since = cond.LastTransitionTime.Time
	}
	fd.Summary = "disconnected"
	if !since.IsZero() {
		fd.Summary += " since " + f.at(since)
	}
	if t.LastDisconnectReason != "" {
		fd.Summary += "; last disconnect: " + t.LastDisconnectReason
	}
	if hb := st.LastHeartbeatTime; hb != nil {
		fd.Summary += "; last reached the member " + f.at(hb.Time)
	}
	if f.refusedNow() {
		fd.Next = "the hub refuses this cluster's agent: see " + CheckRefusals
	} else {
		fd.Next = f.disconnectHint(t.LastDisconnectReason)
	}
	return fd, true
}

// Why a session ended, as the hub records it in
// status.tunnel.lastDisconnectReason: a closed set (hub/session's
// Disconnect constants; backhaulctl imports no hub package).
const (
	disconnectAgentClosed = "agent_closed"
	disconnectKeepalive   = "keepalive_timeout"
	disconnectLost        = "connection_lost"
	disconnectExpired     = "expired"
	disconnectRevoked     = "revoked"
	disconnectDrained     = "drained"
	disconnectShutdown    = "hub_shutdown"
)

// disconnectHint is the next step for a cluster whose last session ended
// for reason and that no agent of which the hub refuses since.
func (f *facts) disconnectHint(reason string) string {
	pods := fmt.Sprintf("`kubectl -n %s get deploy,ds,pods -l app.kubernetes.io/name=backhaul-agent`", identity.AgentNamespace)
	switch reason {
	case disconnectAgentClosed:
		return fmt.Sprintf("the agent said goodbye: it was stopped, scaled down or deleted, or is restarting: %s, and its log: `%s`", pods, agentLogs)
	case disconnectKeepalive:
		return fmt.Sprintf("pings went unanswered: the site, its uplink or the agent's node went dark, or a middlebox drops idle connections; can the site reach %s? `%s`", f.hubURL(), agentLogs)
	case disconnectLost:
		return fmt.Sprintf("the connection broke without a goodbye: the agent was killed (OOMKilled? RESTARTS in %s) or a proxy or firewall reset it; `%s`", pods, agentLogs)
	case disconnectExpired:
		return fmt.Sprintf("the session reached the end of its certificate's life and no new one came up: see %s, and `%s`", CheckCertificate, agentLogs)
	case disconnectRevoked:
		return fmt.Sprintf("the hub revoked the agent's credential (the cluster was removed or re-created): at the site `kubectl -n %s delete secret backhaul-agent`, then run the command `%s` prints",
			identity.AgentNamespace, f.reissue())
	case disconnectDrained, disconnectShutdown:
		return fmt.Sprintf("a hub replica went away and the agent has not reached another: see %s, the load balancer in front of the hub, and `%s`", CheckHubReplicas, agentLogs)
	default:
		return fmt.Sprintf("is the agent running at the site, and can it reach %s? `%s` (an egress proxy needs HTTPS_PROXY in the agent's environment)", f.hubURL(), agentLogs)
	}
}

// neverConnectedNext picks the next step for a cluster no agent ever
// connected for, from what became of its bootstrap tokens.
func (f *facts) neverConnectedNext() string {
	reach := fmt.Sprintf("check the agent reaches %s: `%s`", f.hubURL(), agentLogs)
	if f.tokensErr != nil {
		return "run the onboard.sh command `backhaulctl cluster add` printed at the site, with the member's kubeconfig; then " + reach
	}
	if t, ok := f.usableToken(); ok {
		return fmt.Sprintf("run the onboard.sh command `backhaulctl cluster add` printed at the site, with the member's kubeconfig, before token %s expires %s; then %s",
			t.id, f.at(t.expires), reach)
	}
	if slices.ContainsFunc(f.tokens, func(t tokenFact) bool { return t.used }) {
		return "the agent enrolled (its token is spent) but no tunnel came up: " + reach
	}
	return fmt.Sprintf("no usable bootstrap token is left: `%s`, then run the printed command at the site", f.reissue())
}

// usableToken is an unused, unexpired token, the one expiring last.
func (f *facts) usableToken() (tokenFact, bool) {
	var best tokenFact
	found := false
	for _, t := range f.tokens {
		if !t.used && t.expires.After(f.now) && (!found || t.expires.After(best.expires)) {
			best, found = t, true
		}
	}
	return best, found
}

// refusedNow: the hub's last refusal of this cluster's agents came after
// the current session started or, while disconnected, after the last
// session ended. An older one is history. Missing times count as now.
func (f *facts) refusedNow() bool {
	t := f.tunnel()
	if t.LastRefusalReason == "" {
		return false
	}
	if t.LastRefusalTime == nil {
		return true
	}
	since := t.LastDisconnectTime
	if f.connected() {
		since = t.ConnectedSince
	}
	return since == nil || !t.LastRefusalTime.Before(since)
}

func (f *facts) refusals() (Finding, bool) {
	t := f.tunnel()
	fd := Finding{Check: CheckRefusals, Verdict: VerdictOK}
	if t.LastRefusalReason == "" {
		if f.cluster.Status.Tunnel == nil {
			return fd, false // a hub that records no tunnel health
		}
		fd.Summary = "the hub recorded no refusal of this cluster's agents"
		return fd, true
	}
	when := ""
	if t.LastRefusalTime != nil {
		when = " " + f.at(t.LastRefusalTime.Time)
	}
	switch {
	case !f.refusedNow():
		fd.Summary = "last refusal" + when + ", before the latest session: " + t.LastRefusalReason
		return fd, true
	case f.connected():
		fd.Verdict = VerdictWarning
		fd.Summary = "an agent was refused" + when + " while another is connected: " + t.LastRefusalReason
	default:
		fd.Verdict = VerdictProblem
		fd.Summary = "the hub refused the agent" + when + ": " + t.LastRefusalReason
	}
	fd.Next = f.refusalHint(t.LastRefusalReason)
	return fd, true
}

// refusalHint reads the reason the hub recorded: a phrase for people
// from a closed set (hub/session's Refusal constants), matched here by
// its words so that a reworded phrase still finds its hint; an
// unrecognised reason gets the generic one.
func (f *facts) refusalHint(reason string) string {
	r := strings.ToLower(reason)
	has := func(words ...string) bool {
		return slices.ContainsFunc(words, func(w string) bool { return strings.Contains(r, w) })
	}
	switch {
	case has("bootstrap token", "token is invalid"):
		return fmt.Sprintf("the bootstrap token was wrong, expired or spent: `%s`, and run the printed command at the site", f.reissue())
	case has("revoked", "earlier cluster"):
		return fmt.Sprintf("the agent holds the certificate of an earlier cluster of this name: at the site `kubectl -n %s delete secret backhaul-agent`, then run the command `%s` prints",
			identity.AgentNamespace, f.reissue())
	case has("is for cluster"):
		return fmt.Sprintf("the agent's certificate names another cluster: check `cluster` in ConfigMap %s/backhaul-agent at the site, or whether two sites share one Secret",
			identity.AgentNamespace)
	case has("not registered"):
		return fmt.Sprintf("`backhaulctl cluster add %s`, then onboard the site again", f.name)
	case has("hub replicas' clocks"):
		// The hub checks the certificate against its own clock; another
		// replica issued it by its own: the hubs' clocks disagree, not
		// the agent's.
		return hubClockHint
	case has("not yet valid") && !has("expired") || has("is before"):
		return clockHint
	case has("expired"):
		return fmt.Sprintf("the agent's certificate expired (offline past its renewal, or renewal failed): re-enroll with `%s` and run the printed command at the site; the agent enrolls again with the new token",
			f.reissue())
	case has("subprotocol", "protocol version", "upgrade required"):
		return fmt.Sprintf("the agent speaks another tunnel protocol version: upgrade it to the hub's release, e.g. `kubectl -n %s set image deploy/backhaul-agent agent=backhaul-agent:%s`",
			identity.AgentNamespace, f.refVersion)
	case has("draining", "too many", "quota", "rate limit", "retry later"):
		return "a hub replica turned the agent away for now (draining, busy or over a limit); the agent retries by itself. If it lasts: `" + f.hubLogs() + "`"
	case has("node address"):
		return fmt.Sprintf("a node-mode agent advertised an address outside the cluster's spec.nodeCIDRs: `kubectl edit clusters.backhaul.io %s`, or fix the node's address", f.name)
	default:
		return "the hub's log has the details: `" + f.hubLogs() + "`"
	}
}

const hubClockHint = "a hub replica refused a certificate another replica issued moments ago by its own clock: fix time sync (NTP, chrony) on the hub's nodes; the agent retries and succeeds once the refusing replica's clock passes the certificate's start"

const clockHint = "fix time sync (NTP, chrony) on the member's nodes: with a clock minutes off, fresh certificates look not yet valid, renewals run at the wrong time and bootstrap tokens expire early or late"

func (f *facts) readiness() (Finding, bool) {
	if !f.connected() {
		return Finding{}, false // the tunnel finding says why
	}
	fd := Finding{Check: CheckReadiness}
	st := &f.cluster.Status
	c := f.cond(v1alpha1.ClusterReady)
	switch {
	case c != nil && c.Status == metav1.ConditionTrue:
		fd.Verdict, fd.Summary = VerdictOK, "the member's API server answers /readyz ok"
		if st.KubernetesVersion != "" {
			fd.Summary = "the member's API server (Kubernetes " + st.KubernetesVersion + ") answers /readyz ok"
		}
		if hb := st.LastHeartbeatTime; hb != nil {
			fd.Summary += ", last reached " + f.at(hb.Time)
			if f.now.Sub(hb.Time) > staleHeartbeat {
				fd.Verdict = VerdictWarning
				fd.Summary += ": this status is stale"
				fd.Next = fmt.Sprintf("the replica that writes Cluster status (the leader) may be stuck: `kubectl -n %s get lease backhaul-hub`, and its log", f.namespace)
			}
		}
	case c == nil || c.Reason == "NotProbedYet":
		fd.Verdict, fd.Summary = VerdictWarning, "the hub has not probed the member's /readyz through the tunnel yet"
		fd.Next = "run diagnose again in a moment (the hub probes every --cluster-status-interval, 15 s by default)"
	default:
		fd.Verdict, fd.Summary = VerdictProblem, "the tunnel is up but the member's API server is not ready"
		if c.Message != "" {
			fd.Summary += ": " + c.Message
		}
		fd.Next = fmt.Sprintf("check the member's API server: `kubectl get --raw='/readyz?verbose'` with the member's kubeconfig (or through the hub, context %s of `backhaulctl kubeconfig`), and the agent's log: `%s`",
			f.name, agentLogs)
	}
	return fd, true
}

func (f *facts) latency() (Finding, bool) {
	if !f.connected() {
		return Finding{}, false
	}
	t := f.tunnel()
	fd := Finding{Check: CheckLatency, Verdict: VerdictOK}
	if t.RTT == nil {
		fd.Summary = "no round trip measured yet"
		if f.cluster.Status.Tunnel == nil {
			fd.Summary = "the hub recorded no tunnel health for this cluster (a hub older than this backhaulctl, or its first measurement is not written yet)"
		}
		return fd, true
	}
	rtt := t.RTT.Duration
	fd.Summary = "RTT " + short(rtt) + " (moving average)"
	if t.RTTP99 != nil {
		fd.Summary += ", p99 " + short(t.RTTP99.Duration)
		if t.RTTWindow != nil {
			fd.Summary += " over the last " + duration.HumanDuration(t.RTTWindow.Duration)
		}
	}
	switch p99 := t.RTTP99; {
	case p99 != nil && p99.Duration >= tailFactor*rtt && p99.Duration-rtt >= tailGap:
		fd.Verdict = VerdictWarning
		fd.Summary += fmt.Sprintf(": the tail is %.0f× the average, a lossy or congested link", float64(p99.Duration)/float64(max(rtt, time.Microsecond)))
		fd.Next = fmt.Sprintf("measure loss between the site and the hub (`mtr %s` from a member node), look for a saturated uplink or a shaping middlebox; retransmits stall every stream of the tunnel at once",
			f.hubHost())
	case rtt >= highRTT:
		fd.Verdict = VerdictWarning
		fd.Summary += ": every call through the hub pays it"
		fd.Next = "a hub replica in a region nearer the site, or a shorter network path, cuts it; compare clusters with `backhaulctl cluster list -o wide`"
	}
	return fd, true
}

func (f *facts) hubHost() string {
	if f.hub.URL == nil {
		return "HUB-HOST"
	}
	return f.hub.URL.Hostname()
}

func (f *facts) stability() (Finding, bool) {
	t := f.cluster.Status.Tunnel
	if t == nil {
		return Finding{}, false
	}
	fd := Finding{Check: CheckStability, Verdict: VerdictOK}
	window := "recently"
	if t.RTTWindow != nil {
		window = "in the last " + duration.HumanDuration(t.RTTWindow.Duration)
	}
	fd.Summary = plural(int(t.Reconnects), "reconnect") + " " + window
	if t.LastDisconnectReason != "" && f.connected() {
		fd.Summary += "; last disconnect"
		if t.LastDisconnectTime != nil {
			fd.Summary += " " + f.at(t.LastDisconnectTime.Time)
		}
		fd.Summary += ": " + t.LastDisconnectReason
	}
	if t.Flapping {
		fd.Verdict = VerdictProblem
		fd.Summary = "flapping: " + fd.Summary
		fd.Next = fmt.Sprintf("sessions keep dropping: a load balancer or NAT idle timeout below the agent's keepalive (--keepalive-interval 15 s + --keepalive-timeout 10 s by default; allow idle > 30 s), an unstable WAN link, or agent restarts (`kubectl -n %s get pods -l app.kubernetes.io/name=backhaul-agent`, RESTARTS); the disconnect reasons are in `%s`",
			identity.AgentNamespace, agentLogs)
	}
	return fd, true
}

func (f *facts) certificate() (Finding, bool) {
	t := f.tunnel()
	fd := Finding{Check: CheckCertificate, Verdict: VerdictOK}
	if t.CertificateNotAfter == nil {
		if !f.connected() || f.cluster.Status.Tunnel == nil {
			return fd, false
		}
		fd.Summary = "the connected agent authenticates with a token, not a certificate"
		return fd, true
	}
	end := t.CertificateNotAfter.Time
	left := end.Sub(f.now)
	switch {
	case left <= 0:
		fd.Summary = "the agent's certificate expired " + f.at(end)
		fd.Verdict = VerdictProblem
		if f.connected() {
			// Sessions end when their certificate does: the record lags.
			fd.Verdict = VerdictWarning
		}
		fd.Next = fmt.Sprintf("re-enroll: `%s`, run the printed command at the site; the agent enrolls again with the new token", f.reissue())
	case left <= f.certWarning:
		fd.Verdict, fd.Summary = VerdictWarning, "the agent's certificate expires "+f.at(end)
		fd.Next = fmt.Sprintf("agents renew at two thirds of the certificate's life; look for failed renewals in `%s`; once expired, re-enroll with `%s`", agentLogs, f.reissue())
	default:
		fd.Summary = "the agent's certificate is valid until " + f.at(end)
	}
	return fd, true
}

func (f *facts) clock() (Finding, bool) {
	t := f.tunnel()
	if t.ClockSkew == nil {
		return Finding{}, false
	}
	skew := t.ClockSkew.Duration
	fd := Finding{Check: CheckClock, Verdict: VerdictOK}
	side := "ahead of"
	if skew < 0 {
		side = "behind"
	}
	fd.Summary = fmt.Sprintf("the agent's clock is %s %s the hub's", short(skew.Abs()), side)
	switch a := skew.Abs(); {
	case a >= clockSkewProblem:
		fd.Verdict, fd.Next = VerdictProblem, clockHint
	case a >= clockSkewWarning:
		fd.Verdict, fd.Next = VerdictWarning, clockHint
	}
	return fd, true
}

func (f *facts) agentVersion() (Finding, bool) {
	agent := f.cluster.Status.AgentVersion
	if agent == "" {
		return Finding{}, false
	}
	fd := Finding{Check: CheckAgentVersion, Verdict: VerdictOK}
	fd.Summary = fmt.Sprintf("agent %s, %s %s", agent, f.refVersionFrom, f.refVersion)
	if others := f.agentVersions(); len(others) > 1 {
		fd.Verdict = VerdictWarning
		fd.Summary += "; the agents run different versions: " + strings.Join(others, ", ")
		fd.Next = fmt.Sprintf("a rollout in progress, or a site with two agent installs: `kubectl -n %s get deploy,ds -l app.kubernetes.io/name=backhaul-agent -o wide`", identity.AgentNamespace)
		return fd, true
	}
	if agent == f.refVersion {
		fd.Summary += " (the same)"
		return fd, true
	}
	av, aerr := utilversion.ParseGeneric(agent)
	rv, rerr := utilversion.ParseGeneric(f.refVersion)
	if aerr != nil || rerr != nil {
		fd.Summary += " (not comparable)"
		return fd, true
	}
	minors := int(av.Minor()) - int(rv.Minor())
	if av.Major() != rv.Major() || minors > 0 || minors < -1 {
		fd.Verdict = VerdictWarning
		fd.Summary += ": more than one minor release apart (the hub does not publish its version; backhaulctl ships with it)"
		fd.Next = fmt.Sprintf("run the agent of the hub's release at the site, e.g. `kubectl -n %s set image deploy/backhaul-agent agent=backhaul-agent:%s`",
			identity.AgentNamespace, f.refVersion)
	}
	return fd, true
}

// agentVersions lists the distinct versions the live replicas' sessions of
// this cluster reported, with the replicas holding each.
func (f *facts) agentVersions() []string {
	by := map[string][]string{}
	for _, r := range f.liveReplicas() {
		if h, ok := held(&r, f.name); ok && h.AgentVersion != "" {
			by[h.AgentVersion] = append(by[h.AgentVersion], r.Name)
		}
	}
	var out []string
	for v, rs := range by {
		out = append(out, fmt.Sprintf("%s (%s)", v, strings.Join(rs, ", ")))
	}
	slices.Sort(out)
	return out
}

func (f *facts) enrollment() (Finding, bool) {
	fd := Finding{Check: CheckEnrollment, Verdict: VerdictOK}
	if f.tokensErr != nil {
		fd.Verdict = VerdictWarning
		fd.Summary = fmt.Sprintf("cannot read the bootstrap tokens in namespace %s: %v", f.namespace, f.tokensErr)
		fd.Next = fmt.Sprintf("reading them needs list on secrets in %s; the rest of this report stands without them", f.namespace)
		return fd, true
	}
	var parts []string
	for _, t := range f.tokens {
		switch {
		case t.used:
			parts = append(parts, "token "+t.id+" spent")
		case !t.expires.After(f.now):
			parts = append(parts, "token "+t.id+" expired "+f.at(t.expires)+" unused")
		default:
			parts = append(parts, "token "+t.id+" unused, expires "+f.at(t.expires))
		}
	}
	fd.Summary = "no bootstrap token outstanding"
	if len(parts) > 0 {
		fd.Summary = strings.Join(parts, "; ")
	}
	if f.everConnected() {
		return fd, true
	}
	_, usable := f.usableToken()
	spent := slices.ContainsFunc(f.tokens, func(t tokenFact) bool { return t.used })
	switch {
	case usable:
		fd.Summary += ": waiting for the site to run onboard.sh"
	case !spent:
		fd.Verdict = VerdictProblem
		fd.Summary += ": the agent has no way to enroll"
		fd.Next = fmt.Sprintf("`%s`, then run the printed command at the site", f.reissue())
	}
	return fd, true
}
