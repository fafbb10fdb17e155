package monitoring

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
)

// Dashboard is the part of Grafana's dashboard JSON model the checks read.
type Dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	ID            *int    `json:"id"`
	Panels        []Panel `json:"panels"`
	Templating    struct {
		List []Variable `json:"list"`
	} `json:"templating"`
	Time *struct {
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"time"`
}

// Panel is a dashboard panel or row.
type Panel struct {
	ID         int         `json:"id"`
	Type       string      `json:"type"`
	Title      string      `json:"title"`
	Datasource *Datasource `json:"datasource"`
	GridPos    *GridPos    `json:"gridPos"`
	Targets    []Target    `json:"targets"`
	Collapsed  bool        `json:"collapsed"`
	Panels     []Panel     `json:"panels"` // a collapsed row's
}

// GridPos places a panel on the 24-column grid.
type GridPos struct {
	H, W, X, Y int
}

// Datasource names a data source, here always the datasource variable.
type Datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// Target is one query of a panel.
type Target struct {
	RefID      string      `json:"refId"`
	Expr       string      `json:"expr"`
	Datasource *Datasource `json:"datasource"`
}

// Variable is a template variable.
type Variable struct {
	Name       string          `json:"name"`
	Type       string          `json:"type"`
	Query      json.RawMessage `json:"query"`
	Datasource *Datasource     `json:"datasource"`
	Definition string          `json:"definition"`
}

// ParseDashboard decodes a dashboard JSON file.
func ParseDashboard(b []byte) (*Dashboard, error) {
	var d Dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, err
	}
	return &d, nil
}

// PanelTypes are the panel types the dashboard may use (built into
// Grafana, no plugin to install).
var PanelTypes = []string{"row", "timeseries", "stat", "table", "gauge", "bargauge", "heatmap", "text"}

// DatasourceVar is the name of the dashboard's datasource variable.
const DatasourceVar = "datasource"

// Structure checks what Grafana needs to import and lay out the
// dashboard, and what the project wants of it: a stable uid, a templated
// Prometheus datasource on every panel and query, unique panel ids and
// query refIds, panels on the grid without overlaps, and the variables
// the queries use defined.
func (d *Dashboard) Structure(wantVars ...string) error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if d.UID == "" || len(d.UID) > 40 {
		fail("uid %q: set, at most 40 characters", d.UID)
	}
	if d.Title == "" {
		fail("no title")
	}
	if d.SchemaVersion < 36 {
		fail("schemaVersion %d: at least 36 (datasource references by uid)", d.SchemaVersion)
	}
	if d.ID != nil {
		fail("id %d: leave it null; Grafana assigns it on import", *d.ID)
	}
	if d.Time == nil || d.Time.From == "" || d.Time.To == "" {
		fail("no default time range")
	}
	vars := map[string]Variable{}
	for _, v := range d.Templating.List {
		if _, dup := vars[v.Name]; dup {
			fail("variable %s defined twice", v.Name)
		}
		vars[v.Name] = v
	}
	if ds, ok := vars[DatasourceVar]; !ok || ds.Type != "datasource" || string(ds.Query) != `"prometheus"` {
		fail("no variable %q of type datasource, query prometheus", DatasourceVar)
	}
	for _, w := range wantVars {
		v, ok := vars[w]
		if !ok {
			fail("no variable %q", w)
			continue
		}
		if v.Type != "query" || !isDatasourceVar(v.Datasource) {
			fail("variable %s: want a query variable on ${%s}", w, DatasourceVar)
		}
	}

	ids := map[int]string{}
	var placed []Panel
	var walk func(ps []Panel, inRow bool)
	walk = func(ps []Panel, inRow bool) {
		for _, p := range ps {
			what := fmt.Sprintf("panel %d %q", p.ID, p.Title)
			if p.ID <= 0 {
				fail("%s: no id", what)
			} else if other, dup := ids[p.ID]; dup {
				fail("%s: id also used by %q", what, other)
			}
			ids[p.ID] = p.Title
			if !slices.Contains(PanelTypes, p.Type) {
				fail("%s: type %q is not one of %v", what, p.Type, PanelTypes)
			}
			if p.Title == "" {
				fail("panel %d: no title", p.ID)
			}
			g := p.GridPos
			switch {
			case g == nil:
				fail("%s: no gridPos", what)
			case g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > 24:
				fail("%s: gridPos %+v is off the 24-column grid", what, *g)
			default:
				placed = append(placed, p)
			}
			if p.Type == "row" {
				if inRow {
					fail("%s: a row inside a row", what)
				}
				if len(p.Targets) > 0 {
					fail("%s: a row with queries", what)
				}
				if !p.Collapsed && len(p.Panels) > 0 {
					fail("%s: an open row holds its panels after it, not inside", what)
				}
				walk(p.Panels, true)
				continue
			}
			if p.Type == "text" {
				continue
			}
			if !isDatasourceVar(p.Datasource) {
				fail("%s: datasource must be {type: prometheus, uid: ${%s}}", what, DatasourceVar)
			}
			if len(p.Targets) == 0 {
				fail("%s: no queries", what)
			}
			refs := map[string]bool{}
			for _, t := range p.Targets {
				if t.RefID == "" || refs[t.RefID] {
					fail("%s: query refId %q empty or repeated", what, t.RefID)
				}
				refs[t.RefID] = true
				if strings.TrimSpace(t.Expr) == "" {
					fail("%s: query %s has no expr", what, t.RefID)
				}
				// Grafana would inherit the panel's; set on the query, it
				// also makes Schema check the query's fields.
				if !isDatasourceVar(t.Datasource) {
					fail("%s: query %s: datasource must be {type: prometheus, uid: ${%s}}", what, t.RefID, DatasourceVar)
				}
				for _, ref := range variableRefs(t.Expr) {
					if _, ok := vars[ref]; !ok && !slices.Contains(BuiltinRangeVars, ref) {
						fail("%s: query %s uses $%s, which is not defined", what, t.RefID, ref)
					}
				}
			}
		}
	}
	walk(d.Panels, false)
	for i, a := range placed {
		for _, b := range placed[i+1:] {
			if overlap(*a.GridPos, *b.GridPos) {
				fail("panels %q and %q overlap", a.Title, b.Title)
			}
		}
	}
	return errors.Join(errs...)
}

func isDatasourceVar(ds *Datasource) bool {
	return ds != nil && ds.Type == "prometheus" && (ds.UID == "${"+DatasourceVar+"}" || ds.UID == "$"+DatasourceVar)
}

func overlap(a, b GridPos) bool {
	return a.X < b.X+b.W && b.X < a.X+a.W && a.Y < b.Y+b.H && b.Y < a.Y+a.H
}

// BuiltinRangeVars are Grafana's built-in variables that stand for a
// duration in a query.
var BuiltinRangeVars = []string{"__rate_interval", "__interval", "__range"}

var varRef = regexp.MustCompile(`\$(?:\{([a-zA-Z0-9_]+)(?::[a-z]+)?\}|([a-zA-Z0-9_]+))`)

func variableRefs(expr string) []string {
	var refs []string
	for _, m := range varRef.FindAllStringSubmatch(expr, -1) {
		refs = append(refs, m[1]+m[2])
	}
	return refs
}

// Expand replaces Grafana's variables in expr with what Prometheus would
// receive: a duration for the built-in intervals, and a regexp matching
// anything for the template variables (used only inside =~ matchers).
func Expand(expr string) string {
	return varRef.ReplaceAllStringFunc(expr, func(m string) string {
		name := strings.Trim(m, "${}")
		if i := strings.IndexByte(name, ':'); i >= 0 {
			name = name[:i]
		}
		if slices.Contains(BuiltinRangeVars, name) {
			return "5m"
		}
		return ".*"
	})
}

// Expressions is every query of the dashboard: panel title and refId, and
// the expression.
func (d *Dashboard) Expressions() map[string]string {
	out := map[string]string{}
	var walk func(ps []Panel)
	walk = func(ps []Panel) {
		for _, p := range ps {
			for _, t := range p.Targets {
				out[fmt.Sprintf("panel %q query %s", p.Title, t.RefID)] = t.Expr
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// labelValuesQuery is a query variable's label_values(selector, label).
var labelValuesQuery = regexp.MustCompile(`^label_values\((.+),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// VariableQueries is each query variable's selector and label.
func (d *Dashboard) VariableQueries() (map[string][2]string, error) {
	out := map[string][2]string{}
	var errs []error
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		q := v.Definition
		var obj struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &obj); err == nil && obj.Query != "" {
			q = obj.Query
		} else if s := ""; json.Unmarshal(v.Query, &s) == nil && s != "" {
			q = s
		}
		if q != v.Definition {
			errs = append(errs, fmt.Errorf("variable %s: definition %q and query %q differ", v.Name, v.Definition, q))
		}
		m := labelValuesQuery.FindStringSubmatch(strings.TrimSpace(q))
		if m == nil {
			errs = append(errs, fmt.Errorf("variable %s: %q is not label_values(selector, label)", v.Name, q))
			continue
		}
		out[v.Name] = [2]string{m[1], m[2]}
	}
	return out, errors.Join(errs...)
}

var registerPlugins sync.Once

// Schema decodes b with the Grafana Foundation SDK's strict decoder,
// generated from Grafana's own dashboard, panel and Prometheus query
// schemas: a field Grafana does not know, a value of the wrong type or a
// required field missing fails.
func Schema(b []byte) error {
	registerPlugins.Do(plugins.RegisterDefaultPlugins)
	//lint:ignore SA1019 v2 is Grafana 12's new resource format; file provisioning and the sidecar import this classic JSON model.
	var d dashboard.Dashboard
	err := d.UnmarshalJSONStrict(b)
	// The decoder returns its error list typed even when it is empty.
	if errs, ok := err.(cog.BuildErrors); ok && len(errs) == 0 {
		return nil
	}
	return err
}
