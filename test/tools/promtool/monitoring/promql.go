package monitoring

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// TargetLabels are what a scrape adds to every series (the Prometheus
// Operator's ServiceMonitor and PodMonitor add namespace, pod, service,
// endpoint and container to job and instance); queries may match and
// group by them whatever the metric.
var TargetLabels = []string{"job", "instance", "namespace", "pod", "service", "endpoint", "container"}

// Checker checks PromQL expressions against the code.
type Checker struct {
	Source *Source
	Parser parser.Parser
}

// NewChecker checks against src with Prometheus's default parser.
func NewChecker(src *Source) *Checker {
	return &Checker{Source: src, Parser: parser.NewParser(parser.Options{})}
}

// Selected is a series name an expression selects.
type Selected struct {
	Series string // as written: backhaul_x_bucket
	Metric Metric // the family it belongs to
}

// Check parses expr and checks it against the code; it returns the
// series the expression selects.
func (c *Checker) Check(expr string) ([]Selected, error) {
	e, err := c.Parser.ParseExpr(expr)
	if err != nil {
		return nil, fmt.Errorf("parse: %w", err)
	}
	var errs []error
	var selected []Selected
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			sel, err := c.selector(n)
			if err != nil {
				errs = append(errs, err)
				return nil
			}
			selected = append(selected, sel)
		case *parser.Call:
			errs = append(errs, c.call(n)...)
		case *parser.AggregateExpr:
			errs = append(errs, c.grouping(n.Grouping, n.Expr, "by")...)
		case *parser.BinaryExpr:
			if n.VectorMatching != nil {
				errs = append(errs, c.grouping(n.VectorMatching.MatchingLabels, n, "on")...)
			}
		}
		return nil
	})
	return selected, errors.Join(errs...)
}

// family maps a series name to the family the code declares: a histogram
// is selected as _bucket, _sum and _count, a summary as _sum and _count.
func (c *Checker) family(series string) (Metric, bool) {
	if m, ok := c.Source.Metrics[series]; ok && m.Kind != Histogram {
		return m, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		base, ok := strings.CutSuffix(series, suffix)
		if !ok {
			continue
		}
		m, ok := c.Source.Metrics[base]
		if ok && (m.Kind == Histogram || m.Kind == Summary && suffix != "_bucket") {
			return m, true
		}
	}
	return Metric{}, false
}

func (c *Checker) selector(vs *parser.VectorSelector) (Selected, error) {
	name := vs.Name
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
			name = m.Value
		}
	}
	if name == "" {
		return Selected{}, fmt.Errorf("%s: select series by name", vs)
	}
	fam, ok := c.family(name)
	if !ok {
		return Selected{}, fmt.Errorf("%s: no such series in the code (%s); a histogram is selected as _bucket, _sum or _count", name, strings.Join(SourceDirs, ", "))
	}
	var errs []error
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel || slices.Contains(TargetLabels, m.Name) {
			continue
		}
		if m.Name == "le" && strings.HasSuffix(name, "_bucket") {
			continue
		}
		if fam.Labels != nil && !slices.Contains(fam.Labels, m.Name) {
			errs = append(errs, fmt.Errorf("%s: %s has no label %q (it has %v, declared at %s)", vs, fam.Name, m.Name, fam.Labels, fam.Where))
			continue
		}
		errs = append(errs, c.labelValues(vs, m)...)
	}
	return Selected{Series: name, Metric: fam}, errors.Join(errs...)
}

// plainValue is a label value a regexp alternative may spell out.
var plainValue = regexp.MustCompile(`^[a-zA-Z0-9_]+$`)

