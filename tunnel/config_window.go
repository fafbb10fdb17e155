package tunnel

import (
	"fmt"
	"strconv"
	"strings"
)

// Per-stream receive window bounds.
//
// One stream moves at most one window per round trip, so a window trades
// a single stream's throughput on a long link against the memory a
// stalled reader pins: a caller that opens streams and never reads them
// holds up to one window each in the receiving process. With 16 MiB
// windows 64 unread streams filled a 1 GiB hub. yamux grants more window
// only once half of it is consumed, so one stream moves about half a
// window per round trip: measured (make bench, "window" rows), 1 MiB gives
// one stream 17.6 MB/s at 20 ms RTT and 7.2 MB/s at 80 ms (16 MiB: 47.6
// and 34.1; 256 KiB: 5.8 and 1.4), and on loopback the tunnel's own cost
// dominates either way. A caller's many streams add up, and a site whose
// single streams need more (large uploads over a long link) can raise
// --stream-window on both ends.
const (
	// MinStreamWindow is yamux's initial window; it cannot shrink below.
	MinStreamWindow = 256 << 10
	// DefaultStreamWindow is what hub and agent use unless configured.
	DefaultStreamWindow = 1 << 20
	// MaxStreamWindow bounds the setting: beyond it a few stalled
	// readers cost more memory than any single stream could gain.
	MaxStreamWindow = 64 << 20
)

// Window is a stream window size as a command-line flag: bytes, or a
// number with a Ki or Mi suffix ("512Ki", "1Mi"), between MinStreamWindow
// and MaxStreamWindow.
type Window uint32

// String prints the size the way Set reads it.
func (w Window) String() string {
	switch {
	case w != 0 && w%(1<<20) == 0:
		return strconv.FormatUint(uint64(w>>20), 10) + "Mi"
	case w != 0 && w%(1<<10) == 0:
		return strconv.FormatUint(uint64(w>>10), 10) + "Ki"
	}
	return strconv.FormatUint(uint64(w), 10)
}

// Set parses s.
func (w *Window) Set(s string) error {
	v, err := ParseWindow(s)
	if err != nil {
		return err
	}
	*w = v
	return nil
}

// ParseWindow reads a window size (see Window) and checks its bounds.
func ParseWindow(s string) (Window, error) {
	num, unit := s, uint64(1)
	switch {
	case strings.HasSuffix(s, "Ki"):
		num, unit = s[:len(s)-2], 1<<10
	case strings.HasSuffix(s, "Mi"):
		num, unit = s[:len(s)-2], 1<<20
	}
	n, err := strconv.ParseUint(num, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("stream window %q: want bytes, or a number with Ki or Mi", s)
	}
	v := n * unit
	if v < MinStreamWindow || v > MaxStreamWindow {
		return 0, fmt.Errorf("stream window %q: want 256Ki to 64Mi", s)
	}
	return Window(v), nil
}
