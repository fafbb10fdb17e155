package frontend

import (
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"strings"
	"time"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/kubestatus"
)

// StatusPage lists connected sessions with their tunnel round trip, as
// HTML or, with Accept: application/json, as JSON. Callers must
// authenticate, and see only the clusters they may reach.
type StatusPage struct {
	authn     auth.Authenticator
	admission *auth.Admission
	sessions  *session.Registry
}

// NewStatusPage returns the page over sessions.
func NewStatusPage(authn auth.Authenticator, admission *auth.Admission, sessions *session.Registry) (*StatusPage, error) {
	if authn == nil || admission == nil || sessions == nil {
		return nil, errors.New("status page: authenticator, admission and sessions are required")
	}
	return &StatusPage{authn: authn, admission: admission, sessions: sessions}, nil
}

type statusRow struct {
	session.Info
	RTT string `json:"rtt"`
	Age string `json:"age"`
}

var statusTmpl = template.Must(template.New("status").Parse(`<!doctype html>
<html><head><title>Backhaul hub</title><style>body{font-family:sans-serif}td,th{padding:2px 10px;text-align:left}</style></head>
<body><h1>Backhaul hub</h1><table><tr><th>Cluster</th><th>Session</th><th>Agent</th><th>Remote</th><th>Connected</th><th>Streams</th><th>RTT</th></tr>
{{range .}}<tr><td>{{.Cluster}}</td><td>{{.ID}}</td><td>{{.AgentVersion}}</td><td>{{.Remote}}</td><td>{{.Age}}</td><td>{{.Streams}}</td><td>{{.RTT}}</td></tr>
{{else}}<tr><td colspan=7>no agents connected</td></tr>{{end}}</table></body></html>`))

func (p *StatusPage) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, ok, err := p.authn.Authenticate(r)
	if err != nil || !ok {
		kubestatus.Write(w, http.StatusUnauthorized, "Unauthorized")
		return
	}
	var rows []statusRow
	allowed := map[string]bool{}
	for _, s := range p.sessions.Sessions() {
		c := s.Cluster()
		may, seen := allowed[c]
		if !seen {
			may = p.admission.Allowed(r.Context(), user, c)
			allowed[c] = may
		}
		if !may {
			continue
		}
		// The round trip was measured in the background: a page view costs
		// the tunnels nothing.
		info := s.Info()
		row := statusRow{Info: info, Age: time.Since(info.Since).Round(time.Second).String(), RTT: "-"}
		if info.RTT > 0 {
			row.RTT = info.RTT.Round(time.Microsecond).String()
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
