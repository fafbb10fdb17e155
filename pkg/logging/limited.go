package logging

import (
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/time/rate"
)

// Limited writes at most burst lines at once and one per every after that,
// and adds to the next line it writes how many it dropped. It is for
// lines an unauthenticated peer can cause (refused upgrades, bad
// enrollments): a flood of those must not become a flood of log lines.
type Limited struct {
	log     hclog.Logger
	limit   *rate.Limiter
	dropped atomic.Int64
	now     func() time.Time
}

// NewLimited limits log to burst lines, then one per every.
func NewLimited(log hclog.Logger, every time.Duration, burst int) *Limited {
	return &Limited{log: log, limit: rate.NewLimiter(rate.Every(every), burst), now: time.Now}
}

// Warn logs at warn level, within the limit.
func (l *Limited) Warn(msg string, args ...any) {
	if !l.limit.AllowN(l.now(), 1) {
		l.dropped.Add(1)
		return
	}
	if n := l.dropped.Swap(0); n > 0 {
		args = append(args, "dropped_similar_lines", n)
	}
	l.log.Warn(msg, args...)
}
