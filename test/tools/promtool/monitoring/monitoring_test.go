package monitoring

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite the PrometheusRule manifests from the rule files")

var (
	loadOnce sync.Once
	repoRoot string
	source   *Source
	loadErr  error
)

// load finds the repository and reads the code's metrics once.
func load(t *testing.T) (root string, src *Source) {
	t.Helper()
	loadOnce.Do(func() {
		if repoRoot, loadErr = RepoRoot("."); loadErr != nil {
			return
		}
		source, loadErr = LoadSource(repoRoot, SourceDirs...)
	})
	if loadErr != nil {
		t.Fatal(loadErr)
	}
	return repoRoot, source
}

func monitoringPath(root string, parts ...string) string {
	return filepath.Join(append([]string{root, "deploy", "monitoring"}, parts...)...)
}

// ruleFiles parses every rules/*.rules.yaml as Prometheus does.
func ruleFiles(t *testing.T, root string) map[string]*rulefmt.RuleGroups {
	t.Helper()
	paths, err := filepath.Glob(monitoringPath(root, "rules", "*.rules.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no rule files in deploy/monitoring/rules (%v)", err)
	}
	out := map[string]*rulefmt.RuleGroups{}
	for _, p := range paths {
		rgs, errs := rulefmt.ParseFile(p, false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.NewTextHandler(io.Discard, nil)))
		if len(errs) > 0 {
			t.Fatalf("%s: %v", p, errs)
		}
		out[filepath.Base(p)] = rgs
	}
	return out
}

// TestSourceMetrics shows what the other tests check against: the
// metrics the code declares, read from its Go sources.
func TestSourceMetrics(t *testing.T) {
	_, src := load(t)
	var names []string
	for n, m := range src.Metrics {
		if strings.HasPrefix(n, "backhaul_") {
			names = append(names, fmt.Sprintf("%s %s %v", n, m.Kind, m.Labels))
		}
	}
	sort.Strings(names)
	if len(names) == 0 {
		t.Fatal("no backhaul_ metrics found in the code")
	}
	t.Logf("%d backhaul_ metric families:\n%s", len(names), strings.Join(names, "\n"))
}

// TestRules checks every alert's expression against the code and holds
// the alerts to the conventions the docs describe.
func TestRules(t *testing.T) {
	root, src := load(t)
	c := NewChecker(src)
	seen := map[string]string{}
	for file, rgs := range ruleFiles(t, root) {
		for _, g := range rgs.Groups {
			for _, r := range g.Rules {
				name := r.Alert
				if name == "" {
					name = r.Record
				}
				t.Run(name, func(t *testing.T) {
					if other, dup := seen[name]; dup {
						t.Errorf("%s also in %s", name, other)
					}
					seen[name] = file
					if _, err := c.Check(r.Expr); err != nil {
						t.Errorf("%s: %v", file, err)
					}
					if r.Alert == "" {
						return
					}
					if s := r.Labels["severity"]; !slices.Contains([]string{"critical", "warning", "info"}, s) {
						t.Errorf("severity %q: want critical, warning or info", s)
					}
					for _, a := range []string{"summary", "description"} {
						if strings.TrimSpace(r.Annotations[a]) == "" {
							t.Errorf("no %s annotation", a)
						}
					}
					if !strings.HasPrefix(name, "Backhaul") {
						t.Errorf("alert names start with Backhaul")
					}
				})
			}
		}
	}
}

