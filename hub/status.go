package hub

import (
	"encoding/json"
	"html/template"
	"net/http"
	"strings"
	"time"

	"backhaul.io/backhaul/pkg/kubestatus"
)

// statusPage lists connected clusters with their tunnel round trip, as HTML
// or, with Accept: application/json, as JSON. Callers must authenticate,
// and see only the clusters they may reach.
type statusPage struct {
	authn    Authenticator
	authz    Authorizer
	registry *Registry
}

type statusRow struct {
	SessionInfo
	RTT string `json:"rtt"`
	Age string `json:"age"`
}

var statusTmpl = template.Must(template.New("status").Parse(`<!doctype html>
<html><head><title>Backhaul hub</title><style>body{font-family:sans-serif}td,th{padding:2px 10px;text-align:left}</style></head>
<body><h1>Backhaul hub</h1><table><tr><th>Cluster</th><th>Session</th><th>Agent</th><th>Remote</th><th>Connected</th><th>Streams</th><th>RTT</th></tr>
{{range .}}<tr><td>{{.Cluster}}</td><td>{{.ID}}</td><td>{{.AgentVersion}}</td><td>{{.Remote}}</td><td>{{.Age}}</td><td>{{.Streams}}</td><td>{{.RTT}}</td></tr>
{{else}}<tr><td colspan=7>no agents connected</td></tr>{{end}}</table></body></html>`))

func (p *statusPage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, ok, err := p.authn.Authenticate(r)
	if err != nil || !ok {
		kubestatus.Write(w, http.StatusUnauthorized, "Unauthorized")
		return
	}
	var rows []statusRow
	allowed := map[string]bool{}
	for _, s := range p.registry.Sessions() {
		may, seen := allowed[s.Cluster]
		if !seen {
			may, _, err = p.authz.Authorize(r.Context(), user, s.Cluster)
			may = may && err == nil
			allowed[s.Cluster] = may
		}
		if !may {
			continue
		}
		row := statusRow{SessionInfo: s, Age: time.Since(s.Since).Round(time.Second).String(), RTT: "-"}
		if d, err := p.registry.Ping(s.Cluster, s.ID); err == nil {
			row.RTT = d.Round(time.Microsecond).String()
		}
		rows = append(rows, row)
	}
	if strings.Contains(r.Header.Get("Accept"), "application/json") {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(rows)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = statusTmpl.Execute(w, rows)
}
