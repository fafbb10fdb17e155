package recording

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/moby/spdystream/spdy"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
)

// What recording costs a session's output: decoding alone, and decoding
// with the file written (required mode, so the session runs at the
// recording's pace and the figure is the most a recorded session moves).
// 8 MiB of terminal output in 16 KiB writes, read in the 32 KiB pieces the
// proxy copies with.

const benchOutput = 8 << 20

func benchStreams(b *testing.B) map[string][]byte {
	chunk := strings.Repeat("0123456789abcdef", 1<<10)
	var ws bytes.Buffer
	for range benchOutput / len(chunk) {
		ws.Write(wsFrame(bitFin|opBinary, nil, append([]byte{chanStdout}, chunk...)))
	}
	caller := newSPDYWriter(b).syn(1, corev1.StreamTypeStdout)
	sp := newSPDYWriter(b).frame(&spdy.SynReplyFrame{StreamId: 1, Headers: http.Header{}})
	for range benchOutput / len(chunk) {
		sp.data(1, chunk)
	}
	return map[string][]byte{"websocket": ws.Bytes(), "spdy": sp.buf.Bytes(), "spdy caller": caller.buf.Bytes()}
}

// discard is a sink that keeps nothing.
type discard struct{}

func (discard) output(source, []byte) error { return nil }
func (discard) resize(uint16, uint16) error { return nil }

func BenchmarkTap(b *testing.B) {
	streams := benchStreams(b)
	decoders := map[string]func(s sink) (fromMember, fromCaller decoder){
		"websocket": func(s sink) (decoder, decoder) {
			return newWSDecoder(false, memberChannels{s}), newWSDecoder(false, &callerChannels{sink: s})
		},
		"spdy": func(s sink) (decoder, decoder) {
			st := &spdyStreams{}
			m, _ := newSPDYDecoder(false, st, memberStreams{s})
			c, _ := newSPDYDecoder(true, st, &callerStreams{sink: s})
			return m, c
		},
	}
	for _, proto := range []string{"websocket", "spdy"} {
		member := streams[proto]
		run := func(b *testing.B, s sink) {
			fromMember, fromCaller := decoders[proto](s)
			if proto == "spdy" {
				require.NoError(b, fromCaller.feed(streams["spdy caller"]))
			}
			for p := member; len(p) > 0; {
				k := min(32<<10, len(p))
				if err := fromMember.feed(p[:k]); err != nil {
					b.Fatal(err)
				}
				p = p[k:]
			}
		}
		b.Run(proto+"/decode", func(b *testing.B) {
			b.SetBytes(benchOutput)
			for b.Loop() {
				run(b, discard{})
			}
		})
		b.Run(proto+"/record", func(b *testing.B) {
			b.SetBytes(benchOutput)
			r := newTestRecorder(b, Required, false)
			r.cfg.Log = hclog.NewNullLogger()
			for b.Loop() {
				s, err := r.Start(b.Context(), Meta{RequestID: "bench"})
				require.NoError(b, err)
				resp, _ := upgraded(b, "v5.channel.k8s.io")
				require.NoError(b, s.Tap(resp))
				run(b, s)
				s.Close()
				b.StopTimer()
				require.NoError(b, os.Remove(filepath.Join(r.dir, "bench.cast")))
				b.StartTimer()
			}
		})
	}
}