// TestDashboard checks the Grafana dashboard's structure and every query
// in it against the code.
func TestDashboard(t *testing.T) {
	root, src := load(t)
	paths, err := filepath.Glob(monitoringPath(root, "dashboards", "*.json"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no dashboards in deploy/monitoring/dashboards (%v)", err)
	}
	c := NewChecker(src)
	for _, p := range paths {
		t.Run(filepath.Base(p), func(t *testing.T) {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := Schema(b); err != nil {
				t.Errorf("Grafana's dashboard schema:\n%v", err)
			}
			d, err := ParseDashboard(b)
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Structure("job", "namespace", "agent_job"); err != nil {
				t.Error(err)
			}
			exprs := d.Expressions()
			if len(exprs) == 0 {
				t.Fatal("no queries")
			}
			for where, expr := range exprs {
				if _, err := c.Check(Expand(expr)); err != nil {
					t.Errorf("%s: %s:\n%v", where, expr, err)
				}
			}
			vq, err := d.VariableQueries()
			if err != nil {
				t.Error(err)
			}
			for name, q := range vq {
				sel, err := c.Check(Expand(q[0]))
				if err != nil {
					t.Errorf("variable %s: %v", name, err)
					continue
				}
				if len(sel) != 1 {
					t.Errorf("variable %s: %s selects %d series, want 1", name, q[0], len(sel))
					continue
				}
				if l := q[1]; !slices.Contains(TargetLabels, l) && !slices.Contains(sel[0].Metric.Labels, l) {
					t.Errorf("variable %s: %s has no label %s", name, sel[0].Series, l)
				}
			}
			t.Logf("%d queries checked", len(exprs))
		})
	}
}

// TestPrometheusRuleManifests: each PrometheusRule carries exactly its
// rule file's groups. go test -run TestPrometheusRuleManifests -update
// (make monitoring-update) rewrites them.
func TestPrometheusRuleManifests(t *testing.T) {
	root, _ := load(t)
	for _, m := range RuleManifests {
		t.Run(m.Manifest, func(t *testing.T) {
			rules, err := os.ReadFile(monitoringPath(root, m.Rules))
			if err != nil {
				t.Fatal(err)
			}
			want, err := m.Render(rules)
			if err != nil {
				t.Fatal(err)
			}
			path := monitoringPath(root, m.Manifest)
			if *update {
				if err := os.WriteFile(path, want, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("deploy/monitoring/%s is not what %s gives: run make monitoring-update", m.Manifest, m.Rules)
			}
		})
	}
}

// unitTests is the part of a promtool test file this check reads.
type unitTests struct {
	RuleFiles []string `yaml:"rule_files"`
	Tests     []struct {
		Name       string `yaml:"name"`
		AlertTests []struct {
			EvalTime  string `yaml:"eval_time"`
			Alertname string `yaml:"alertname"`
			ExpAlerts []struct {
				ExpLabels      map[string]string `yaml:"exp_labels"`
				ExpAnnotations map[string]string `yaml:"exp_annotations"`
			} `yaml:"exp_alerts"`
		} `yaml:"alert_rule_test"`
	} `yaml:"tests"`
}

// TestEveryAlertTested: every alert has a promtool unit test in which it
// fires, with its annotations rendered as expected, and one in which it
// does not.
func TestEveryAlertTested(t *testing.T) {
	root, _ := load(t)
	paths, err := filepath.Glob(monitoringPath(root, "tests", "*.yaml"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no promtool tests in deploy/monitoring/tests (%v)", err)
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var ut unitTests
		if err := yaml.Unmarshal(b, &ut); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		for _, rf := range ut.RuleFiles {
			if _, err := os.Stat(filepath.Join(filepath.Dir(p), rf)); err != nil {
				t.Errorf("%s: rule file %s: %v", filepath.Base(p), rf, err)
			}
		}
		for _, tc := range ut.Tests {
			for _, at := range tc.AlertTests {
				if len(at.ExpAlerts) == 0 {
					quiet[at.Alertname] = true
					continue
				}
				fires[at.Alertname] = true
				for _, a := range at.ExpAlerts {
					if a.ExpAnnotations["description"] == "" {
						t.Errorf("%s: %s at %s: expect the rendered description too", tc.Name, at.Alertname, at.EvalTime)
					}
				}
			}
		}
	}
	n := 0
	for _, rgs := range ruleFiles(t, root) {
		for _, g := range rgs.Groups {
			for _, r := range g.Rules {
				if r.Alert == "" {
					continue
				}
				n++
				if !fires[r.Alert] {
					t.Errorf("%s: no promtool test where it fires", r.Alert)
				}
				if !quiet[r.Alert] {
					t.Errorf("%s: no promtool test where it stays quiet", r.Alert)
				}
			}
		}
	}
	t.Logf("%d alerts, each tested firing and quiet", n)
}

// requiredVersion is the client_golang version a go.mod requires (tidy
// lists every module of the build, so it is the one built).
func requiredVersion(t *testing.T, gomod string) string {
	t.Helper()
	b, err := os.ReadFile(gomod)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "github.com/prometheus/client_golang" {
			return f[1]
		}
	}
	return ""
}

// TestCollectorsMatchTheCode: the go_ and process_ series the checks
// accept are gathered from this module's client_golang collectors; they
// are the binaries' only if the hub and the agent register the same
// collectors from the same client_golang release.
func TestCollectorsMatchTheCode(t *testing.T) {
	root, _ := load(t)
	want, have := requiredVersion(t, filepath.Join(root, "go.mod")), requiredVersion(t, "../go.mod")
	if want == "" || have != want {
		t.Errorf("client_golang %q in test/tools/promtool/go.mod, %q in Backhaul's: align them", have, want)
	}
	for _, f := range []string{"hub/optconfig.go", "agent/options.go"} {
		b, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []string{"collectors.NewGoCollector()", "collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})"} {
			if !strings.Contains(string(b), c) {
				t.Errorf("%s no longer registers %s, which the checks assume", f, c)
			}
		}
	}
}
