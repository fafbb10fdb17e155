package recording

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// decoder reads one direction of an upgraded connection.
type decoder interface {
	feed(b []byte) error
}

// protocol recognizes the member's 101 answer: the decoders of the
// member's and the caller's directions, and the protocol's name; ok
// false for a protocol the recording cannot read.
func protocol(resp *http.Response, sink sink) (fromMember, fromCaller decoder, name string, ok bool) {
	switch up := resp.Header.Get("Upgrade"); {
	case strings.EqualFold(up, "websocket"):
		name = strings.TrimSpace(resp.Header.Get("Sec-WebSocket-Protocol"))
		base64, known := wsChannelProtocol(name)
		if !known || resp.Header.Get("Sec-WebSocket-Extensions") != "" {
			return nil, nil, name, false
		}
		return newWSDecoder(base64, memberChannels{sink}), newWSDecoder(base64, &callerChannels{sink: sink}), name, true
	case strings.EqualFold(up, "SPDY/3.1"):
		name = up + " " + resp.Header.Get("X-Stream-Protocol-Version")
		streams := &spdyStreams{}
		m, err := newSPDYDecoder(false, streams, memberStreams{sink})
		if err != nil {
			return nil, nil, name, false
		}
		c, err := newSPDYDecoder(true, streams, &callerStreams{sink: sink})
		if err != nil {
			return nil, nil, name, false
		}
		return m, c, name, true
	default:
		return nil, nil, up, false
	}
}

// wsChannelProtocol recognizes the remote command subprotocols:
// [vN.]channel.k8s.io and [vN.]base64.channel.k8s.io.
func wsChannelProtocol(p string) (base64, ok bool) {
	if len(p) > 3 && p[0] == 'v' && p[1] >= '1' && p[1] <= '9' && p[2] == '.' {
		p = p[3:]
	}
	switch p {
	case "channel.k8s.io":
		return false, true
	case "base64.channel.k8s.io":
		return true, true
	}
	return false, false
}

// sink takes what the decoders find.
type sink interface {
	output(src source, b []byte) error
	resize(cols, rows uint16) error
}

// memberChannels: stdout and stderr are output; the error channel's
// Status and anything else are not the terminal's.
type memberChannels struct{ sink sink }

func (m memberChannels) data(ch byte, b []byte) error {
	switch ch {
	case chanStdout:
		return m.sink.output(srcStdout, b)
	case chanStderr:
		return m.sink.output(srcStderr, b)
	}
	return nil
}

func (memberChannels) end(byte) error { return nil }

// callerChannels: stdin is input; resize messages are sizes.
type callerChannels struct {
	sink   sink
	resize resizeLines
}

func (c *callerChannels) data(ch byte, b []byte) error {
	switch ch {
	case chanStdin:
		return c.sink.output(srcStdin, b)
	case chanResize:
		return c.resize.feed(b, c.sink)
	}
	return nil
}

func (c *callerChannels) end(ch byte) error {
	if ch == chanResize {
		return c.resize.flush(c.sink)
	}
	return nil
}

type memberStreams struct{ sink sink }

func (m memberStreams) data(kind string, b []byte) error {
	switch kind {
	case corev1.StreamTypeStdout:
		return m.sink.output(srcStdout, b)
	case corev1.StreamTypeStderr:
		return m.sink.output(srcStderr, b)
	}
	return nil
}

type callerStreams struct {
	sink   sink
	resize resizeLines
}

func (c *callerStreams) data(kind string, b []byte) error {
	switch kind {
	case corev1.StreamTypeStdin:
		return c.sink.output(srcStdin, b)
	case corev1.StreamTypeResize:
		return c.resize.feed(b, c.sink)
	}
	return nil
}

// maxResizeLine bounds a terminal size's JSON ({"Width":65535,"Height":65535}
// is 31 bytes); a longer line is skipped.
const maxResizeLine = 256

// resizeLines reads terminal sizes, one JSON object per line (client-go
// writes them with json.Encoder) or per websocket message.
type resizeLines struct {
	line     []byte
	overlong bool
}

func (r *resizeLines) feed(b []byte, s sink) error {
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		part := b
		if i >= 0 {
			part = b[:i]
		}
		if !r.overlong {
			if len(r.line)+len(part) > maxResizeLine {
				r.overlong, r.line = true, r.line[:0]
			} else {
				r.line = append(r.line, part...)
			}
		}
		if i < 0 {
			return nil
		}
		if err := r.flush(s); err != nil {
			return err
		}
		b = b[i+1:]
	}
	return nil
}

// flush ends a line: a size is recorded; what is not one is not.
func (r *resizeLines) flush(s sink) error {
	line, overlong := bytes.TrimSpace(r.line), r.overlong
	r.line, r.overlong = r.line[:0], false
	if overlong || len(line) == 0 {
		return nil
	}
	// client-go's remotecommand.TerminalSize, declared here rather than
	// imported with its package's SPDY and websocket clients.
	var size struct{ Width, Height uint16 }
	if json.Unmarshal(line, &size) != nil || size.Width == 0 || size.Height == 0 {
		return nil
	}
	return s.resize(size.Width, size.Height)
}

// tap is an upgraded connection's body whose bytes the recording reads
// on their way: Read brings the member's, Write takes the caller's. The
// caller's are decoded before they are passed on, so that a SPDY stream
// is named before the member can answer on it.
type tap struct {
	conn               io.ReadWriteCloser
	s                  *Session
	fromMember, caller decoder
}

func (t *tap) Read(p []byte) (int, error) {
	n, err := t.conn.Read(p)
	if n > 0 && t.s.recording() {
		if ferr := t.s.check(t.fromMember.feed(p[:n])); ferr != nil {
			return 0, ferr
		}
	}
	return n, err
}

func (t *tap) Write(p []byte) (int, error) {
	if t.s.recording() {
		if err := t.s.check(t.caller.feed(p)); err != nil {
			return 0, err
		}
	}
	return t.conn.Write(p)
}

func (t *tap) Close() error { return t.conn.Close() }
