package ctl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	certutil "k8s.io/client-go/util/cert"

	"backhaul.io/backhaul/pkg/apis/backhaul/v1alpha1"
)

// liveReplicas are the HubReplica entries whose lease has not run out:
// the replicas serving now, as the hub itself counts them.
func (f *facts) liveReplicas() []v1alpha1.HubReplica {
	var live []v1alpha1.HubReplica
	for _, r := range f.replicas {
		st := r.Status
		if st.RenewTime != nil && !f.now.After(st.RenewTime.Add(time.Duration(st.LeaseDurationSeconds)*time.Second)) {
			live = append(live, r)
		}
	}
	return live
}

func held(r *v1alpha1.HubReplica, cluster string) (v1alpha1.HeldCluster, bool) {
	i := slices.IndexFunc(r.Status.Clusters, func(h v1alpha1.HeldCluster) bool { return h.Name == cluster })
	if i < 0 {
		return v1alpha1.HeldCluster{}, false
	}
	return r.Status.Clusters[i], true
}

// hubReplicas checks the session directory: are replicas serving at all,
// which hold this cluster, and does the Cluster's status agree with them
// (the status is written by one replica, the leader; the directory by
// every replica for itself).
func (f *facts) hubReplicas() (Finding, bool) {
	fd := Finding{Check: CheckHubReplicas, Verdict: VerdictOK}
	hubPods := fmt.Sprintf("`kubectl -n %s get pods -l app.kubernetes.io/name=backhaul-hub` and `kubectl -n %s logs -l app.kubernetes.io/name=backhaul-hub --tail=100`", f.namespace, f.namespace)
	if f.replicasErr != nil {
		fd.Verdict = VerdictWarning
		fd.Summary = fmt.Sprintf("cannot read the hub replicas (HubReplica objects in %s): %v", f.namespace, f.replicasErr)
		fd.Next = fmt.Sprintf("reading them needs list on hubreplicas.backhaul.io in %s", f.namespace)
		return fd, true
	}
	live := f.liveReplicas()
	if len(live) == 0 {
		fd.Verdict = VerdictProblem
		fd.Summary = fmt.Sprintf("no hub replica is serving: no HubReplica in %s renewed its lease", f.namespace)
		if n := len(f.replicas); n > 0 {
			fd.Summary += fmt.Sprintf(" (%s with an expired lease)", plural(n, "replica"))
		}
		fd.Next = "check the hub: " + hubPods
		return fd, true
	}
	var names, holders []string
	draining := 0
	for _, r := range live {
		name := r.Name
		if r.Status.Draining {
			name += " (draining)"
			draining++
		}
		names = append(names, name)
		if h, ok := held(&r, f.name); ok {
			holders = append(holders, describeHeld(r.Name, h))
		}
	}
	fd.Summary = fmt.Sprintf("%s serving: %s", plural(len(live), "hub replica"), strings.Join(names, ", "))
	if draining == len(live) {
		fd.Verdict = VerdictWarning
		fd.Summary += "; all are draining"
		fd.Next = "a rollout or scale-down in progress; if it does not finish, " + hubPods
	}
	if f.cluster == nil {
		return fd, true
	}
	if len(holders) > 0 {
		fd.Summary += "; " + f.name + " on " + strings.Join(holders, ", ")
	} else {
		fd.Summary += "; none holds a session of " + f.name
	}
	// The two records disagree for longer than a status write takes
	// only when the writer is stuck.
	switch connected := f.connected(); {
	case connected && len(holders) == 0:
		fd.Verdict = VerdictWarning
		fd.Summary += ", yet the Cluster status says connected"
	case !connected && len(holders) > 0 && f.cluster.Status.Tunnel != nil:
		fd.Verdict = VerdictWarning
		fd.Summary += ", yet the Cluster status says disconnected"
	default:
		return fd, true
	}
	fd.Next = fmt.Sprintf("the Cluster status lags the replicas; if it lasts, the replica writing it (the leader) is stuck: `kubectl -n %s get lease backhaul-hub`, and its log", f.namespace)
	return fd, true
}

