package monitoring

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
)

// Kind is what sort of series a metric is.
type Kind string

// Kinds of metric, as prometheus.<Kind>Opts names them.
const (
	Counter   Kind = "Counter"
	Gauge     Kind = "Gauge"
	Histogram Kind = "Histogram"
	Summary   Kind = "Summary"
)

// Metric is one metric family the code declares.
type Metric struct {
	Name string
	Kind Kind
	// Labels are the variable labels, nil when the declaration does not
	// say (an Opts literal used away from its constructor).
	Labels []string
	// Where is file:line of the declaration.
	Where string
}

// SourceDirs are the directories of the Backhaul module whose Go files
// declare the binaries' metrics.
var SourceDirs = []string{"hub", "agent", "pkg", "tunnel"}

// Source is what the checks know of the code: its metrics and every
// string literal in it (label values must be among them).
type Source struct {
	Metrics  map[string]Metric
	literals map[string]bool
}

// RepoRoot finds the Backhaul module's root above dir.
func RepoRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module backhaul.io/backhaul\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no backhaul.io/backhaul go.mod above the working directory")
		}
		dir = parent
	}
}

// declaredName finds `Name: "backhaul_..."` and `NewDesc("backhaul_..."`
// however they are written, to prove the AST walk below missed none.
var declaredName = regexp.MustCompile(`(?:Name:|NewDesc\()\s*"(backhaul_[a-zA-Z0-9_:]*)"`)

// LoadSource reads the non-test Go files under root's dirs (SourceDirs
// for Backhaul) and adds the Go and process collectors' families (the
// hub and the agent register both with their defaults).
func LoadSource(root string, dirs ...string) (*Source, error) {
	s := &Source{Metrics: map[string]Metric{}, literals: map[string]bool{}}
	fset := token.NewFileSet()
	var errs []error
	for _, d := range dirs {
		err := filepath.WalkDir(filepath.Join(root, d), func(path string, e fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if e.IsDir() && e.Name() == "testdata" {
				return filepath.SkipDir
			}
			if e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return nil
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			f, err := parser.ParseFile(fset, path, src, 0)
			if err != nil {
				return err
			}
			found := s.addFile(fset, root, f, &errs)
			for _, m := range declaredName.FindAllStringSubmatch(string(src), -1) {
				if !found[m[1]] {
					errs = append(errs, fmt.Errorf("%s: %s is not declared as prometheus.<Kind>Opts{Name: \"...\"}, which this check reads", rel(root, path), m[1]))
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	if err := s.addCollectors(); err != nil {
		return nil, err
	}
	return s, errors.Join(errs...)
}

func rel(root, path string) string {
	if r, err := filepath.Rel(root, path); err == nil {
		return r
	}
	return path
}

// addFile records f's string literals and its metric declarations: each
// prometheus.<Kind>Opts composite literal with a literal Name, and, when
// it is the first argument of prometheus.New<Kind>Vec, the label names of
// the second.
func (s *Source) addFile(fset *token.FileSet, root string, f *ast.File, errs *[]error) map[string]bool {
	found := map[string]bool{}
	labelled := map[*ast.CompositeLit][]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.BasicLit:
			if n.Kind == token.STRING {
				if v, err := strconv.Unquote(n.Value); err == nil {
					s.literals[v] = true
				}
			}
		case *ast.CallExpr:
			if !isPrometheus(n.Fun, "New", "") || len(n.Args) == 0 {
				return true
			}
			opts, ok := n.Args[0].(*ast.CompositeLit)
			if !ok {
				return true
			}
			labels := []string{}
			if strings.HasSuffix(n.Fun.(*ast.SelectorExpr).Sel.Name, "Vec") {
				labels = literalStrings(n.Args[1:])
			}
			labelled[opts] = labels
		}
		return true
	})
	ast.Inspect(f, func(n ast.Node) bool {
		lit, ok := n.(*ast.CompositeLit)
		if !ok || !isPrometheus(lit.Type, "", "Opts") {
			return true
		}
		kind := Kind(strings.TrimSuffix(lit.Type.(*ast.SelectorExpr).Sel.Name, "Opts"))
		if !slices.Contains([]Kind{Counter, Gauge, Histogram, Summary}, kind) {
			return true
		}
		for _, e := range lit.Elts {
			kv, ok := e.(*ast.KeyValueExpr)
			if !ok || fmt.Sprint(kv.Key) != "Name" {
				continue
			}
			b, ok := kv.Value.(*ast.BasicLit)
			if !ok || b.Kind != token.STRING {
				continue
			}
			name, _ := strconv.Unquote(b.Value)
			labels := labelled[lit] // nil: not an argument of prometheus.New...; labels unknown
			pos := fset.Position(b.Pos())
			m := Metric{Name: name, Kind: kind, Labels: labels, Where: fmt.Sprintf("%s:%d", rel(root, pos.Filename), pos.Line)}
			if old, dup := s.Metrics[name]; dup && (old.Kind != m.Kind || !slices.Equal(old.Labels, m.Labels)) {
				*errs = append(*errs, fmt.Errorf("%s: %s declared again, differently, at %s", m.Where, name, old.Where))
			}
			s.Metrics[name] = m
			found[name] = true
		}
		return true
	})
	s.addDescs(fset, root, f, found, errs)
	return found
}

// valueKinds are what a const metric's prometheus.ValueType says it is.
var valueKinds = map[string]Kind{"GaugeValue": Gauge, "CounterValue": Counter}

// addDescs records the metrics a custom collector declares with
// prometheus.NewDesc("name", help, []string{labels}, ...). A Desc has no
// kind; it is read off the const metrics the file makes of it:
// prometheus.MustNewConstMetric(x.field, prometheus.GaugeValue, ...) for
// a Desc held in field (or variable) "field", MustNewConstHistogram for a
// histogram. Unknown, the kind checks pass it by.
func (s *Source) addDescs(fset *token.FileSet, root string, f *ast.File, found map[string]bool, errs *[]error) {
	kinds := map[string]Kind{} // field or variable name -> kind
	held := map[*ast.CallExpr]string{}
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.KeyValueExpr:
			if c, ok := n.Value.(*ast.CallExpr); ok {
				held[c] = fmt.Sprint(n.Key)
			}
		case *ast.AssignStmt:
			for i, r := range n.Rhs {
				if c, ok := r.(*ast.CallExpr); ok && i < len(n.Lhs) {
					held[c] = lastName(n.Lhs[i])
				}
			}
		case *ast.CallExpr:
			if len(n.Args) < 2 {
				return true
			}
			field := lastName(n.Args[0])
			switch {
			case isPrometheus(n.Fun, "MustNewConstMetric", "") || isPrometheus(n.Fun, "NewConstMetric", ""):
				if v, ok := n.Args[1].(*ast.SelectorExpr); ok {
					kinds[field] = valueKinds[v.Sel.Name]
				}
			case isPrometheus(n.Fun, "MustNewConstHistogram", "") || isPrometheus(n.Fun, "NewConstHistogram", ""):
				kinds[field] = Histogram
			case isPrometheus(n.Fun, "MustNewConstSummary", "") || isPrometheus(n.Fun, "NewConstSummary", ""):
				kinds[field] = Summary
			}
		}
		return true
	})
	ast.Inspect(f, func(n ast.Node) bool {
		c, ok := n.(*ast.CallExpr)
		if !ok || !isPrometheus(c.Fun, "NewDesc", "") || len(c.Args) < 3 {
			return true
		}
		b, ok := c.Args[0].(*ast.BasicLit)
		if !ok || b.Kind != token.STRING {
			return true
		}
		name, _ := strconv.Unquote(b.Value)
		labels := literalStrings(c.Args[2:])
		if id, ok := c.Args[2].(*ast.Ident); ok && id.Name == "nil" {
			labels = []string{}
		}
		pos := fset.Position(b.Pos())
		m := Metric{Name: name, Kind: kinds[held[c]], Labels: labels, Where: fmt.Sprintf("%s:%d", rel(root, pos.Filename), pos.Line)}
		if old, dup := s.Metrics[name]; dup && (old.Kind != m.Kind || !slices.Equal(old.Labels, m.Labels)) {
			*errs = append(*errs, fmt.Errorf("%s: %s declared again, differently, at %s", m.Where, name, old.Where))
		}
		s.Metrics[name] = m
		found[name] = true
		return true
	})
}