// labelValues checks that each value a matcher names is a string literal
// somewhere in the code, so that renaming a reason or result there fails
// here. A regexp matcher may only be an alternation of plain values, each
// optionally ending in .* (a prefix, for values built as "prefix_"+x).
func (c *Checker) labelValues(vs *parser.VectorSelector, m *labels.Matcher) []error {
	values := []string{m.Value}
	if m.Type == labels.MatchRegexp || m.Type == labels.MatchNotRegexp {
		values = strings.Split(m.Value, "|")
	}
	var errs []error
	for _, v := range values {
		if p, ok := strings.CutSuffix(v, ".*"); ok && (m.Type == labels.MatchRegexp || m.Type == labels.MatchNotRegexp) && plainValue.MatchString(p) {
			if !c.Source.HasLiteralPrefix(p) {
				errs = append(errs, fmt.Errorf("%s: no string literal in the code starts with %q", vs, p))
			}
			continue
		}
		if !plainValue.MatchString(v) {
			errs = append(errs, fmt.Errorf("%s: label %s: match plain values (a|b|prefix_.*) so they can be checked against the code, not %q", vs, m.Name, v))
			continue
		}
		if !c.Source.HasLiteral(v) {
			errs = append(errs, fmt.Errorf("%s: label %s=%q: no such string literal in the code", vs, m.Name, v))
		}
	}
	return errs
}

// counterFuncs take a range of a counter; on a gauge they answer nonsense
// without complaint.
var counterFuncs = []string{"rate", "irate", "increase", "resets"}

// gaugeFuncs take a range of a gauge.
var gaugeFuncs = []string{"delta", "idelta", "deriv", "predict_linear", "changes"}

func (c *Checker) call(call *parser.Call) []error {
	var errs []error
	name := call.Func.Name
	isCounter := slices.Contains(counterFuncs, name)
	isGauge := slices.Contains(gaugeFuncs, name)
	if isCounter || isGauge {
		for _, arg := range call.Args {
			ms, ok := arg.(*parser.MatrixSelector)
			if !ok {
				continue
			}
			vs, ok := ms.VectorSelector.(*parser.VectorSelector)
			if !ok {
				continue
			}
			sel, err := c.selector(vs)
			if err != nil || sel.Metric.Kind == "" {
				continue // reported where the selector is visited, or kind unknown
			}
			counting := sel.Metric.Kind == Counter || sel.Series != sel.Metric.Name // _bucket, _sum, _count count
			if isCounter && !counting {
				errs = append(errs, fmt.Errorf("%s(%s): %s is a %s, not a counter", name, vs, sel.Metric.Name, strings.ToLower(string(sel.Metric.Kind))))
			}
			if isGauge && counting {
				errs = append(errs, fmt.Errorf("%s(%s): %s counts; use rate or increase", name, vs, sel.Series))
			}
		}
	}
	if name == "histogram_quantile" && len(call.Args) == 2 {
		var buckets bool
		parser.Inspect(call.Args[1], func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				if sel, err := c.selector(vs); err == nil && sel.Metric.Kind == Histogram && strings.HasSuffix(sel.Series, "_bucket") {
					buckets = true
				}
			}
			return nil
		})
		if !buckets {
			errs = append(errs, fmt.Errorf("%s: histogram_quantile over no histogram's _bucket series", call))
		}
		if agg, ok := unwrap(call.Args[1]).(*parser.AggregateExpr); ok && !agg.Without && !slices.Contains(agg.Grouping, "le") {
			errs = append(errs, fmt.Errorf("%s: the aggregation inside histogram_quantile must keep le", call))
		}
	}
	return errs
}

func unwrap(e parser.Expr) parser.Expr {
	for {
		p, ok := e.(*parser.ParenExpr)
		if !ok {
			return e
		}
		e = p.Expr
	}
}

// grouping checks that labels grouped or matched on are labels of some
// series inside (or target labels, or le under a histogram).
func (c *Checker) grouping(names []string, inside parser.Node, what string) []error {
	if len(names) == 0 {
		return nil
	}
	have := map[string]bool{}
	unknown := false
	parser.Inspect(inside, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		sel, err := c.selector(vs)
		if err != nil {
			unknown = true
			return nil
		}
		if sel.Metric.Labels == nil {
			unknown = true
		}
		for _, l := range sel.Metric.Labels {
			have[l] = true
		}
		if strings.HasSuffix(sel.Series, "_bucket") {
			have["le"] = true
		}
		return nil
	})
	if unknown {
		return nil // reported elsewhere, or labels not known
	}
	var errs []error
	for _, l := range names {
		if !have[l] && !slices.Contains(TargetLabels, l) {
			errs = append(errs, fmt.Errorf("%s (%s): no series inside has label %q", what, strings.Join(names, ", "), l))
		}
	}
	return errs
}
