package monitoring

import (
	"bytes"
	"fmt"
	"strings"
)

// RuleManifest is a PrometheusRule manifest made from a rule file.
type RuleManifest struct {
	// Rules and Manifest are paths from deploy/monitoring.
	Rules, Manifest string
	// Name is the PrometheusRule's name (and app.kubernetes.io/name).
	Name string
	// Scrapes says, in the header, which Prometheus the rules are for.
	Scrapes string
}

// RuleManifests are deploy/monitoring's PrometheusRules.
var RuleManifests = []RuleManifest{
	{Rules: "rules/hub.rules.yaml", Manifest: "prometheusrule.yaml", Name: "backhaul-hub",
		Scrapes: "the Prometheus scraping the hub"},
	{Rules: "rules/agent.rules.yaml", Manifest: "agent/prometheusrule.yaml", Name: "backhaul-agent",
		Scrapes: "the Prometheus scraping the agents (a member's own, usually)"},
}

// Render is the manifest for the rule file's content: the file's groups,
// comments and all, under spec. The rule file is the one edited; this
// keeps the two from drifting apart.
func (m RuleManifest) Render(rules []byte) ([]byte, error) {
	_, groups, ok := bytes.Cut(rules, []byte("\ngroups:\n"))
	if !ok {
		return nil, fmt.Errorf("%s: no top-level groups key", m.Rules)
	}
	var b strings.Builder
	fmt.Fprintf(&b, `# Generated from %s by make monitoring-update: edit that file.
# The same alerts for the Prometheus Operator, for %s.
# A Prometheus loads the PrometheusRules its ruleSelector matches: add the
# labels yours selects in an overlay (kube-prometheus-stack's default:
# release: NAME).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: %s
  labels:
    app.kubernetes.io/name: %s
    app.kubernetes.io/component: monitoring
spec:
  groups:
`, m.Rules, m.Scrapes, m.Name, m.Name)
	for _, line := range strings.SplitAfter(string(groups), "\n") {
		if strings.TrimSpace(line) != "" {
			b.WriteString("  ")
		}
		b.WriteString(line)
	}
	return []byte(b.String()), nil
}
