package recording

import (
	"bytes"
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCastWriter(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	for _, tc := range []struct {
		name   string
		events []event
		header []int // width, height
		lines  []string
	}{
		{
			name:   "a resize first is the initial size",
			events: []event{{at: ms(1), src: srcResize, cols: 132, rows: 43}, {at: ms(2), src: srcStdout, data: []byte("$ ")}, {at: ms(3), src: srcResize, cols: 80, rows: 25}},
			header: []int{132, 43},
			lines:  []string{`[0.002000, "o", "$ "]`, `[0.003000, "r", "80x25"]`},
		},
		{
			name:   "output first keeps the default size",
			events: []event{{at: ms(1), src: srcStderr, data: []byte("oops\n")}, {at: ms(2), src: srcResize, cols: 100, rows: 30}},
			header: []int{80, 24},
			lines:  []string{`[0.001000, "o", "oops\n"]`, `[0.002000, "r", "100x30"]`},
		},
		{
			name: "UTF-8 split across chunks is joined, per source",
			events: []event{
				{at: ms(1), src: srcStdout, data: []byte("a\xe4\xb8")},
				{at: ms(2), src: srcStderr, data: []byte("\xc3\xa9")},
				{at: ms(3), src: srcStdout, data: []byte("\x96b")},
				{at: ms(4), src: srcStdin, data: []byte("\xe2")},
				{at: ms(5), src: srcStdin, data: []byte("\x82")},
				{at: ms(6), src: srcStdin, data: []byte("\xac")},
			},
			header: []int{80, 24},
			lines:  []string{`[0.001000, "o", "a"]`, `[0.002000, "o", "é"]`, `[0.003000, "o", "世b"]`, `[0.006000, "i", "€"]`},
		},
		{
			name:   "an unfinished sequence at the end is written as it is",
			events: []event{{at: ms(1), src: srcStdout, data: []byte("x\xe4\xb8")}},
			header: []int{80, 24},
			lines:  []string{`[0.001000, "o", "x"]`, `[0.001000, "o", "\ufffd\ufffd"]`},
		},
		{
			name:   "control bytes and quotes are escaped, HTML is not",
			events: []event{{at: ms(1), src: srcStdout, data: []byte("\x1b[1m\"<b>\"\r\n\x00")}},
			header: []int{80, 24},
			lines:  []string{`[0.001000, "o", "\u001b[1m\"<b>\"\r\n\u0000"]`},
		},
		{
			name:   "times never go back (the directions queue concurrently)",
			events: []event{{at: ms(5), src: srcStdout, data: []byte("a")}, {at: ms(4), src: srcStdin, data: []byte("b")}, {at: ms(6), src: srcMarker, data: []byte("end")}},
			header: []int{80, 24},
			lines:  []string{`[0.005000, "o", "a"]`, `[0.005000, "i", "b"]`, `[0.006000, "m", "end"]`},
		},
		{
			name:   "a session that said nothing has a header",
			header: []int{80, 24},
			lines:  []string{},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			w := newCastWriter(&out, header{Version: 2, Width: defaultCols, Height: defaultRows, Timestamp: 1700000000, Title: "t", Backhaul: Meta{User: "alice"}})
			var last time.Duration
			for i := range tc.events {
				require.NoError(t, w.write(&tc.events[i]))
				last = max(last, tc.events[i].at)
			}
			require.NoError(t, w.finish(last))
			lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
			var h header
			require.NoError(t, json.Unmarshal([]byte(lines[0]), &h))
			assert.Equal(t, tc.header, []int{h.Width, h.Height})
			assert.Equal(t, 2, h.Version)
			assert.Equal(t, "alice", h.Backhaul.User)
			assert.Equal(t, tc.lines, lines[1:])
			for _, l := range lines[1:] {
				var e []any
				assert.NoError(t, json.Unmarshal([]byte(l), &e), "each event is a JSON array: %s", l)
			}
		})
	}
}

func TestSplitIncomplete(t *testing.T) {
	for _, tc := range []struct{ in, done, rest string }{
		{"", "", ""},
		{"abc", "abc", ""},
		{"a\xc3", "a", "\xc3"},
		{"a\xc3\xa9", "a\xc3\xa9", ""},
		{"\xe4\xb8", "", "\xe4\xb8"},
		{"x\xf0\x9f\x98", "x", "\xf0\x9f\x98"},
		{"x\xf0\x9f\x98\x80", "x\xf0\x9f\x98\x80", ""},
		{"bad\xff", "bad\xff", ""}, // invalid, not unfinished: written (U+FFFD)
		{"\x80\x80\x80", "\x80\x80\x80", ""},
	} {
		done, rest := splitIncomplete([]byte(tc.in))
		assert.Equal(t, tc.done, string(done), "%q", tc.in)
		assert.Equal(t, tc.rest, string(rest), "%q", tc.in)
	}
}

func TestDescribe(t *testing.T) {
	q := url.Values{"container": {"app"}, "command": {"sh", "-c", "ls /; echo it's"}, "stdin": {"true"}, "tty": {"1"}}
	for _, tc := range []struct {
		path string
		ok   bool
		sub  string
	}{
		{"api/v1/namespaces/ns/pods/p/exec", true, "exec"},
		{"/api/v1/namespaces/ns/pods/p/attach", true, "attach"},
		{"api/v1/namespaces/ns/pods/p/portforward", false, ""},
		{"api/v1/namespaces/ns/pods/p/log", false, ""},
		{"api/v1/namespaces/ns/pods/p", false, ""},
		{"api/v1/namespaces//pods/p/exec", false, ""},
		{"apis/apps/v1/namespaces/ns/deployments/d/exec", false, ""},
		{"api/v1/namespaces/ns/pods/p/exec/more", false, ""},
	} {
		m, ok := Describe(tc.path, q)
		assert.Equal(t, tc.ok, ok, tc.path)
		if ok {
			assert.Equal(t, Meta{Namespace: "ns", Pod: "p", Container: "app", Subresource: tc.sub, Command: q["command"], TTY: true, Stdin: true}, m)
		}
	}
	m, _ := Describe("api/v1/namespaces/ns/pods/p/exec", q)
	assert.Equal(t, `sh -c 'ls /; echo it'\''s'`, m.command())
}
