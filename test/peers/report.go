package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// column is one figure of the table: how to read it from a row, and which
// way is better.
type column struct {
	head  string
	lower bool // lower is better (latency, memory)
	// value is the row's figure (false: not measured); mem columns read
	// the system's memory result instead and show on its first row only.
	value func(r *loadRow) (float64, bool)
	mem   func(m *memResult) (float64, bool)
	unit  func(float64) string
	// ratio says whether a ratio to direct means anything.
	ratio bool
}

func (res *result) columns(workers int) []column {
	var cols []column
	if len(res.rows) > 0 {
		cols = res.loadColumns(workers)
	}
	if len(res.mem) == 0 {
		return cols
	}
	for _, n := range res.agents {
		cols = append(cols, column{head: "KiB/session N=" + fmtCount(n), lower: true, unit: fmtKiB, mem: func(m *memResult) (float64, bool) {
			rss, _, ok := m.perSession(n)
			return rss, ok
		}})
	}
	n := res.agents[len(res.agents)-1]
	return append(cols, column{head: "goroutines/session N=" + fmtCount(n), lower: true, unit: fmtOne, mem: func(m *memResult) (float64, bool) {
		_, g, ok := m.perSession(n)
		return g, ok
	}})
}

func (res *result) loadColumns(workers int) []column {
	return []column{
		{head: "keep-alive p50", lower: true, ratio: true, unit: fmtDurF, value: func(r *loadRow) (float64, bool) {
			return durP50(r.keepAlive)
		}},
		{head: "new conn p50", lower: true, ratio: true, unit: fmtDurF, value: func(r *loadRow) (float64, bool) {
			return durP50(r.newConn)
		}},
		{head: fmt.Sprintf("%d-way req/s", workers), ratio: true, unit: fmtCountF, value: func(r *loadRow) (float64, bool) {
			return mean(r.rps)
		}},
		{head: "bulk MB/s", ratio: true, unit: fmtCountF, value: func(r *loadRow) (float64, bool) {
			if len(r.mbps) == 0 {
				return 0, false
			}
			return median(r.mbps), true
		}},
	}
}

// cell is a row's figure for c (memory columns: only on the system's first
// row).
func (res *result) cell(c column, r *loadRow, first bool) (float64, bool) {
	if c.mem != nil {
		if !first {
			return 0, false
		}
		return c.mem(res.mem[r.system])
	}
	return c.value(r)
}

// failed reports whether any figure could not be measured.
func (res *result) failed() bool {
	for _, r := range res.rows {
		if r.err != nil {
			return true
		}
	}
	for _, m := range res.mem {
		if m.err != nil {
			return true
		}
	}
	return false
}

// print writes the table, Backhaul against the best peer, and the notes.
func (res *result) print(w io.Writer, title string, o *options) {
	rows := res.rows
	if len(rows) == 0 {
		// Memory alone: one row per system.
		for _, s := range o.systems[1:] {
			rows = append(rows, &loadRow{target: &target{system: s, label: s, short: s}})
		}
	}
	cols := res.columns(o.workers)
	var direct *loadRow
	if len(rows) > 0 && rows[0].system == sysDirect {
		direct = rows[0]
	}
	firstOf := map[*loadRow]bool{}
	seen := map[string]bool{}
	for _, r := range rows {
		firstOf[r] = !seen[r.system]
		seen[r.system] = true
	}

	fmt.Fprintln(w, title)
	fmt.Fprintln(w, "versions: "+strings.Join(res.versions, "; "))
	fmt.Fprintln(w)
	table := [][]string{append([]string{""}, heads(cols)...)}
	for _, r := range rows {
		line := []string{r.label}
		for _, c := range cols {
			v, ok := res.cell(c, r, firstOf[r])
			switch {
			case !ok && c.mem != nil && r.system == sysDirect:
				line = append(line, "-")
			case !ok && c.mem != nil && !firstOf[r]:
				line = append(line, "")
			case !ok:
				line = append(line, "n/a")
			default:
				s := c.unit(v)
				if c.ratio && direct != nil && r != direct {
					if d, dok := res.cell(c, direct, true); dok && d > 0 {
						s += fmt.Sprintf(" (%.2fx)", v/d)
					}
				}
				line = append(line, s)
			}
		}
		table = append(table, line)
	}
	writeTable(w, table)
	if direct != nil {
		fmt.Fprintln(w, "(x) is the ratio to direct: for latency how many times slower, for req/s and MB/s the share of direct.")
	}

	// Backhaul against the best peer, column by column.
	type best struct {
		v     float64
		short string
		ok    bool
	}
	bests := make([]best, len(cols))
	for i, c := range cols {
		for _, r := range rows {
			if r.system != sysRemotedialer && r.system != sysKonnectivity {
				continue
			}
			v, ok := res.cell(c, r, firstOf[r])
			if !ok {
				continue
			}
			if b := &bests[i]; !b.ok || (c.lower && v < b.v) || (!c.lower && v > b.v) {
				name := r.short
				if c.mem != nil {
					name = r.system // memory is the server's, whatever the front end
				}
				*b = best{v: v, short: name, ok: true}
			}
		}
	}
	var bh []*loadRow
	for _, r := range rows {
		if r.system == sysBackhaul {
			bh = append(bh, r)
		}
	}
	if len(bh) > 0 && (o.has(sysRemotedialer) || o.has(sysKonnectivity)) {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "Backhaul against the best peer of each column:")
		line := []string{"best peer"}
		for i, c := range cols {
			if !bests[i].ok {
				line = append(line, "n/a")
				continue
			}
			line = append(line, c.unit(bests[i].v)+" "+bests[i].short)
		}
		table := [][]string{append([]string{""}, heads(cols)...), line}
		for _, r := range bh {
			line := []string{r.label + " / best"}
			for i, c := range cols {
				v, ok := res.cell(c, r, firstOf[r])
				switch {
				case !ok && c.mem != nil && !firstOf[r]:
					line = append(line, "")
				case !ok || !bests[i].ok || bests[i].v == 0:
					line = append(line, "n/a")
				default:
					worse := (c.lower && v > bests[i].v) || (!c.lower && v < bests[i].v)
					mark := ""
					if worse {
						mark = " worse"
					}
					line = append(line, fmt.Sprintf("%.2fx%s", v/bests[i].v, mark))
				}
			}
			table = append(table, line)
		}
		writeTable(w, table)
	}

	fmt.Fprintln(w)
	for _, n := range res.notes {
		fmt.Fprintln(w, n)
	}
	res.cpuNotes(w, o)
	res.memoryNotes(w, o)
	var errs []string
	for _, r := range res.rows {
		if r.err != nil {
			errs = append(errs, fmt.Sprintf("  %s: %v", r.label, r.err))
		}
	}
	for _, s := range o.systems {
		if m := res.mem[s]; m != nil && m.err != nil {
			errs = append(errs, fmt.Sprintf("  %s memory: %v", s, m.err))
		}
	}
	if len(errs) > 0 {
		fmt.Fprintln(w, "\nmeasurements that could not be made:")
		for _, e := range errs {
			fmt.Fprintln(w, e)
		}
	}
}

