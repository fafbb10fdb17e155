package logging

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/stretchr/testify/assert"
)

// 10,000 refusals write the burst, not 10,000 lines, and the next line
// says how many were dropped.
func TestLimitedDropsAndCounts(t *testing.T) {
	var buf bytes.Buffer
	l := NewLimited(hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Warn}), time.Hour, 5)
	start := time.Now()
	l.now = func() time.Time { return start }
	for range 10000 {
		l.Warn("refused agent", "remote", "203.0.113.9:4711")
	}
	assert.Equal(t, 5, strings.Count(buf.String(), "refused agent"))

	l.now = func() time.Time { return start.Add(time.Hour) } // one more line allowed
	l.Warn("refused agent", "remote", "203.0.113.9:4711")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	assert.Len(t, lines, 6)
	assert.Contains(t, lines[5], "dropped_similar_lines=9995")
}
