package flagdoc

import (
	"bytes"
	"flag"
	"strings"
	"testing"
	"time"
)

func TestStdFlags(t *testing.T) {
	got := StdFlags(func(fs *flag.FlagSet) {
		fs.String("listen", ":8443", "address to serve `addr`esses on")
		fs.String("empty", "", "no default")
		fs.Bool("on", true, "defaults to true")
		fs.Bool("off", false, "defaults to false")
		fs.Duration("wait", 15*time.Second, "how long")
		fs.Duration("zero", 0, "zero duration")
		fs.Uint("port", 10250, "a port")
	})
	want := []Flag{ // sorted by name, as the flag package lists them
		{Name: "empty", Type: "string", Usage: "no default"},
		{Name: "listen", Type: "addr", Default: ":8443", Usage: "address to serve addresses on"},
		{Name: "off", Type: "bool", Usage: "defaults to false"},
		{Name: "on", Type: "bool", Default: "true", Usage: "defaults to true"},
		{Name: "port", Type: "uint", Default: "10250", Usage: "a port"},
		{Name: "wait", Type: "duration", Default: "15s", Usage: "how long"},
		{Name: "zero", Type: "duration", Usage: "zero duration"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d flags, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("flag %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestMarkdown(t *testing.T) {
	tests := []struct {
		name string
		cmd  Command
		want []string // lines that must appear
	}{
		{
			name: "plain",
			cmd:  Command{Name: "tool", Summary: "Does things.", Flags: []Flag{{Name: "listen", Type: "string", Default: ":8443", Usage: "where"}}},
			want: []string{"## tool", "Does things.", "| flag | type | default | description |", "| `--listen` | string | `:8443` | where |"},
		},
		{
			name: "escapes cells",
			cmd:  Command{Name: "tool", Flags: []Flag{{Name: "target", Type: "string", Usage: "CLUSTER<suffix>:PORT | or\n  more"}}},
			want: []string{"| `--target` | string |  | CLUSTER\\<suffix\\>:PORT \\| or more |"},
		},
		{
			name: "shorthand and odd default",
			cmd:  Command{Name: "ctl get", Flags: []Flag{{Name: "output", Shorthand: "o", Type: "string", Default: " x", Usage: "format"}}},
			want: []string{"| `-o`, `--output` | string | `\" x\"` | format |"},
		},
		{
			name: "no flags",
			cmd:  Command{Name: "bare"},
			want: []string{"## bare", "No flags."},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			if err := Markdown(&b, "Title", "Intro.", []Command{tt.cmd}); err != nil {
				t.Fatal(err)
			}
			out := b.String()
			if !strings.HasPrefix(out, "# Title\n\nIntro.\n\n") || !strings.HasSuffix(out, "\n") || strings.HasSuffix(out, "\n\n") {
				t.Errorf("bad framing:\n%s", out)
			}
			lines := map[string]bool{}
			for _, l := range strings.Split(out, "\n") {
				lines[l] = true
			}
			for _, w := range tt.want {
				if !lines[w] {
					t.Errorf("missing line %q in:\n%s", w, out)
				}
			}
		})
	}
}
