package tunnel

import (
	"encoding/binary"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type recordConn struct {
	net.Conn
	writes [][]byte
}

func (r *recordConn) Write(p []byte) (int, error) {
	r.writes = append(r.writes, append([]byte(nil), p...))
	return len(p), nil
}

func yamuxHeader(typ uint8, length uint32) []byte {
	h := make([]byte, yamuxHeaderLen)
	h[1] = typ
	binary.BigEndian.PutUint32(h[8:12], length)
	return h
}

func TestFrameConnCoalesces(t *testing.T) {
	cases := []struct {
		name       string
		frames     [][]byte
		wantWrites []int // lengths of the underlying writes
	}{
		{"data header joins its body", [][]byte{yamuxHeader(yamuxTypeData, 5), []byte("hello")}, []int{17}},
		{"window update passes alone", [][]byte{yamuxHeader(1, 1024)}, []int{12}},
		{"empty data frame (FIN) is not held", [][]byte{yamuxHeader(yamuxTypeData, 0)}, []int{12}},
		{"large body is not copied", [][]byte{yamuxHeader(yamuxTypeData, coalesceMax), make([]byte, coalesceMax)}, []int{12, coalesceMax}},
		{"mixed", [][]byte{yamuxHeader(2, 0), yamuxHeader(yamuxTypeData, 3), []byte("abc"), yamuxHeader(1, 9)}, []int{12, 15, 12}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rc := &recordConn{}
			fc := &frameConn{Conn: rc}
			for _, f := range tc.frames {
				n, err := fc.Write(f)
				require.NoError(t, err)
				assert.Equal(t, len(f), n)
			}
			var got []int
			for _, w := range rc.writes {
				got = append(got, len(w))
			}
			assert.Equal(t, tc.wantWrites, got)
		})
	}
}

func TestBatchConnGathersHeldWrites(t *testing.T) {
	rc := &recordConn{}
	bc := &batchConn{Conn: rc}

	_, err := bc.Write([]byte("control"))
	require.NoError(t, err)
	bc.hold()
	for range 40 { // 40 × 4 KiB = 160 KiB: two full batches and a rest
		n, err := bc.Write(make([]byte, 4096))
		require.NoError(t, err)
		require.Equal(t, 4096, n)
	}
	require.NoError(t, bc.release())
	_, err = bc.Write([]byte("after"))
	require.NoError(t, err)

	var got []int
	for _, w := range rc.writes {
		got = append(got, len(w))
	}
	assert.Equal(t, []int{7, batchMax, batchMax, 160<<10 - 2*batchMax, 5}, got)
}

// recordSplitter writes like crypto/tls: a Write of its own per 16 KiB
// record.
type recordSplitter struct{ net.Conn }

func (s recordSplitter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		m, err := s.Conn.Write(p[:min(len(p), 16<<10)])
		n += m
		if err != nil {
			return n, err
		}
		p = p[m:]
	}
	return n, nil
}

// TestRecordBatchJoinsOneFlushsRecords: the records of one batch go out
// in one write; writes outside a flush (a handshake, an alert) go
// straight through.
func TestBatchConnJoinsOneFlushsRecords(t *testing.T) {
	rc := &recordConn{}
	rb := &batchConn{Conn: rc, limit: batchMax + recordSlack}
	bc := &batchConn{Conn: recordSplitter{rb}, records: rb}

	_, err := rb.Write([]byte("handshake"))
	require.NoError(t, err)
	bc.hold()
	payload := make([]byte, batchMax+100)
	for i := range payload {
		payload[i] = byte(i)
	}
	_, err = bc.Write(payload)
	require.NoError(t, err)
	require.NoError(t, bc.release())

	var got []int
	var joined []byte
	for _, w := range rc.writes[1:] {
		got = append(got, len(w))
		joined = append(joined, w...)
	}
	assert.Equal(t, "handshake", string(rc.writes[0]))
	assert.Equal(t, []int{batchMax, 100}, got, "a full batch's four records in one write, then the rest")
	assert.Equal(t, payload, joined)
}
