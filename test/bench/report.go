package main

import (
	"fmt"
	"io"
	"strings"
	"time"
	"unicode/utf8"
)

// row is one line of the final table. A row whose measurement failed keeps
// its figure name and carries Err instead of numbers.
type row struct {
	Figure   string
	Direct   string
	Backhaul string
	Ratio    string
	Target   string
	Err      error
}

// table collects rows and notes as the parts run, and prints them at the end
// so figures measured in one run sit side by side.
type table struct {
	rows  []row
	notes []string
}

func (t *table) add(rs ...row) { t.rows = append(t.rows, rs...) }

func (t *table) note(format string, args ...any) {
	t.notes = append(t.notes, fmt.Sprintf(format, args...))
}

// failed reports whether any measurement could not be made.
func (t *table) failed() bool {
	for _, r := range t.rows {
		if r.Err != nil {
			return true
		}
	}
	return false
}

func (t *table) print(w io.Writer, title string) {
	head := row{Figure: "figure", Direct: "direct", Backhaul: "backhaul", Ratio: "ratio", Target: "target"}
	cells := func(r row) []string {
		if r.Err != nil {
			return []string{r.Figure, "n/a", "n/a", "", "not measured (see below)"}
		}
		return []string{r.Figure, r.Direct, r.Backhaul, r.Ratio, r.Target}
	}
	widths := make([]int, 5)
	for _, r := range append([]row{head}, t.rows...) {
		for i, c := range cells(r) {
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	fmt.Fprintln(w, title)
	for _, r := range append([]row{head}, t.rows...) {
		var b strings.Builder
		for i, c := range cells(r) {
			b.WriteString(c)
			if i < len(widths)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)+2))
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
	var errs []string
	for _, r := range t.rows {
		if r.Err != nil {
			errs = append(errs, fmt.Sprintf("  %s: %v", r.Figure, r.Err))
		}
	}
	if len(t.notes) > 0 {
		fmt.Fprintln(w)
		for _, n := range t.notes {
			fmt.Fprintln(w, n)
		}
	}
	if len(errs) > 0 {
		fmt.Fprintln(w, "\nmeasurements that could not be made:")
		for _, e := range errs {
			fmt.Fprintln(w, e)
		}
	}
}

// latencyRow compares p50/p99 of two runs and checks the added p50 against
// limit (0: no target, the added p50 is shown for information).
func latencyRow(figure string, direct, backhaul []time.Duration, limit time.Duration) row {
	d50, d99 := percentiles(direct)
	b50, b99 := percentiles(backhaul)
	added := b50 - d50
	r := row{
		Figure:   figure,
		Direct:   fmt.Sprintf("%s / %s", fmtDur(d50), fmtDur(d99)),
		Backhaul: fmt.Sprintf("%s / %s", fmtDur(b50), fmtDur(b99)),
		Ratio:    fmtRatio(float64(b50) / float64(d50)),
		Target:   fmt.Sprintf("+≤%s p50 (%s, %s)", fmtDur(limit), fmtSigned(added), verdict(added <= limit)),
	}
	if limit == 0 {
		r.Target = fmt.Sprintf("- (%s p50)", fmtSigned(added))
	}
	return r
}

// latencyCeilingRow is latencyRow with the target on the backhaul p50
// itself rather than on what it adds, for figures whose budget is a whole
// operation (a proxied connection set up and used once).
func latencyCeilingRow(figure string, direct, backhaul []time.Duration, limit time.Duration) row {
	r := latencyRow(figure, direct, backhaul, 0)
	b50, _ := percentiles(backhaul)
	r.Target = fmt.Sprintf("≤%s p50 (%s)", fmtDur(limit), verdict(b50 <= limit))
	return r
}

// loadRatioRow compares the same path idle (in the direct column) and under
// load, with the target on how many times the idle p50 the loaded p50 may
// take (0: no target).
func loadRatioRow(figure string, idle, loaded []time.Duration, maxRatio float64) row {
	r := latencyRow(figure, idle, loaded, 0)
	i50, _ := percentiles(idle)
	l50, _ := percentiles(loaded)
	r.Target = fmt.Sprintf("≤%s p50 (%s)", fmtRatio(maxRatio), verdict(float64(l50) <= maxRatio*float64(i50)))
	if maxRatio == 0 {
		r.Target = "-"
	}
	return r
}

// rateRow compares two rates (higher is better); target, when set, is the
// least acceptable backhaul figure in the row's unit.
func rateRow(figure, unit string, direct, backhaul, target float64) row {
	r := row{
		Figure:   figure,
		Direct:   fmtRate(direct, unit),
		Backhaul: fmtRate(backhaul, unit),
		Ratio:    fmtRatio(backhaul / direct),
		Target:   "-",
	}
	if target > 0 {
		r.Target = fmt.Sprintf("≥%s (%s)", fmtRate(target, unit), verdict(backhaul >= target))
	}
	return r
}

// rateShareRow is rateRow with the target on the ratio: the least share of
// the direct figure, measured in the same run, that backhaul should reach.
func rateShareRow(figure, unit string, direct, backhaul, minRatio float64) row {
	r := rateRow(figure, unit, direct, backhaul, 0)
	r.Target = fmt.Sprintf("≥%s (%s)", fmtRatio(minRatio), verdict(backhaul/direct >= minRatio))
	return r
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "MISSED"
}

func fmtDur(d time.Duration) string {
	switch {
	case d < 0:
		return "-" + fmtDur(-d)
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%dµs", d.Round(time.Microsecond)/time.Microsecond)
	default:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	}
}

func fmtSigned(d time.Duration) string {
	if d < 0 {
		return fmtDur(d)
	}
	return "+" + fmtDur(d)
}

func fmtRatio(x float64) string { return fmt.Sprintf("%.2fx", x) }

func fmtRate(x float64, unit string) string {
	switch {
	case x >= 100:
		return fmt.Sprintf("%.0f %s", x, unit)
	default:
		return fmt.Sprintf("%.1f %s", x, unit)
	}
}

func fmtKiB(bytes float64) string { return fmt.Sprintf("%.1f KiB", bytes/1024) }
