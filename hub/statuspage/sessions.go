package statuspage

import (
	"encoding/json"
	"net/http"
	"slices"
	"time"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/session"
)

// sessionRow is one session in GET /status's JSON, as it was before the
// page: scripts and tests read session IDs and round trips from it.
type sessionRow struct {
	session.Info
	RTT string `json:"rtt"`
	Age string `json:"age"`
}

// serveSessions lists this replica's sessions of the clusters u may
// reach. The round trips were measured in the background, and what u may
// reach comes from the same per-caller grant as the page's.
func (p *Page) serveSessions(w http.ResponseWriter, r *http.Request, u *auth.User) {
	sessions := p.cfg.Sessions.Sessions()
	var clusters []string
	for _, s := range sessions {
		clusters = append(clusters, s.Cluster())
	}
	g, err := p.access.lock(r.Context(), u)
	if err != nil {
		p.refuse(w, u, err)
		return
	}
	err = p.access.extend(r.Context(), u, g, slices.Compact(clusters))
	rows := []sessionRow{}
	now := p.clock.Now()
	for _, s := range sessions {
		if !g.allowed(s.Cluster()) {
			continue
		}
		info := s.Info()
		row := sessionRow{Info: info, Age: now.Sub(info.Since).Round(time.Second).String(), RTT: "-"}
		if info.RTT > 0 {
			row.RTT = info.RTT.Round(time.Microsecond).String()
		}
		rows = append(rows, row)
	}
	g.mu.Unlock()
	if err != nil {
		p.refuse(w, u, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(rows)
}
