package frontend

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"net/http"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/streaming/pkg/httpstream"

	"backhaul.io/backhaul/hub/auth"
	"backhaul.io/backhaul/hub/recording"
)

// An exec, attach or port-forward session over websocket that the hub has
// to end — its replica is going away, or the stream to the member broke —
// must end the way an API server ends one: a close frame, after a Status
// on the error channel saying why, so that kubectl reports the reason
// instead of "websocket: close 1006 (abnormal closure): unexpected EOF".
// The member's direction is a sequence of websocket frames; the gateway
// tracks where each ends (as it does for watch events) and, at a frame
// boundary, adds its own frames before closing. A session the member
// ended itself (it sent a close frame) passes through untouched.
//
// The websocket framing is read here rather than with a websocket library
// because the gateway only splices bytes and must neither buffer nor
// re-frame the member's frames: the libraries terminate the protocol.

// Websocket opcodes (RFC 6455 §5.2).
const (
	wsContinuation = 0x0
	wsText         = 0x1
	wsBinary       = 0x2
	wsClose        = 0x8
)

// errorChannel is the remote command protocols' error stream: v4 and v5
// send a metav1.Status on it when the command ends.
const errorChannel = 3

// wsState follows the member's frames of one upgraded connection.
type wsState struct {
	// statusOnClose: the subprotocol carries a Status on the error channel
	// (v4/v5, binary or base64); base64 says which.
	statusOnClose bool
	base64        bool

	header    []byte // the current frame's header bytes read so far
	remaining uint64 // payload bytes of the current frame still to come
	mask      [4]byte
	masked    bool
	offset    uint64 // payload bytes of the current frame seen
	// firstByte: the next payload byte starts a data message (its channel).
	firstByte bool
	// inMessage: a fragmented data message is unfinished, so no data frame
	// may be added (a close frame, a control frame, still may).
	inMessage bool
	// closed: the member sent a close frame; errored: it sent something
	// on the error channel. Either way the gateway adds nothing of its own.
	closed, errored bool
}

// upgradeState recognizes a websocket upgrade answer and its subprotocol.
func upgradeState(resp *http.Response) *wsState {
	if resp.StatusCode != http.StatusSwitchingProtocols || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") {
		return nil
	}
	switch strings.TrimSpace(resp.Header.Get("Sec-WebSocket-Protocol")) {
	case "v5.channel.k8s.io", "v4.channel.k8s.io":
		return &wsState{statusOnClose: true}
	case "v4.base64.channel.k8s.io":
		return &wsState{statusOnClose: true, base64: true}
	default: // v1–v3 channels, port-forward, or another protocol: a close frame only
		return &wsState{}
	}
}

func (s *wsState) atBoundary() bool { return len(s.header) == 0 && s.remaining == 0 }

// track advances the frame state over b, bytes from the member.
func (s *wsState) track(b []byte) {
	for len(b) > 0 {
		if s.remaining > 0 {
			if s.firstByte {
				c := b[0]
				if s.masked {
					c ^= s.mask[s.offset%4]
				}
				if s.base64 {
					c -= '0'
				}
				s.errored = s.errored || c == errorChannel
				s.firstByte = false
			}
			k := min(uint64(len(b)), s.remaining)
			s.remaining -= k
			s.offset += k
			b = b[k:]
			continue
		}
		s.header = append(s.header, b[0])
		b = b[1:]
		s.headerDone()
	}
}

// headerDone completes the current header if all its bytes are in.
func (s *wsState) headerDone() {
	h := s.header
	if len(h) < 2 {
		return
	}
	n := 2
	switch h[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	masked := h[1]&0x80 != 0
	if masked {
		n += 4
	}
	if len(h) < n {
		return
	}
	var length uint64
	switch l := h[1] & 0x7f; l {
	case 126:
		length = uint64(binary.BigEndian.Uint16(h[2:4]))
	case 127:
		length = binary.BigEndian.Uint64(h[2:10])
	default:
		length = uint64(l)
	}
	s.masked = masked
	if masked {
		copy(s.mask[:], h[n-4:n])
	}
	fin, op := h[0]&0x80 != 0, h[0]&0x0f
	switch op {
	case wsText, wsBinary:
		s.firstByte = length > 0
		s.inMessage = !fin
	case wsContinuation:
		s.inMessage = !fin
	case wsClose:
		s.closed = true
	}
	s.remaining, s.offset, s.header = length, 0, s.header[:0]
}

// farewell is what the gateway sends before it closes the connection at a
// frame boundary: nothing if the member closed it, else a Status saying
// why on the error channel (where the protocol has one and a data frame
// may be sent) and a close frame.
func (s *wsState) farewell(why string) []byte {
	if s.closed {
		return nil
	}
	var out []byte
	if s.statusOnClose && !s.errored && !s.inMessage {
		st, _ := json.Marshal(metav1.Status{
			TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"},
			Status:   metav1.StatusFailure, Reason: metav1.StatusReasonServiceUnavailable,
			Code: http.StatusServiceUnavailable, Message: why,
		})
		if s.base64 {
			out = wsFrame(out, wsText, append([]byte{'0' + errorChannel}, base64.StdEncoding.AppendEncode(nil, st)...))
		} else {
			out = wsFrame(out, wsBinary, append([]byte{errorChannel}, st...))
		}
	}
	// 1000: the session is over, normally, as far as the protocol goes;
	// the Status says why.
	reason := why
	if len(reason) > 120 { // a control frame's payload is at most 125 bytes
		reason = reason[:120]
	}
	return wsFrame(out, wsClose, append(binary.BigEndian.AppendUint16(nil, 1000), reason...))
}

// wsFrame appends one unmasked, final frame (a server's) to out.
func wsFrame(out []byte, op byte, payload []byte) []byte {
	out = append(out, 0x80|op)
	switch n := len(payload); {
	case n < 126:
		out = append(out, byte(n))
	case n <= 0xffff:
		out = append(out, 126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, 127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	return append(out, payload...)
}

// Exec and attach sessions are recorded (hub/recording) when the hub is
// run with --recording: the recording starts before the request goes to
// the member, so that a required recording that cannot be made refuses
// the session before it begins, and taps the upgraded connection once
// the member has switched protocols (Session.Tap, in ModifyResponse).

// ReasonRecording counts, in backhaul_hub_errors_total, sessions refused
// because --recording=required could not record them.
const ReasonRecording = "recording_unavailable"

// whyNotRecorded is what a caller refused by required recording reads;
// the cause (a path, a disk error) is in the hub's log, not for callers.
const whyNotRecorded = "this hub records exec and attach sessions (--recording=required) and cannot record this one now; try again later, or ask the hub's operator"

// startRecording starts recording r when it is an exec or attach
// session and the gateway records them; the Session is nil otherwise. An
// error means the session must be refused (503, ReasonRecording).
func (g *Gateway) startRecording(r *http.Request, cluster string, u *auth.User, id string) (*recording.Session, error) {
	if g.cfg.Recorder == nil || !httpstream.IsUpgradeRequest(r) {
		return nil, nil
	}
	meta, ok := recording.Describe(r.PathValue("path"), r.URL.Query())
	if !ok {
		return nil, nil
	}
	meta.RequestID, meta.User, meta.Groups, meta.Cluster = id, u.Name, u.Groups, cluster
	return g.cfg.Recorder.Start(r.Context(), meta)
}
