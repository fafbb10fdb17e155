package recording

import (
	"fmt"
	"net/url"
	"strings"
)

// Meta says whose session a recording holds and what it ran: the
// header's "backhaul" object (players ignore keys they do not know).
type Meta struct {
	RequestID string   `json:"request_id"`
	User      string   `json:"user"`
	Groups    []string `json:"groups,omitempty"`
	Cluster   string   `json:"cluster"`
	Namespace string   `json:"namespace"`
	Pod       string   `json:"pod"`
	Container string   `json:"container,omitempty"`
	// Subresource is exec or attach.
	Subresource string   `json:"subresource"`
	Command     []string `json:"command,omitempty"`
	TTY         bool     `json:"tty"`
	Stdin       bool     `json:"stdin"`
	// Protocol is the one the member chose (v5.channel.k8s.io, SPDY/3.1
	// with v4.channel.k8s.io, ...); Tap sets it.
	Protocol string `json:"protocol,omitempty"`
}

// Describe recognizes an exec or attach request by its path below the
// cluster (api/v1/namespaces/NS/pods/POD/exec) and reads its query.
func Describe(path string, q url.Values) (Meta, bool) {
	p := strings.Split(strings.Trim(path, "/"), "/")
	if len(p) != 7 || p[0] != "api" || p[1] != "v1" || p[2] != "namespaces" || p[4] != "pods" || p[3] == "" || p[5] == "" {
		return Meta{}, false
	}
	if p[6] != "exec" && p[6] != "attach" {
		return Meta{}, false
	}
	return Meta{
		Namespace: p[3], Pod: p[5], Subresource: p[6],
		Container: q.Get("container"), Command: q["command"],
		TTY: truthy(q.Get("tty")), Stdin: truthy(q.Get("stdin")),
	}, true
}

// truthy reads a boolean query parameter as the API server does
// (strconv.ParseBool's spellings of true).
func truthy(s string) bool {
	switch s {
	case "1", "t", "T", "true", "TRUE", "True":
		return true
	}
	return false
}

// title is a line a player shows: who ran what where.
func (m Meta) title() string {
	target := m.Namespace + "/" + m.Pod
	if m.Container != "" {
		target += "/" + m.Container
	}
	return fmt.Sprintf("%s on %s: %s %s", m.User, m.Cluster, m.Subresource, target)
}

// command is the exec command as one line, each word quoted only when it
// needs it (attach has none).
func (m Meta) command() string {
	words := make([]string, len(m.Command))
	for i, w := range m.Command {
		if w == "" || strings.ContainsAny(w, " \t\n'\"\\$`;&|<>()*?[]{}~#!") {
			w = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		}
		words[i] = w
	}
	return strings.Join(words, " ")
}