func describeHeld(replica string, h v1alpha1.HeldCluster) string {
	var parts []string
	parts = append(parts, plural(int(h.Sessions), "session"))
	if h.RTTMicros > 0 {
		parts = append(parts, "RTT "+short(time.Duration(h.RTTMicros)*time.Microsecond))
	}
	if h.Ready {
		parts = append(parts, "ready")
	} else if h.ReadyMessage != "" {
		parts = append(parts, "not ready: "+h.ReadyMessage)
	}
	return replica + " (" + strings.Join(parts, ", ") + ")"
}

// hubProbe is what a TLS handshake with the hub's public address showed.
type hubProbe struct {
	// err is a failed dial or handshake (verification included).
	err error
	// notAfter is the serving certificate's expiry.
	notAfter time.Time
}

// probeHub shakes hands with the hub's TLS listener (the one agents dial),
// verifying it against the published CA as an agent would, at the clock
// now gives. It sends nothing beyond the handshake.
func probeHub(ctx context.Context, hub HubInfo, now func() time.Time) hubProbe {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(hub.CA)
	port := hub.URL.Port()
	if port == "" {
		port = "443"
	}
	d := tls.Dialer{Config: &tls.Config{
		RootCAs: pool, ServerName: hub.URL.Hostname(), Time: now, MinVersion: tls.VersionTLS12,
	}}
	conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(hub.URL.Hostname(), port))
	if err != nil {
		return hubProbe{err: err}
	}
	defer conn.Close()
	certs := conn.(*tls.Conn).ConnectionState().PeerCertificates
	return hubProbe{notAfter: certs[0].NotAfter}
}

// hubEndpoint checks the address and CA agents are given, and the hub's
// serving certificate as this machine sees it.
func (f *facts) hubEndpoint() (Finding, bool) {
	fd := Finding{Check: CheckHubEndpoint, Verdict: VerdictOK}
	if f.hubErr != nil {
		fd.Verdict, fd.Summary = VerdictWarning, f.hubErr.Error()
		fd.Next = "agents and `backhaulctl cluster add` need it; the hub publishes it on start from --advertise-url"
		return fd, true
	}
	var notes []string
	raise := func(v Verdict, note, next string) {
		notes = append(notes, note)
		if v.rank() > fd.Verdict.rank() {
			fd.Verdict, fd.Next = v, next
		}
	}
	caNext := fmt.Sprintf("replace the hub CA (Secret %s/backhaul-ca) keeping the old certificate in the bundle until every agent renewed; see docs/security.md", f.namespace)
	if certs, err := certutil.ParseCertsPEM(f.hub.CA); err == nil {
		last := slices.MaxFunc(certs, func(a, b *x509.Certificate) int { return a.NotAfter.Compare(b.NotAfter) }).NotAfter
		switch left := last.Sub(f.now); {
		case left <= 0:
			raise(VerdictProblem, "its CA expired "+f.at(last), caNext)
		case left <= max(f.certWarning, hubCAWarning):
			raise(VerdictWarning, "its CA expires "+f.at(last), caNext)
		default:
			notes = append(notes, "CA valid until "+f.at(last))
		}
	}
	switch p := f.probe; {
	case p == nil:
	case p.err != nil:
		if errors.As(p.err, new(*tls.CertificateVerificationError)) {
			raise(VerdictProblem, "its serving certificate fails verification with the published CA: "+p.err.Error(),
				fmt.Sprintf("agents refuse such a hub; the hub's certificate is in Secret %s/backhaul-hub-tls, the CA agents trust in ConfigMap %s/backhaul-hub-info", f.namespace, f.namespace))
		} else {
			raise(VerdictWarning, "not reachable from this machine: "+p.err.Error(),
				fmt.Sprintf("agents must reach it from the sites; check the load balancer and `kubectl -n %s get svc,endpointslices -l app.kubernetes.io/name=backhaul-hub`", f.namespace))
		}
	default:
		switch left := p.notAfter.Sub(f.now); {
		case left <= f.certWarning:
			raise(VerdictWarning, "its serving certificate expires "+f.at(p.notAfter),
				fmt.Sprintf("a hub that provisions its own certificate renews it; a certificate you gave it (Secret %s/backhaul-hub-tls) you must renew", f.namespace))
		default:
			notes = append(notes, "TLS handshake ok, serving certificate valid until "+f.at(p.notAfter))
		}
	}
	fd.Summary = f.hubURL()
	if len(notes) > 0 {
		fd.Summary += ": " + strings.Join(notes, "; ")
	}
	return fd, true
}
