package recording

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// wsFrame builds one frame; a non-nil mask masks it (a client's).
func wsFrame(head byte, mask []byte, payload []byte) []byte {
	out := []byte{head}
	m := byte(0)
	if mask != nil {
		m = bitMask
	}
	switch n := len(payload); {
	case n < 126:
		out = append(out, m|byte(n))
	case n <= 0xffff:
		out = append(out, m|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, m|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	if mask == nil {
		return append(out, payload...)
	}
	out = append(out, mask...)
	for i, c := range payload {
		out = append(out, c^mask[i%4])
	}
	return out
}

// channels records what a wsDecoder hands on: data per channel and each
// message end as "|".
type channels map[byte]*strings.Builder

func (c channels) data(ch byte, b []byte) error {
	if c[ch] == nil {
		c[ch] = &strings.Builder{}
	}
	c[ch].Write(b)
	return nil
}

func (c channels) end(ch byte) error {
	if c[ch] == nil {
		c[ch] = &strings.Builder{}
	}
	c[ch].WriteString("|")
	return nil
}

func (c channels) strings() map[byte]string {
	out := map[byte]string{}
	for k, v := range c {
		out[k] = v.String()
	}
	return out
}

// feedings runs stream through a new decoder whole, a byte at a time and
// in uneven pieces; every way must give the same channels.
func feedings(t *testing.T, base64 bool, stream []byte) map[byte]string {
	t.Helper()
	var first map[byte]string
	for _, step := range []int{len(stream), 1, 7, 4096} {
		got := channels{}
		d := newWSDecoder(base64, got)
		for b := stream; len(b) > 0; {
			k := min(step, len(b))
			require.NoError(t, d.feed(b[:k]), "step %d", step)
			b = b[k:]
		}
		if first == nil {
			first = got.strings()
		} else {
			require.Equal(t, first, got.strings(), "step %d", step)
		}
	}
	return first
}

func TestWebsocketDecoder(t *testing.T) {
	mask := []byte{0x12, 0x34, 0x56, 0x78}
	long := strings.Repeat("0123456789", 30)         // a 16-bit length
	huge := strings.Repeat("abcdefghijklmnop", 5000) // a 64-bit length
	b64 := func(ch byte, s string) []byte {
		return append([]byte{'0' + ch}, base64.StdEncoding.EncodeToString([]byte(s))...)
	}
	for _, tc := range []struct {
		name   string
		base64 bool
		frames [][]byte
		want   map[byte]string
	}{
		{
			name: "a client's masked messages: resize, stdin, v5 close",
			frames: [][]byte{
				wsFrame(bitFin|opBinary, mask, []byte("\x04{\"Width\":80,\"Height\":24}\n")),
				wsFrame(bitFin|opBinary, mask, []byte("\x00ls -l\r")),
				wsFrame(bitFin|opBinary, mask, []byte{255, 0}),
			},
			want: map[byte]string{4: "{\"Width\":80,\"Height\":24}\n|", 0: "ls -l\r|", 255: "\x00|"},
		},
		{
			name: "a server's messages with 16- and 64-bit lengths",
			frames: [][]byte{
				wsFrame(bitFin|opBinary, nil, []byte("\x01"+long)),
				wsFrame(bitFin|opBinary, nil, []byte("\x02"+huge)),
				wsFrame(bitFin|opBinary, nil, []byte{1}), // empty: the kubelet's "connected" message
				wsFrame(bitFin|opBinary, nil, nil),       // no channel at all
			},
			want: map[byte]string{1: long + "||", 2: huge + "|"},
		},
		{
			name: "a fragmented message with control frames between its fragments",
			frames: [][]byte{
				wsFrame(opBinary, mask, []byte("\x00frag")),
				wsFrame(bitFin|opPing, mask, []byte("ping!")),
				wsFrame(opContinuation, mask, []byte("ment")),
				wsFrame(bitFin|opPong, nil, nil),
				wsFrame(bitFin|opContinuation, mask, []byte("ed")),
				wsFrame(bitFin|opClose, mask, []byte{0x03, 0xe8}),
			},
			want: map[byte]string{0: "fragmented|"},
		},
		{
			name:   "base64 split across frames",
			base64: true,
			frames: [][]byte{
				wsFrame(opText, nil, b64(1, "héllo, 世界")[:5]),
				wsFrame(opContinuation, nil, b64(1, "héllo, 世界")[5:11]),
				wsFrame(bitFin|opContinuation, nil, b64(1, "héllo, 世界")[11:]),
				wsFrame(bitFin|opText, mask, b64(4, `{"Width":1,"Height":2}`)),
				wsFrame(bitFin|opText, nil, []byte("1")),
			},
			want: map[byte]string{1: "héllo, 世界||", 4: `{"Width":1,"Height":2}|`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stream []byte
			for _, f := range tc.frames {
				stream = append(stream, f...)
			}
			assert.Equal(t, tc.want, feedings(t, tc.base64, stream))
		})
	}
}

func TestWebsocketDecoderRefusesBrokenFrames(t *testing.T) {
	for _, tc := range []struct {
		name   string
		base64 bool
		stream []byte
	}{
		{"reserved bits (a compressed frame)", false, wsFrame(bitFin|0x40|opBinary, nil, []byte("\x01x"))},
		{"an unknown opcode", false, wsFrame(bitFin|0x3, nil, nil)},
		{"a continuation outside a message", false, wsFrame(bitFin|opContinuation, nil, []byte("x"))},
		{"a message inside a fragmented one", false, append(wsFrame(opBinary, nil, []byte("\x01a")), wsFrame(bitFin|opBinary, nil, []byte("\x01b"))...)},
		{"a fragmented control frame", false, wsFrame(opPing, nil, nil)},
		{"a control frame over 125 bytes", false, wsFrame(bitFin|opPing, nil, make([]byte, 126))},
		{"a 64-bit length with its top bit", false, []byte{bitFin | opBinary, 127, 0x80, 0, 0, 0, 0, 0, 0, 0}},
		{"bad base64", true, wsFrame(bitFin|opText, nil, []byte("1!!!!"))},
		{"base64 cut short", true, wsFrame(bitFin|opText, nil, []byte("1aGk"+"aG"))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := newWSDecoder(tc.base64, channels{}).feed(tc.stream)
			assert.ErrorIs(t, err, errWebsocketFrame)
		})
	}
}

func TestResizeLines(t *testing.T) {
	for _, tc := range []struct {
		name   string
		chunks []string
		want   []string
	}{
		{"one per line", []string{`{"Width":80,"Height":24}` + "\n" + `{"Width":100,"Height":30}` + "\n"}, []string{"80x24", "100x30"}},
		{"split anywhere", []string{`{"Wid`, `th":80,"He`, `ight":24}` + "\n"}, []string{"80x24"}},
		{"not sizes are skipped", []string{"garbage\n{}\n" + `{"Width":0,"Height":5}` + "\n" + `{"Width":7,"Height":5}` + "\n"}, []string{"7x5"}},
		{"an overlong line is skipped whole", []string{strings.Repeat(" ", maxResizeLine) + `{"Width":1,"Height":1}` + "\n" + `{"Width":2,"Height":2}` + "\n"}, []string{"2x2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var r resizeLines
			s := &sizesSeen{}
			for _, c := range tc.chunks {
				require.NoError(t, r.feed([]byte(c), s))
			}
			assert.Equal(t, tc.want, s.sizes)
		})
	}
}

// sizesSeen is a sink that notes sizes.
type sizesSeen struct{ sizes []string }

func (s *sizesSeen) output(source, []byte) error { return nil }
func (s *sizesSeen) resize(c, r uint16) error {
	s.sizes = append(s.sizes, fmt.Sprintf("%dx%d", c, r))
	return nil
}
