package tunnel

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSizes pins the wire layout documented in doc.go; a change here is a
// protocol change and needs a new Version.
func TestSizes(t *testing.T) {
	assert.Equal(t, 8, requestFixedLen)
	assert.Equal(t, 4, replyFixedLen)
	assert.Equal(t, 8+64+255, MaxRequestLen)
	assert.Equal(t, 4+1024, MaxReplyLen)
	// The length fields must be able to carry the largest values.
	assert.LessOrEqual(t, MaxRequestIDLen, 1<<(8*sizeOfIDLen)-1)
	assert.LessOrEqual(t, MaxAddressLen, 1<<(8*sizeOfAddrLen)-1)
	assert.LessOrEqual(t, MaxMessageLen, 1<<(8*sizeOfMsgLen)-1)
}

func TestRequestRoundTrip(t *testing.T) {
	longHost := strings.Repeat("a", MaxAddressLen-len(":65535"))
	tests := []struct {
		name string
		req  Request
	}{
		{name: "apiserver", req: Request{Kind: KindAPIServer}},
		{name: "apiserver with id and timeout", req: Request{Kind: KindAPIServer, RequestID: "0123456789abcdef", Timeout: 10 * time.Second}},
		{name: "tcp ipv4", req: Request{Kind: KindTCP, Address: "10.0.0.1:5432"}},
		{name: "tcp ipv6", req: Request{Kind: KindTCP, Address: "[fd00::1]:443"}},
		{name: "tcp name", req: Request{Kind: KindTCP, Address: "db.internal.example:5432", RequestID: "req-1"}},
		{name: "max id", req: Request{Kind: KindAPIServer, RequestID: strings.Repeat("x", MaxRequestIDLen)}},
		{name: "max address", req: Request{Kind: KindTCP, Address: longHost + ":65535"}},
		{name: "max id and address", req: Request{Kind: KindTCP, Address: longHost + ":65535", RequestID: strings.Repeat("~", MaxRequestIDLen)}},
		{name: "one millisecond", req: Request{Kind: KindAPIServer, Timeout: time.Millisecond}},
		{name: "max timeout", req: Request{Kind: KindAPIServer, Timeout: (1<<32 - 1) * time.Millisecond}},
		{name: "drain with grace", req: Request{Kind: KindDrain, Timeout: 30 * time.Second, RequestID: "drain-1"}},
		{name: "drain without grace", req: Request{Kind: KindDrain}},
		{name: "hub apiserver", req: Request{Kind: KindHubAPIServer, RequestID: "hub-1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.req.MarshalBinary()
			require.NoError(t, err)
			assert.Equal(t, requestFixedLen+len(tc.req.RequestID)+len(tc.req.Address), len(b))
			assert.LessOrEqual(t, len(b), MaxRequestLen)
			assert.Equal(t, Version, b[0])
			assert.Equal(t, byte(tc.req.Kind), b[1])

			got, err := ReadRequest(bytes.NewReader(b))
			require.NoError(t, err)
			assert.Equal(t, tc.req, got)
		})
	}
}

// TestRequestTimeoutResolution documents that the wire carries milliseconds.
func TestRequestTimeoutResolution(t *testing.T) {
	b, err := Request{Kind: KindAPIServer, Timeout: 1500 * time.Microsecond}.MarshalBinary()
	require.NoError(t, err)
	got, err := ReadRequest(bytes.NewReader(b))
	require.NoError(t, err)
	assert.Equal(t, time.Millisecond, got.Timeout)
}

