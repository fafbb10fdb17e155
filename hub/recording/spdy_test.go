package recording

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strings"
	"testing"

	"github.com/moby/spdystream/spdy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
)

// spdyWriter writes one direction's frames with the library's Framer
// (header blocks compressed as one zlib stream, as a real peer does).
type spdyWriter struct {
	t   testing.TB
	buf bytes.Buffer
	f   *spdy.Framer
}

func newSPDYWriter(t testing.TB) *spdyWriter {
	w := &spdyWriter{t: t}
	var err error
	w.f, err = spdy.NewFramer(&w.buf, nil)
	require.NoError(t, err)
	return w
}

func (w *spdyWriter) frame(f spdy.Frame) *spdyWriter {
	require.NoError(w.t, w.f.WriteFrame(f))
	return w
}

func (w *spdyWriter) syn(id uint32, kind string) *spdyWriter {
	h := http.Header{}
	h.Set(corev1.StreamType, kind)
	return w.frame(&spdy.SynStreamFrame{StreamId: spdy.StreamId(id), Headers: h})
}

func (w *spdyWriter) data(id uint32, s string) *spdyWriter {
	return w.frame(&spdy.DataFrame{StreamId: spdy.StreamId(id), Data: []byte(s)})
}

// streamsSeen records data by stream kind.
type streamsSeen map[string][]byte

func (s streamsSeen) data(kind string, b []byte) error {
	s[kind] = append(s[kind], b...)
	return nil
}

func (s streamsSeen) strings() map[string]string {
	out := map[string]string{}
	for k, v := range s {
		out[k] = string(v)
	}
	return out
}

// feedSPDY feeds the caller's stream, then the member's, to decoders
// sharing one stream map, in pieces of step bytes.
func feedSPDY(t *testing.T, caller, member []byte, step int) (fromCaller, fromMember streamsSeen) {
	t.Helper()
	streams := &spdyStreams{}
	fromCaller, fromMember = streamsSeen{}, streamsSeen{}
	c, err := newSPDYDecoder(true, streams, fromCaller)
	require.NoError(t, err)
	m, err := newSPDYDecoder(false, streams, fromMember)
	require.NoError(t, err)
	for _, d := range []struct {
		dec    *spdyDecoder
		stream []byte
	}{{c, caller}, {m, member}} {
		for b := d.stream; len(b) > 0; {
			k := min(step, len(b))
			require.NoError(t, d.dec.feed(b[:k]), "step %d", step)
			b = b[k:]
		}
	}
	return fromCaller, fromMember
}

func TestSPDYDecoder(t *testing.T) {
	caller := newSPDYWriter(t).
		frame(&spdy.SettingsFrame{FlagIdValues: []spdy.SettingsFlagIdValue{{Id: spdy.SettingsInitialWindowSize, Value: 1 << 16}}}).
		syn(1, corev1.StreamTypeError).syn(3, corev1.StreamTypeStdin).syn(5, corev1.StreamTypeStdout).syn(7, corev1.StreamTypeResize).
		data(7, `{"Width":80,"Height":24}`+"\n").
		data(3, "echo hi\r").
		frame(&spdy.PingFrame{Id: 1}).
		data(3, strings.Repeat("x", 70000)).
		frame(&spdy.DataFrame{StreamId: 3, Flags: spdy.DataFlagFin}).
		frame(&spdy.WindowUpdateFrame{StreamId: 5, DeltaWindowSize: 1000}).
		data(9, "on a stream never opened")
	member := newSPDYWriter(t).
		frame(&spdy.SynReplyFrame{StreamId: 1, Headers: http.Header{}}).
		frame(&spdy.SynReplyFrame{StreamId: 3, Headers: http.Header{}}).
		frame(&spdy.SynReplyFrame{StreamId: 5, Headers: http.Header{}}).
		data(5, "hi\r\n").
		frame(&spdy.PingFrame{Id: 1}).
		data(5, "h\xc3").data(5, "\xa9").
		data(1, `{"status":"Success"}`).
		frame(&spdy.RstStreamFrame{StreamId: 7, Status: spdy.Cancel}).
		frame(&spdy.GoAwayFrame{})
	for _, step := range []int{1, 5, 8, 9, 4096, 1 << 20} {
		fromCaller, fromMember := feedSPDY(t, caller.buf.Bytes(), member.buf.Bytes(), step)
		assert.Equal(t, map[string]string{
			corev1.StreamTypeResize: `{"Width":80,"Height":24}` + "\n",
			corev1.StreamTypeStdin:  "echo hi\r" + strings.Repeat("x", 70000),
			"":                      "on a stream never opened",
		}, fromCaller.strings(), "step %d", step)
		assert.Equal(t, map[string]string{
			corev1.StreamTypeStdout: "hi\r\nh\xc3\xa9",
			corev1.StreamTypeError:  `{"status":"Success"}`,
		}, fromMember.strings(), "step %d", step)
	}
}

func TestSPDYDecoderRefusesWhatItCannotRead(t *testing.T) {
	noise := make([]byte, 2*maxHeaderFrame)
	_, _ = rand.Read(noise)
	many := newSPDYWriter(t)
	for i := range maxSPDYStreams + 1 {
		many.syn(uint32(2*i+1), corev1.StreamTypeStdout)
	}
	garbled := newSPDYWriter(t).syn(1, corev1.StreamTypeStdin).buf.Bytes()
	for i := spdyHeadLen + 10; i < len(garbled); i++ { // the compressed header block
		garbled[i] = 0xff
	}
	for _, tc := range []struct {
		name   string
		stream []byte
	}{
		{"a header frame over the bound", newSPDYWriter(t).frame(&spdy.SynStreamFrame{StreamId: 1, Headers: http.Header{"X": {hex.EncodeToString(noise)}}}).buf.Bytes()},
		{"more streams than a session opens", many.buf.Bytes()},
		{"another SPDY version", []byte{0x80, 2, 0, 1, 0, 0, 0, 0}},
		{"a garbled header block", garbled},
		{"a header block of the wrong length", []byte{0x80, 3, 0, 1, 0, 0, 0, 10, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := newSPDYDecoder(true, &spdyStreams{}, streamsSeen{})
			require.NoError(t, err)
			assert.ErrorIs(t, d.feed(tc.stream), errSPDYFrame)
		})
	}
}
