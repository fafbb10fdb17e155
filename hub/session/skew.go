package session

import (
	"errors"
	"net/http"
	"time"

	"backhaul.io/backhaul/tunnel"
)

// maxAgentTimeLen bounds tunnel.HeaderAgentTime: RFC 3339 with
// nanoseconds and a zone offset is 35 bytes.
const maxAgentTimeLen = 40

// maxSkew bounds a clock offset the hub believes: an agent further off
// than a year sends nonsense, not a clock.
const maxSkew = 365 * 24 * time.Hour

var errAgentTime = errors.New("malformed agent time")

// parseAgentTime reads tunnel.HeaderAgentTime as the agent's clock
// minus the hub's at recv, when the upgrade carried a believable one.
// The agent stamps the header as it starts dialling, so the offset
// includes the connection's set-up (a few round trips); Session corrects
// it by half a round trip once one is measured.
func parseAgentTime(h http.Header, recv time.Time) (time.Duration, bool) {
	v := h.Get(tunnel.HeaderAgentTime)
	if v == "" {
		return 0, false
	}
	at, err := parseRFC3339(v)
	if err != nil {
		return 0, false
	}
	off := at.Sub(recv)
	if off > maxSkew || off < -maxSkew {
		return 0, false
	}
	return off, true
}

// parseRFC3339 parses v, of bounded length, as an RFC 3339 time.
func parseRFC3339(v string) (time.Time, error) {
	if len(v) > maxAgentTimeLen {
		return time.Time{}, errAgentTime
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, errAgentTime
	}
	return t, nil
}

// ClockSkew is the agent's clock minus the hub's, as its upgrade said,
// and whether it said: the offset the header gave, corrected by half the
// session's round trip, the time the header spent on the way.
func (s *Session) ClockSkew() (time.Duration, bool) {
	if !s.agent.HasClock {
		return 0, false
	}
	return s.agent.ClockOffset + time.Duration(s.rtt.Load())/2, true
}