func TestRequestMarshalRejects(t *testing.T) {
	tests := []struct {
		name string
		req  Request
	}{
		{name: "zero kind", req: Request{}},
		{name: "unknown kind", req: Request{Kind: 9}},
		{name: "apiserver with address", req: Request{Kind: KindAPIServer, Address: "10.0.0.1:443"}},
		{name: "drain with address", req: Request{Kind: KindDrain, Address: "10.0.0.1:443"}},
		{name: "hub apiserver with address", req: Request{Kind: KindHubAPIServer, Address: "10.0.0.1:443"}},
		{name: "drain with negative grace", req: Request{Kind: KindDrain, Timeout: -time.Second}},
		{name: "tcp without address", req: Request{Kind: KindTCP}},
		{name: "tcp without port", req: Request{Kind: KindTCP, Address: "10.0.0.1"}},
		{name: "tcp without host", req: Request{Kind: KindTCP, Address: ":443"}},
		{name: "tcp port zero", req: Request{Kind: KindTCP, Address: "10.0.0.1:0"}},
		{name: "tcp port too big", req: Request{Kind: KindTCP, Address: "10.0.0.1:65536"}},
		{name: "tcp port name", req: Request{Kind: KindTCP, Address: "10.0.0.1:https"}},
		{name: "tcp bare ipv6", req: Request{Kind: KindTCP, Address: "fd00::1:443"}},
		{name: "tcp address too long", req: Request{Kind: KindTCP, Address: strings.Repeat("a", MaxAddressLen-len(":1")+1) + ":1"}},
		{name: "id too long", req: Request{Kind: KindAPIServer, RequestID: strings.Repeat("x", MaxRequestIDLen+1)}},
		{name: "id with newline", req: Request{Kind: KindAPIServer, RequestID: "a\nb"}},
		{name: "id with nul", req: Request{Kind: KindAPIServer, RequestID: "a\x00"}},
		{name: "id with del", req: Request{Kind: KindAPIServer, RequestID: "a\x7f"}},
		{name: "id with utf-8", req: Request{Kind: KindAPIServer, RequestID: "é"}},
		{name: "address with control byte", req: Request{Kind: KindTCP, Address: "a\tb:80"}},
		{name: "negative timeout", req: Request{Kind: KindAPIServer, Timeout: -time.Millisecond}},
		{name: "timeout too long", req: Request{Kind: KindAPIServer, Timeout: (1 << 32) * time.Millisecond}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.req.MarshalBinary()
			require.ErrorIs(t, err, ErrMalformed)
			assert.Nil(t, b)
		})
	}
}

// rawRequest builds request bytes by hand, bypassing validation.
func rawRequest(version uint8, kind Kind, timeoutMS uint32, id, addr string) []byte {
	b := []byte{version, byte(kind), byte(len(id)), byte(len(addr)), 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[4:], timeoutMS)
	return append(append(b, id...), addr...)
}

func TestReadRequestRejects(t *testing.T) {
	valid := rawRequest(Version, KindTCP, 1000, "id", "10.0.0.1:80")
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{name: "empty", in: nil, want: io.EOF},
		{name: "truncated fixed part", in: valid[:requestFixedLen-1], want: io.ErrUnexpectedEOF},
		{name: "truncated id", in: valid[:requestFixedLen+1], want: io.ErrUnexpectedEOF},
		{name: "truncated address", in: valid[:len(valid)-1], want: io.ErrUnexpectedEOF},
		{name: "fixed part only", in: valid[:requestFixedLen], want: io.EOF},
		{name: "version 0", in: rawRequest(0, KindTCP, 0, "", "10.0.0.1:80"), want: ErrVersion},
		{name: "version 2", in: rawRequest(2, KindTCP, 0, "", "10.0.0.1:80"), want: ErrVersion},
		{name: "unknown kind", in: rawRequest(Version, 7, 0, "", ""), want: ErrMalformed},
		{name: "zero kind", in: rawRequest(Version, 0, 0, "", ""), want: ErrMalformed},
		{name: "over-long id", in: rawRequest(Version, KindAPIServer, 0, strings.Repeat("x", MaxRequestIDLen+1), ""), want: ErrMalformed},
		{name: "non-printable id", in: rawRequest(Version, KindAPIServer, 0, "a\x01b", ""), want: ErrMalformed},
		{name: "non-printable address", in: rawRequest(Version, KindTCP, 0, "", "a\xffb:80"), want: ErrMalformed},
		{name: "address not host:port", in: rawRequest(Version, KindTCP, 0, "", "10.0.0.1"), want: ErrMalformed},
		{name: "address bad port", in: rawRequest(Version, KindTCP, 0, "", "10.0.0.1:0"), want: ErrMalformed},
		{name: "apiserver with address", in: rawRequest(Version, KindAPIServer, 0, "", "10.0.0.1:443"), want: ErrMalformed},
		{name: "drain with address", in: rawRequest(Version, KindDrain, 30000, "", "hub-1:443"), want: ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadRequest(bytes.NewReader(tc.in))
			require.ErrorIs(t, err, tc.want)
		})
	}
}

// countingReader serves an endless stream of src repeated and counts what
// was read from it.
type countingReader struct {
	src []byte
	n   int
}

func (r *countingReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = r.src[(r.n+i)%len(r.src)]
	}
	r.n += len(p)
	return len(p), nil
}

