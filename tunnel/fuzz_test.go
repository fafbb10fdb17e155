package tunnel

import (
	"bytes"
	"encoding"
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// Both decoders read bytes a peer controls. The properties: they never
// panic, never consume more than the largest message, fail only with the
// documented errors, and whatever they accept re-encodes to exactly the
// bytes they consumed (so there is one encoding per message).

func FuzzReadRequest(f *testing.F) {
	seeds := []Request{
		{Kind: KindAPIServer},
		{Kind: KindAPIServer, RequestID: "0123456789abcdef", Timeout: 10 * time.Second},
		{Kind: KindTCP, Address: "10.0.0.1:5432", Timeout: time.Millisecond},
		{Kind: KindTCP, Address: "[fd00::1]:443", RequestID: "r"},
		{Kind: KindTCP, Address: strings.Repeat("h", MaxAddressLen-len(":65535")) + ":65535", RequestID: strings.Repeat("i", MaxRequestIDLen)},
		{Kind: KindAPIServerTCP, RequestID: "c"},
		{Kind: KindDrain},
		{Kind: KindDrain, Timeout: 30 * time.Second, RequestID: "drain"},
		{Kind: KindHubAPIServer, RequestID: "hub"},
	}
	extra := [][]byte{
		{Version, byte(KindTCP), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
		rawRequest(Version, KindAPIServer, 0, "", "10.0.0.1:443"),
		rawRequest(Version, KindDrain, 30000, "", "10.0.0.1:443"),
		rawRequest(Version, Kind(0xff), 0, "", ""),
	}
	fuzzDecoder(f, seeds, extra, MaxRequestLen, ReadRequest)
}

func FuzzReadReply(f *testing.F) {
	seeds := []Reply{
		{Code: CodeOK},
		{Code: CodeRefused, Message: "connection refused"},
		{Code: CodeNotAllowed, Message: "not in the allowlist"},
		{Code: CodeInternal, Message: strings.Repeat("m", MaxMessageLen)},
	}
	fuzzDecoder(f, seeds, [][]byte{{Version, 0xff, 0xff, 0xff}}, MaxReplyLen, ReadReply)
}

// fuzzDecoder seeds f with each message, each with trailing bytes, each
// cut short, the empty input and extra; then checks the properties above.
func fuzzDecoder[T encoding.BinaryMarshaler](f *testing.F, seeds []T, extra [][]byte, maxLen int, read func(io.Reader) (T, error)) {
	for _, m := range seeds {
		b, err := m.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(append(b, "trailing payload"...))
		f.Add(b[:len(b)-1])
	}
	f.Add([]byte{})
	for _, e := range extra {
		f.Add(e)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		m, err := read(r)
		consumed := len(data) - r.Len()
		if consumed > maxLen {
			t.Fatalf("consumed %d bytes, more than the maximum %d", consumed, maxLen)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) &&
				!errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unexpected error type: %v", err)
			}
			return
		}
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded %+v does not re-encode: %v", m, err)
		}
		if !bytes.Equal(b, data[:consumed]) {
			t.Fatalf("re-encoding %+v gives %x, consumed %x", m, b, data[:consumed])
		}
	})
}
