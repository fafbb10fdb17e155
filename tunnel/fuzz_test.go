package tunnel

import (
	"bytes"
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
	}
	for _, r := range seeds {
		b, err := r.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(append(b, "trailing payload"...))
		f.Add(b[:len(b)-1])
	}
	f.Add([]byte{})
	f.Add([]byte{Version, byte(KindTCP), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
	f.Add(rawRequest(Version, KindAPIServer, 0, "", "10.0.0.1:443"))

	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		req, err := ReadRequest(r)
		consumed := len(data) - r.Len()
		if consumed > MaxRequestLen {
			t.Fatalf("consumed %d bytes, more than MaxRequestLen %d", consumed, MaxRequestLen)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) &&
				!errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unexpected error type: %v", err)
			}
			return
		}
		b, err := req.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded %+v does not re-encode: %v", req, err)
		}
		if !bytes.Equal(b, data[:consumed]) {
			t.Fatalf("re-encoding %+v gives %x, consumed %x", req, b, data[:consumed])
		}
	})
}

func FuzzReadReply(f *testing.F) {
	seeds := []Reply{
		{Code: CodeOK},
		{Code: CodeRefused, Message: "connection refused"},
		{Code: CodeNotAllowed, Message: "not in the allowlist"},
		{Code: CodeInternal, Message: strings.Repeat("m", MaxMessageLen)},
	}
	for _, r := range seeds {
		b, err := r.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(append(b, "trailing payload"...))
		f.Add(b[:len(b)-1])
	}
	f.Add([]byte{})
	f.Add([]byte{Version, 0xff, 0xff, 0xff})

	f.Fuzz(func(t *testing.T, data []byte) {
		r := bytes.NewReader(data)
		reply, err := ReadReply(r)
		consumed := len(data) - r.Len()
		if consumed > MaxReplyLen {
			t.Fatalf("consumed %d bytes, more than MaxReplyLen %d", consumed, MaxReplyLen)
		}
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrVersion) &&
				!errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unexpected error type: %v", err)
			}
			return
		}
		b, err := reply.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded %+v does not re-encode: %v", reply, err)
		}
		if !bytes.Equal(b, data[:consumed]) {
			t.Fatalf("re-encoding %+v gives %x, consumed %x", reply, b, data[:consumed])
		}
	})
}