func TestReadRequestBoundedRead(t *testing.T) {
	t.Run("trailing bytes stay in the reader", func(t *testing.T) {
		req := Request{Kind: KindTCP, Address: "10.0.0.1:80", RequestID: "abc", Timeout: time.Second}
		b, err := req.MarshalBinary()
		require.NoError(t, err)
		r := bytes.NewReader(append(b, "payload"...))
		got, err := ReadRequest(r)
		require.NoError(t, err)
		assert.Equal(t, req, got)
		rest, err := io.ReadAll(r)
		require.NoError(t, err)
		assert.Equal(t, "payload", string(rest))
	})
	tests := []struct {
		name string
		src  []byte
	}{
		// The largest lengths the fields can claim, then filler forever.
		{name: "largest claimed lengths", src: rawRequest(Version, KindTCP, 0, strings.Repeat("a", MaxRequestIDLen), strings.Repeat("b", 255))},
		{name: "over-long id claimed", src: []byte{Version, byte(KindTCP), 0xff, 0xff, 0, 0, 0, 0}},
		{name: "all 0xff", src: []byte{0xff}},
		{name: "all version bytes", src: []byte{Version}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := &countingReader{src: tc.src}
			_, _ = ReadRequest(r)
			assert.LessOrEqual(t, r.n, MaxRequestLen)
		})
	}
}

func TestReplyRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		in   Reply
		want Reply // what comes back, if not in
	}{
		{name: "ok", in: Reply{Code: CodeOK}},
		{name: "refused", in: Reply{Code: CodeRefused, Message: "connection refused"}},
		{name: "timeout", in: Reply{Code: CodeTimeout, Message: "i/o timeout"}},
		{name: "not allowed", in: Reply{Code: CodeNotAllowed, Message: "10.0.0.1:22 is not in the agent's allowlist"}},
		{name: "bad request", in: Reply{Code: CodeBadRequest, Message: "unknown stream kind"}},
		{name: "unavailable", in: Reply{Code: CodeUnavailable}},
		{name: "internal", in: Reply{Code: CodeInternal, Message: "boom"}},
		{name: "max message", in: Reply{Code: CodeRefused, Message: strings.Repeat("m", MaxMessageLen)}},
		{name: "binary message", in: Reply{Code: CodeRefused, Message: "\x00\xff\n"}},
		{
			name: "over-long message is cut",
			in:   Reply{Code: CodeRefused, Message: strings.Repeat("m", MaxMessageLen+100)},
			want: Reply{Code: CodeRefused, Message: strings.Repeat("m", MaxMessageLen)},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.want
			if want == (Reply{}) {
				want = tc.in
			}
			b, err := tc.in.MarshalBinary()
			require.NoError(t, err)
			assert.LessOrEqual(t, len(b), MaxReplyLen)
			assert.Equal(t, replyFixedLen+len(want.Message), len(b))

			r := bytes.NewReader(append(b, "trailing"...))
			got, err := ReadReply(r)
			require.NoError(t, err)
			assert.Equal(t, want, got)
			assert.Equal(t, len("trailing"), r.Len(), "ReadReply read past the reply")
		})
	}
}

func TestReplyMarshalRejectsUnknownCode(t *testing.T) {
	_, err := Reply{Code: maxCode + 1}.MarshalBinary()
	require.ErrorIs(t, err, ErrMalformed)
}

func rawReply(version uint8, code Code, msgLen uint16, msg string) []byte {
	b := []byte{version, byte(code), 0, 0}
	binary.BigEndian.PutUint16(b[2:], msgLen)
	return append(b, msg...)
}

func TestReadReplyRejects(t *testing.T) {
	tests := []struct {
		name string
		in   []byte
		want error
	}{
		{name: "empty", in: nil, want: io.EOF},
		{name: "truncated fixed part", in: []byte{Version, 0, 0}, want: io.ErrUnexpectedEOF},
		{name: "truncated message", in: rawReply(Version, CodeRefused, 10, "short"), want: io.ErrUnexpectedEOF},
		{name: "missing message", in: rawReply(Version, CodeRefused, 10, ""), want: io.EOF},
		{name: "bad version", in: rawReply(0, CodeOK, 0, ""), want: ErrVersion},
		{name: "unknown code", in: rawReply(Version, maxCode+1, 0, ""), want: ErrMalformed},
		{name: "code 255", in: rawReply(Version, 255, 0, ""), want: ErrMalformed},
		{name: "over-long message", in: rawReply(Version, CodeRefused, MaxMessageLen+1, strings.Repeat("m", MaxMessageLen+1)), want: ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadReply(bytes.NewReader(tc.in))
			require.ErrorIs(t, err, tc.want)
		})
	}
}

