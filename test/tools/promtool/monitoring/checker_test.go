package monitoring

import (
	"strings"
	"testing"
)

// TestChecker shows the checks catch what they are for, on a small
// source tree (testdata/src) that declares metrics the way Backhaul's code
// does.
func TestChecker(t *testing.T) {
	src, err := LoadSource("testdata/src", "hub")
	if err != nil {
		t.Fatal(err)
	}
	if m := src.Metrics["backhaul_test_clusters"]; m.Kind != Gauge || strings.Join(m.Labels, ",") != "state" {
		t.Fatalf("NewDesc metric read as %+v, want a gauge labelled state", m)
	}
	c := NewChecker(src)
	for _, tc := range []struct {
		name, expr string
		wantErr    string // "" for none
	}{
		{"counter rate", `sum by (result) (rate(backhaul_test_requests_total{result="ok"}[5m]))`, ""},
		{"histogram quantile", `histogram_quantile(0.99, sum by (le, kind) (rate(backhaul_test_rtt_seconds_bucket[5m])))`, ""},
		{"histogram count", `rate(backhaul_test_rtt_seconds_count[5m])`, ""},
		{"gauge from a collector", `max by (namespace, job) (backhaul_test_clusters{state="connected"})`, ""},
		{"target labels", `sum by (job, namespace, instance, pod) (backhaul_test_sessions{job=~".*"})`, ""},
		{"regexp of values and a prefix", `backhaul_test_requests_total{result=~"ok|refused|rate_limited_.*"}`, ""},
		{"go collector", `go_memstats_sys_bytes - go_memstats_heap_released_bytes`, ""},
		{"does not parse", `sum(rate(backhaul_test_requests_total[5m])`, "parse"},
		{"unknown metric", `backhaul_test_nonexistent`, "no such series"},
		{"histogram by its own name", `backhaul_test_rtt_seconds`, "no such series"},
		{"gauge has no _bucket", `backhaul_test_sessions_bucket`, "no such series"},
		{"rate of a gauge", `rate(backhaul_test_sessions[5m])`, "not a counter"},
		{"deriv of a counter", `deriv(backhaul_test_requests_total[5m])`, "counts"},
		{"label the metric lacks", `backhaul_test_requests_total{reason="x"}`, `no label "reason"`},
		{"label value not in the code", `backhaul_test_requests_total{result="teapot"}`, "no such string literal"},
		{"prefix not in the code", `backhaul_test_requests_total{result=~"throttled_.*"}`, "starts with"},
		{"regexp beyond values", `backhaul_test_requests_total{result=~"o[kx]"}`, "plain values"},
		{"grouping by a label no series has", `sum by (reason) (rate(backhaul_test_requests_total[5m]))`, `no series inside has label "reason"`},
		{"quantile without le", `histogram_quantile(0.9, sum by (kind) (rate(backhaul_test_rtt_seconds_bucket[5m])))`, "keep le"},
		{"quantile of no histogram", `histogram_quantile(0.9, backhaul_test_sessions)`, "no histogram"},
		{"selector without a name", `{job="x"}`, "by name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Check(tc.expr)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("%s: %v", tc.expr, err)
			case tc.wantErr != "" && err == nil:
				t.Errorf("%s: no error, want one containing %q", tc.expr, tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("%s: %v, want an error containing %q", tc.expr, err, tc.wantErr)
			}
		})
	}
}

