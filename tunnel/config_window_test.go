package tunnel

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseWindow(t *testing.T) {
	tests := []struct {
		in    string
		want  Window
		print string
		bad   bool
	}{
		{in: "1Mi", want: 1 << 20, print: "1Mi"},
		{in: "256Ki", want: 256 << 10, print: "256Ki"},
		{in: "1536Ki", want: 1536 << 10, print: "1536Ki"},
		{in: "262145", want: 262145, print: "262145"},
		{in: "64Mi", want: 64 << 20, print: "64Mi"},
		{in: "255Ki", bad: true},  // below yamux's initial window
		{in: "65Mi", bad: true},   // above the bound
		{in: "1Gi", bad: true},    // no such suffix
		{in: "-1Mi", bad: true},   // negative
		{in: "", bad: true},       // empty
		{in: "Mi", bad: true},     // no number
		{in: "4096Mi", bad: true}, // overflows uint32 once scaled
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			var w Window
			err := w.Set(tc.in)
			if tc.bad {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, w)
			assert.Equal(t, tc.print, w.String())
		})
	}
}

// TestDefaultStreamWindowIsBounded pins issue 14's bound: a stalled reader
// holds at most 1 MiB per stream by default.
func TestDefaultStreamWindowIsBounded(t *testing.T) {
	c := DefaultConfig()
	assert.LessOrEqual(t, c.StreamWindow, uint32(1<<20))
	assert.Equal(t, "1Mi", Window(c.StreamWindow).String())
	c.StreamWindow = MaxStreamWindow + 1
	assert.Error(t, c.Validate())
}