func TestReadReplyBoundedRead(t *testing.T) {
	for _, src := range [][]byte{{0xff}, {Version, byte(CodeRefused), 0xff, 0xff}, rawReply(Version, CodeRefused, MaxMessageLen, "")} {
		r := &countingReader{src: src}
		_, _ = ReadReply(r)
		assert.LessOrEqual(t, r.n, MaxReplyLen)
	}
}

func TestKindAndCodeStrings(t *testing.T) {
	assert.Equal(t, "apiserver", KindAPIServer.String())
	assert.Equal(t, "tcp", KindTCP.String())
	assert.Equal(t, "apiserver-tcp", KindAPIServerTCP.String())
	assert.Equal(t, "drain", KindDrain.String())
	assert.Equal(t, "hub-apiserver", KindHubAPIServer.String())
	assert.Equal(t, "kind(9)", Kind(9).String())
	names := map[string]bool{}
	for c := CodeOK; c <= maxCode; c++ {
		assert.NotContains(t, c.String(), "code(", "code %d has no name", c)
		assert.False(t, names[c.String()], "duplicate name %q", c)
		names[c.String()] = true
	}
	assert.Equal(t, "code(200)", Code(200).String())
}

func TestCodeHTTPStatus(t *testing.T) {
	tests := []struct {
		code Code
		want int
	}{
		{CodeOK, 200}, {CodeRefused, 502}, {CodeTimeout, 504}, {CodeNotAllowed, 403},
		{CodeBadRequest, 400}, {CodeUnavailable, 503}, {CodeInternal, 502}, {Code(99), 502},
	}
	for _, tc := range tests {
		t.Run(tc.code.String(), func(t *testing.T) {
			assert.Equal(t, tc.want, tc.code.HTTPStatus())
		})
	}
}

func TestErrors(t *testing.T) {
	t.Run("dial error", func(t *testing.T) {
		var err error = &DialError{Code: CodeRefused, Message: "connection refused"}
		var de *DialError
		require.ErrorAs(t, errors.Join(errors.New("context"), err), &de)
		assert.Equal(t, CodeRefused, de.Code)
		assert.NotEmpty(t, (&DialError{Code: CodeTimeout}).Error())
	})
	tests := []struct {
		status    int
		permanent bool
	}{
		{401, true}, {403, true}, {426, true}, {400, false}, {404, false}, {500, false}, {502, false}, {503, false},
	}
	for _, tc := range tests {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			he := &HandshakeError{StatusCode: tc.status, Reason: "because"}
			assert.Equal(t, tc.permanent, he.Permanent())
			assert.Equal(t, tc.permanent, IsPermanent(errors.Join(errors.New("wrapped"), he)))
		})
	}
	assert.False(t, IsPermanent(nil))
	assert.False(t, IsPermanent(io.EOF))
}

func TestRetryAfter(t *testing.T) {
	tests := []struct {
		name   string
		status int
		header []string
		want   time.Duration
	}{
		{name: "503 seconds", status: 503, header: []string{"5"}, want: 5 * time.Second},
		{name: "429 seconds", status: 429, header: []string{"30"}, want: 30 * time.Second},
		{name: "zero", status: 503, header: []string{"0"}},
		{name: "spaces", status: 503, header: []string{" 7 "}, want: 7 * time.Second},
		{name: "capped", status: 503, header: []string{"99999999"}, want: MaxRetryAfter},
		{name: "absent", status: 503},
		{name: "date", status: 503, header: []string{"Wed, 21 Oct 2015 07:28:00 GMT"}},
		{name: "negative", status: 503, header: []string{"-5"}},
		{name: "fraction", status: 503, header: []string{"1.5"}},
		{name: "overflow", status: 503, header: []string{"99999999999999999999"}},
		{name: "other status", status: 502, header: []string{"5"}},
		{name: "permanent status", status: 401, header: []string{"5"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := &http.Response{StatusCode: tc.status, Header: http.Header{}}
			for _, v := range tc.header {
				resp.Header.Add("Retry-After", v)
			}
			assert.Equal(t, tc.want, retryAfter(resp))
		})
	}
	t.Run("error text names it", func(t *testing.T) {
		he := &HandshakeError{StatusCode: 503, Reason: "draining", RetryAfter: 5 * time.Second}
		assert.Contains(t, he.Error(), "5s")
		assert.False(t, he.Permanent())
	})
}