// lastName is the identifier an expression ends in: m.states -> states.
func lastName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return e.Sel.Name
	}
	return ""
}

// literalStrings is the label names of a New...Vec call's second
// argument when it is a []string literal of string literals, else nil.
func literalStrings(args []ast.Expr) []string {
	if len(args) == 0 {
		return nil
	}
	lit, ok := args[0].(*ast.CompositeLit)
	if !ok {
		return nil
	}
	labels := []string{}
	for _, e := range lit.Elts {
		b, ok := e.(*ast.BasicLit)
		if !ok || b.Kind != token.STRING {
			return nil
		}
		v, _ := strconv.Unquote(b.Value)
		labels = append(labels, v)
	}
	return labels
}

// isPrometheus reports whether e is prometheus.<prefix>...<suffix>.
func isPrometheus(e ast.Expr, prefix, suffix string) bool {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	pkg, ok := sel.X.(*ast.Ident)
	return ok && pkg.Name == "prometheus" && strings.HasPrefix(sel.Sel.Name, prefix) && strings.HasSuffix(sel.Sel.Name, suffix)
}

// addCollectors adds what collectors.NewGoCollector() and
// NewProcessCollector export, gathered from the collectors themselves.
func (s *Source) addCollectors() error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mfs, err := reg.Gather()
	if err != nil {
		return err
	}
	kinds := map[dto.MetricType]Kind{
		dto.MetricType_COUNTER: Counter, dto.MetricType_GAUGE: Gauge,
		dto.MetricType_HISTOGRAM: Histogram, dto.MetricType_SUMMARY: Summary,
	}
	for _, mf := range mfs {
		labels := []string{}
		if len(mf.Metric) > 0 {
			for _, lp := range mf.Metric[0].Label {
				labels = append(labels, lp.GetName())
			}
		}
		s.Metrics[mf.GetName()] = Metric{Name: mf.GetName(), Kind: kinds[mf.GetType()], Labels: labels, Where: "client_golang collectors"}
	}
	return nil
}

// HasLiteral reports whether the code has the string literal v.
func (s *Source) HasLiteral(v string) bool { return s.literals[v] }

// HasLiteralPrefix reports whether the code has a string literal that
// starts with p (a label value built as "prefix_"+variable).
func (s *Source) HasLiteralPrefix(p string) bool {
	for l := range s.literals {
		if strings.HasPrefix(l, p) {
			return true
		}
	}
	return false
}
