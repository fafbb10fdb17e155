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

// sameWhereverCut feeds stream to one new decoder whole and to another
// cut in two at cut; both must fail, or both find the same.
func sameWhereverCut[F comparable](t *testing.T, stream []byte, cut uint16, newDecoder func() (decoder, func() map[F]string)) {
	whole, found := newDecoder()
	errWhole := whole.feed(stream)
	split, foundSplit := newDecoder()
	k := min(int(cut), len(stream))
	errSplit := split.feed(stream[:k])
	if errSplit == nil {
		errSplit = split.feed(stream[k:])
	}
	require.Equal(t, errWhole == nil, errSplit == nil, "%v / %v", errWhole, errSplit)
	if errWhole == nil {
		assert.Equal(t, found(), foundSplit())
	}
}

func FuzzWebsocketTap(f *testing.F) {
	mask := []byte{1, 2, 3, 4}
	f.Add(false, uint16(3), append(wsFrame(bitFin|opBinary, mask, []byte("\x00ls\r")), wsFrame(bitFin|opBinary, nil, []byte("\x01out"))...))
	f.Add(false, uint16(1), append(wsFrame(opBinary, mask, []byte("\x04{\"Width\"")), wsFrame(bitFin|opContinuation, mask, []byte(":80,\"Height\":24}\n"))...))
	f.Add(true, uint16(5), wsFrame(bitFin|opText, nil, []byte("1aGVsbG8=")))
	f.Add(false, uint16(2), []byte{bitFin | opBinary, 127, 0, 0, 0, 0, 0, 1, 0, 0, 1})
	f.Fuzz(func(t *testing.T, base64 bool, cut uint16, stream []byte) {
		sameWhereverCut(t, stream, cut, func() (decoder, func() map[byte]string) {
			found := channels{}
			return newWSDecoder(base64, found), found.strings
		})
	})
}

func FuzzSPDYTap(f *testing.F) {
	w := newSPDYWriter(f)
	w.syn(1, corev1.StreamTypeError).syn(3, corev1.StreamTypeStdin).syn(7, corev1.StreamTypeResize).data(3, "id\r").data(7, `{"Width":1,"Height":2}`+"\n")
	f.Add(uint16(9), w.buf.Bytes())
	r := newSPDYWriter(f)
	r.frame(&spdy.SynReplyFrame{StreamId: 1, Headers: http.Header{}}).data(1, "x").frame(&spdy.PingFrame{Id: 3})
	f.Add(uint16(3), r.buf.Bytes())
	f.Add(uint16(8), []byte{0x80, 3, 0, 1, 0, 0, 0, 10, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, cut uint16, stream []byte) {
		for _, caller := range []bool{true, false} {
			sameWhereverCut(t, stream, cut, func() (decoder, func() map[string]string) {
				found := streamsSeen{}
				d, err := newSPDYDecoder(caller, &spdyStreams{}, found)
				require.NoError(t, err)
				return d, found.strings
			})
		}
	})
}
