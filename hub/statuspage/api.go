package statuspage

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/pkg/kubestatus"
)

// header is the part of an answer before the clusters.
type header struct {
	Replica string `json:"replica"`
	User    string `json:"user"`
	// Changed is when the fleet's data last changed.
	Changed time.Time `json:"changed"`
	// Poll says how often the page should ask again.
	PollSeconds float64 `json:"pollSeconds"`
}

// body is one caller's answer for one snapshot, compressed.
type body struct {
	etag string
	gz   []byte
}

// reachable returns the snapshot and the caller's grant, locked and
// extended to every cluster of the snapshot; unlock it when done.
func (p *Page) reachable(ctx context.Context, w http.ResponseWriter, u *auth.User) (*snapshot, *grant, bool) {
	snap, err := p.builder.get(ctx)
	if err != nil {
		unavailable(w, fmt.Sprintf("status page: %v", err))
		return nil, nil, false
	}
	g, err := p.access.lock(ctx, u)
	if err != nil {
		p.refuse(w, u, err)
		return nil, nil, false
	}
	if err := p.access.extend(ctx, u, g, snap.names); err != nil {
		g.mu.Unlock()
		p.refuse(w, u, err)
		return nil, nil, false
	}
	return snap, g, true
}

func (p *Page) refuse(w http.ResponseWriter, u *auth.User, err error) {
	if errors.Is(err, auth.ErrUnavailable) {
		unavailable(w, fmt.Sprintf("cannot authorize %q now: %v", u.Name, err))
		return
	}
	kubestatus.Write(w, http.StatusInternalServerError, fmt.Sprintf("authorizing %q: %v", u.Name, err))
}

// serveClusters answers the fleet the caller may reach, as
//
//	{"replica":..,"user":..,"changed":..,"pollSeconds":..,"clusters":[Cluster...]}
//
// with an ETag, so a poll of an unchanged fleet is a 304.
func (p *Page) serveClusters(w http.ResponseWriter, r *http.Request) {
	u, ok := p.authenticate(w, r)
	if !ok {
		return
	}
	snap, g, ok := p.reachable(r.Context(), w, u)
	if !ok {
		return
	}
	defer g.mu.Unlock()
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("Vary", "Accept-Encoding")
	etag := fmt.Sprintf(`"%d.%d"`, snap.gen, g.id)
	h.Set("ETag", etag)
	if r.Header.Get("If-None-Match") == etag {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	h.Set("Content-Type", "application/json")
	if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		_, _ = w.Write(p.render(snap, g, u))
		return
	}
	var b *body
	if v, ok := p.bodies.Get(g.key); ok && v.(*body).etag == etag {
		b = v.(*body)
	} else {
		var buf bytes.Buffer
		// Fastest compression: ~8x smaller for little CPU, once per
		// caller and snapshot.
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		_, _ = zw.Write(p.render(snap, g, u))
		_ = zw.Close()
		b = &body{etag: etag, gz: buf.Bytes()}
		p.bodies.Add(g.key, b)
	}
	h.Set("Content-Encoding", "gzip")
	h.Set("Content-Length", strconv.Itoa(len(b.gz)))
	_, _ = w.Write(b.gz)
}

// render concatenates the rows g allows, encoded once per snapshot.
func (p *Page) render(snap *snapshot, g *grant, u *auth.User) []byte {
	head, _ := json.Marshal(header{Replica: p.cfg.Replica, User: u.Name, Changed: snap.changed, PollSeconds: p.cfg.Poll.Seconds()})
	size := len(head) + 16
	for _, row := range snap.rows {
		size += len(row) + 1
	}
	out := make([]byte, 0, size)
	out = append(out, head[:len(head)-1]...)
	out = append(out, `,"clusters":[`...)
	first := true
	for i, name := range snap.names {
		if !g.allowed(name) {
			continue
		}
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, snap.rows[i]...)
	}
	return append(out, "]}"...)
}

// serveHistory answers the RTT history of the clusters named by cluster=
// parameters (those the caller may reach), as
//
//	{"NAME":[[unixSeconds,micros],...],...}
//
// read from the prober's memory: the page asks only for the rows on
// screen.
func (p *Page) serveHistory(w http.ResponseWriter, r *http.Request) {
	u, ok := p.authenticate(w, r)
	if !ok {
		return
	}
	names := r.URL.Query()["cluster"]
	if len(names) > p.cfg.MaxHistory {
		kubestatus.Write(w, http.StatusBadRequest, fmt.Sprintf("at most %d clusters per history request", p.cfg.MaxHistory))
		return
	}
	snap, err := p.builder.get(r.Context())
	if err != nil {
		unavailable(w, fmt.Sprintf("status page: %v", err))
		return
	}
	known := names[:0:0]
	for _, n := range names {
		if _, ok := snap.index[n]; ok {
			known = append(known, n)
		}
	}
	g, err := p.access.lock(r.Context(), u)
	if err != nil {
		p.refuse(w, u, err)
		return
	}
	err = p.access.extend(r.Context(), u, g, known)
	out := make(map[string][][2]int64, len(known))
	for _, n := range known {
		if g.allowed(n) {
			out[n] = [][2]int64{}
		}
	}
	g.mu.Unlock()
	if err != nil {
		p.refuse(w, u, err)
		return
	}
	for n := range out {
		for _, s := range p.cfg.Source.History(n) {
			out[n] = append(out[n], [2]int64{s.At.Unix(), s.RTT.Microseconds()})
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}