// cpuNotes says what the server and the agent spent per request in the
// concurrent runs.
func (res *result) cpuNotes(w io.Writer, o *options) {
	var parts []string
	for _, r := range res.rows {
		if r.requests == 0 || r.server == nil {
			continue
		}
		per := func(d time.Duration) string {
			return fmtCount(int(d.Microseconds() / max(r.requests, 1)))
		}
		parts = append(parts, fmt.Sprintf("%s %s + %s", r.short, per(r.cpuServer), per(r.cpuAgent)))
	}
	if len(parts) > 0 {
		fmt.Fprintf(w, "CPU µs per request in the %d-way runs, server + agent: %s.\n", o.workers, strings.Join(parts, "; "))
	}
}

// memoryNotes says what each server's memory was at each point.
func (res *result) memoryNotes(w io.Writer, o *options) {
	for _, s := range o.systems {
		m := res.mem[s]
		if m == nil || m.err != nil || len(m.points) == 0 {
			continue
		}
		var rss, gs, dials []string
		rss = append(rss, fmtMiB(m.base.rss))
		gs = append(gs, fmtCount(int(m.base.goroutines)))
		for _, p := range m.points {
			rss = append(rss, fmt.Sprintf("%s (%s)", fmtMiB(p.at.rss), fmtCount(p.n)))
			gs = append(gs, fmtCount(int(p.at.goroutines)))
			dials = append(dials, p.dial.Round(10*time.Millisecond).String())
		}
		fmt.Fprintf(w, "memory, %s server: RSS %s; goroutines %s; sessions added in %s, %d at a time.\n",
			s, strings.Join(rss, " → "), strings.Join(gs, " → "), strings.Join(dials, ", "), dialConcurrency)
	}
}

func heads(cols []column) []string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = c.head
	}
	return out
}

// writeTable pads cells into columns.
func writeTable(w io.Writer, rows [][]string) {
	var widths []int
	for _, r := range rows {
		for i, c := range r {
			if i >= len(widths) {
				widths = append(widths, 0)
			}
			widths[i] = max(widths[i], utf8.RuneCountInString(c))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		for i, c := range r {
			b.WriteString(c)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c)+2))
			}
		}
		fmt.Fprintln(w, strings.TrimRight(b.String(), " "))
	}
}

func durP50(ds []time.Duration) (float64, bool) {
	if len(ds) == 0 {
		return 0, false
	}
	return float64(p50(ds)), true
}

func mean(xs []float64) (float64, bool) {
	if len(xs) == 0 {
		return 0, false
	}
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs)), true
}

func fmtDurF(ns float64) string {
	d := time.Duration(ns)
	if d < 10*time.Millisecond {
		return fmtCount(int(d.Round(time.Microsecond)/time.Microsecond)) + "µs"
	}
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

// fmtCount writes n with thousands separators.
func fmtCount(n int) string {
	s := strconv.Itoa(n)
	if n < 0 {
		return "-" + fmtCount(-n)
	}
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func fmtCountF(x float64) string {
	if x < 100 {
		return fmt.Sprintf("%.1f", x)
	}
	return fmtCount(int(x + 0.5))
}

func fmtKiB(bytes float64) string { return fmt.Sprintf("%.1f", bytes/1024) }
func fmtMiB(bytes float64) string { return fmt.Sprintf("%.1f MiB", bytes/(1<<20)) }
func fmtOne(x float64) string     { return fmt.Sprintf("%.1f", x) }
