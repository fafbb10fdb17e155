package recording

import (
	"net/http"
	"testing"

	"github.com/moby/spdystream/spdy"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
)

// The decoders read bytes from callers and members. Whatever they are
// given, they must not panic or allocate by a length off the wire, and
// being incremental, must find the same things however the bytes are cut
// into reads.

func FuzzWebsocketTap(f *testing.F) {
	mask := []byte{1, 2, 3, 4}
	f.Add(false, uint16(3), append(wsFrame(bitFin|opBinary, mask, []byte("\x00ls\r")), wsFrame(bitFin|opBinary, nil, []byte("\x01out"))...))
	f.Add(false, uint16(1), append(wsFrame(opBinary, mask, []byte("\x04{\"Width\"")), wsFrame(bitFin|opContinuation, mask, []byte(":80,\"Height\":24}\n"))...))
	f.Add(true, uint16(5), wsFrame(bitFin|opText, nil, []byte("1aGVsbG8=")))
	f.Add(false, uint16(2), []byte{bitFin | opBinary, 127, 0, 0, 0, 0, 0, 1, 0, 0, 1})
	f.Fuzz(func(t *testing.T, base64 bool, cut uint16, stream []byte) {
		whole, split := channels{}, channels{}
		errWhole := newWSDecoder(base64, whole).feed(stream)
		d := newWSDecoder(base64, split)
		k := min(int(cut), len(stream))
		errSplit := d.feed(stream[:k])
		if errSplit == nil {
			errSplit = d.feed(stream[k:])
		}
		require.Equal(t, errWhole == nil, errSplit == nil, "%v / %v", errWhole, errSplit)
		if errWhole == nil {
			assert.Equal(t, whole.strings(), split.strings())
		}
	})
}

func FuzzSPDYTap(f *testing.F) {
	w := newSPDYWriter(&testing.T{})
	w.syn(1, corev1.StreamTypeError).syn(3, corev1.StreamTypeStdin).syn(7, corev1.StreamTypeResize).data(3, "id\r").data(7, `{"Width":1,"Height":2}`+"\n")
	f.Add(uint16(9), w.buf.Bytes())
	r := newSPDYWriter(&testing.T{})
	r.frame(&spdy.SynReplyFrame{StreamId: 1, Headers: http.Header{}}).data(1, "x").frame(&spdy.PingFrame{Id: 3})
	f.Add(uint16(3), r.buf.Bytes())
	f.Add(uint16(8), []byte{0x80, 3, 0, 1, 0, 0, 0, 10, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, cut uint16, stream []byte) {
		for _, caller := range []bool{true, false} {
			whole, split := streamsSeen{}, streamsSeen{}
			d, err := newSPDYDecoder(caller, &spdyStreams{}, whole)
			require.NoError(t, err)
			errWhole := d.feed(stream)
			d, err = newSPDYDecoder(caller, &spdyStreams{}, split)
			require.NoError(t, err)
			k := min(int(cut), len(stream))
			errSplit := d.feed(stream[:k])
			if errSplit == nil {
				errSplit = d.feed(stream[k:])
			}
			require.Equal(t, errWhole == nil, errSplit == nil, "%v / %v", errWhole, errSplit)
			if errWhole == nil {
				assert.Equal(t, whole.strings(), split.strings())
			}
		}
	})
}