// TestStructure shows the dashboard checks catch a broken layout and
// references.
func TestStructure(t *testing.T) {
	good := `{"uid": "x", "title": "X", "schemaVersion": 39, "id": null, "time": {"from": "now-1h", "to": "now"},
	  "templating": {"list": [
	    {"name": "datasource", "type": "datasource", "query": "prometheus"},
	    {"name": "job", "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
	     "definition": "label_values(backhaul_test_sessions, job)", "query": {"query": "label_values(backhaul_test_sessions, job)"}}]},
	  "panels": [
	    {"id": 1, "type": "row", "title": "R", "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0}, "panels": []},
	    {"id": 2, "type": "timeseries", "title": "A", "gridPos": {"h": 8, "w": 12, "x": 0, "y": 1},
	     "datasource": {"type": "prometheus", "uid": "${datasource}"},
	     "targets": [{"refId": "A", "datasource": {"type": "prometheus", "uid": "${datasource}"},
	       "expr": "rate(backhaul_test_requests_total{job=~\"$job\"}[$__rate_interval])"}]}]}`
	d, err := ParseDashboard([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Structure("job"); err != nil {
		t.Fatalf("a good dashboard: %v", err)
	}
	if got := Expand(d.Panels[1].Targets[0].Expr); got != `rate(backhaul_test_requests_total{job=~".*"}[5m])` {
		t.Errorf("Expand: %s", got)
	}
	for _, tc := range []struct{ name, from, to, wantErr string }{
		{"overlap", `"x": 0, "y": 1}`, `"x": 0, "y": 0}`, "overlap"},
		{"off the grid", `"w": 12, "x": 0`, `"w": 25, "x": 0`, "off the"},
		{"duplicate id", `"id": 2`, `"id": 1`, "id also used"},
		{"fixed datasource", `"uid": "${datasource}"},
	     "targets"`, `"uid": "P1234"},
	     "targets"`, "datasource must be"},
		{"query without datasource", `"datasource": {"type": "prometheus", "uid": "${datasource}"},
	       "expr"`, `"expr"`, "query A: datasource must be"},
		{"undefined variable", `$job`, `$cluster`, "not defined"},
		{"unknown panel type", `"type": "timeseries"`, `"type": "graph-old"`, "is not one of"},
		{"no datasource variable", `"name": "datasource"`, `"name": "ds"`, "no variable \"datasource\""},
		{"dashboard id", `"id": null`, `"id": 7`, "leave it null"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := strings.Replace(good, tc.from, tc.to, 1)
			if bad == good {
				t.Fatalf("%q not in the dashboard", tc.from)
			}
			d, err := ParseDashboard([]byte(bad))
			if err != nil {
				t.Fatal(err)
			}
			err = d.Structure("job")
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("got %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestRender shows a rule file becomes a PrometheusRule whose spec holds
// its groups, comments and block scalars intact.
func TestRender(t *testing.T) {
	rules := "# about\ngroups:\n- name: g\n  rules:\n  - alert: A\n    expr: |\n      up == 0\n\n    annotations:\n      d: >-\n        two\n        lines\n"
	got, err := RuleManifest{Rules: "rules/x.rules.yaml", Name: "x", Scrapes: "p"}.Render([]byte(rules))
	if err != nil {
		t.Fatal(err)
	}
	want := "spec:\n  groups:\n  - name: g\n    rules:\n    - alert: A\n      expr: |\n        up == 0\n\n      annotations:\n        d: >-\n          two\n          lines\n"
	if !strings.HasSuffix(string(got), want) {
		t.Errorf("got\n%s\nwant it to end with\n%s", got, want)
	}
	if _, err := (RuleManifest{}).Render([]byte("rules: []\n")); err == nil {
		t.Error("a file without groups rendered")
	}
}

// TestSchema shows Grafana's schema catches what the structure checks do
// not look at: a misspelt option, a value of the wrong type.
func TestSchema(t *testing.T) {
	good := `{"uid": "x", "title": "X", "schemaVersion": 39, "editable": true, "graphTooltip": 0,
	  "templating": {"list": []}, "annotations": {"list": []},
	  "panels": [{"id": 1, "type": "timeseries", "title": "A", "gridPos": {"h": 8, "w": 12, "x": 0, "y": 0},
	    "datasource": {"type": "prometheus", "uid": "${datasource}"},
	    "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": true, "calcs": []},
	                "tooltip": {"mode": "multi", "sort": "desc"}},
	    "targets": [{"refId": "A", "expr": "up", "datasource": {"type": "prometheus", "uid": "${datasource}"}}]}]}`
	if err := Schema([]byte(good)); err != nil {
		t.Fatalf("a good dashboard: %v", err)
	}
	for _, tc := range []struct{ name, from, to string }{
		{"unknown panel field", `"title": "A",`, `"title": "A", "titel": "A",`},
		{"wrong type", `"showLegend": true`, `"showLegend": "yes"`},
		{"unknown query field", `"expr": "up"`, `"expr": "up", "exp": "up"`},
		{"unknown dashboard field", `"editable": true`, `"editable": true, "refreshh": "1m"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := strings.Replace(good, tc.from, tc.to, 1)
			if bad == good {
				t.Fatalf("%q not in the dashboard", tc.from)
			}
			if err := Schema([]byte(bad)); err == nil {
				t.Error("accepted")
			}
		})
	}
}
