package recording

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/moby/spdystream/spdy"
	corev1 "k8s.io/api/core/v1"
)

// Over SPDY/3.1 the caller opens one stream per channel with a SYN_STREAM
// whose (zlib-compressed) headers name it — streamType: error, stdin,
// stdout, stderr or resize — and each side sends DATA frames on them:
//
//	control frame: 1 | version (15 bits, 3) | type (16) | flags (8) | length (24) | payload
//	data frame:    0 | stream id (31 bits)  | flags (8) | length (24) | payload
//
// spdyDecoder reads the frame heads itself so that DATA payloads stream
// through without being held (a frame may be 16 MiB). In the caller's
// direction it collects each frame that carries a header block
// (SYN_STREAM, SYN_REPLY, HEADERS), bounded by maxHeaderFrame, and has
// spdy.Framer decode it: the header blocks of one direction are one zlib
// stream, so every such frame goes through the same Framer in order. The
// member's direction carries no stream names (SYN_REPLY) the recording
// needs, so its control frames are skipped.

const (
	spdyVersion   = 3
	spdyHeadLen   = 8
	synStreamType = 1
	synReplyType  = 2
	headersType   = 8

	// maxHeaderFrame bounds a header-carrying control frame the decoder
	// holds; kubectl's are about a hundred bytes.
	maxHeaderFrame = 16 << 10
	// maxSPDYStreams bounds the named streams of a session; kubectl opens
	// five.
	maxSPDYStreams = 16
)

var errSPDYFrame = errors.New("malformed SPDY frame")

// spdyStreams maps the session's stream ids to their streamType; both
// directions' decoders share it (the caller's direction fills it: its
// bytes are decoded before they reach the member, so before any reply).
type spdyStreams struct {
	mu    sync.Mutex
	kinds map[uint32]string
}

func (s *spdyStreams) add(id uint32, kind string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.kinds == nil {
		s.kinds = map[uint32]string{}
	}
	if _, ok := s.kinds[id]; !ok && len(s.kinds) >= maxSPDYStreams {
		return fmt.Errorf("%w: more than %d streams", errSPDYFrame, maxSPDYStreams)
	}
	s.kinds[id] = kind
	return nil
}

func (s *spdyStreams) kind(id uint32) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kinds[id]
}

// spdyHandler receives a direction's data by streamType.
type spdyHandler interface {
	data(kind string, b []byte) error
}

type spdyDecoder struct {
	caller  bool
	streams *spdyStreams
	h       spdyHandler

	head      [spdyHeadLen]byte
	headN     int
	remaining uint32
	data      bool   // a DATA frame: its payload goes to h
	stream    uint32 // its stream
	collect   bool   // a header frame: its bytes go to frame
	frame     []byte
	in        bytes.Buffer
	framer    *spdy.Framer
}

func newSPDYDecoder(caller bool, streams *spdyStreams, h spdyHandler) (*spdyDecoder, error) {
	d := &spdyDecoder{caller: caller, streams: streams, h: h}
	if caller {
		var err error
		d.framer, err = spdy.NewFramerWithOptions(nil, &d.in,
			spdy.WithMaxControlFramePayloadSize(maxHeaderFrame),
			spdy.WithMaxHeaderCount(64), spdy.WithMaxHeaderFieldSize(4<<10))
		if err != nil {
			return nil, err
		}
	}
	return d, nil
}

// feed reads b, the next bytes of one direction.
func (d *spdyDecoder) feed(b []byte) error {
	for len(b) > 0 {
		if d.headN < spdyHeadLen {
			k := copy(d.head[d.headN:], b)
			d.headN += k
			b = b[k:]
			if d.headN < spdyHeadLen {
				return nil
			}
			if err := d.start(); err != nil {
				return err
			}
			if d.remaining == 0 {
				if err := d.done(); err != nil {
					return err
				}
			}
			continue
		}
		k := min(uint32(len(b)), d.remaining)
		p := b[:k]
		b = b[k:]
		d.remaining -= k
		switch {
		case d.collect:
			d.frame = append(d.frame, p...)
		case d.data:
			if err := d.h.data(d.streams.kind(d.stream), p); err != nil {
				return err
			}
		}
		if d.remaining == 0 {
			if err := d.done(); err != nil {
				return err
			}
		}
	}
	return nil
}

// start begins the frame whose head was just read.
func (d *spdyDecoder) start() error {
	h := d.head[:]
	length := binary.BigEndian.Uint32(h[4:8]) & 0xffffff
	d.remaining, d.data, d.collect = length, false, false
	if h[0]&0x80 == 0 {
		d.data, d.stream = true, binary.BigEndian.Uint32(h[0:4])&0x7fffffff
		return nil
	}
	version, typ := binary.BigEndian.Uint16(h[0:2])&0x7fff, binary.BigEndian.Uint16(h[2:4])
	if version != spdyVersion {
		return fmt.Errorf("%w: version %d", errSPDYFrame, version)
	}
	if !d.caller || (typ != synStreamType && typ != synReplyType && typ != headersType) {
		return nil // skipped
	}
	if length > maxHeaderFrame {
		return fmt.Errorf("%w: a %d-byte header frame", errSPDYFrame, length)
	}
	d.collect = true
	d.frame = append(d.frame[:0], h...)
	return nil
}

// done ends the current frame: a collected header frame is decoded.
func (d *spdyDecoder) done() error {
	d.headN = 0
	if !d.collect {
		return nil
	}
	d.collect = false
	d.in.Reset()
	d.in.Write(d.frame)
	f, err := d.framer.ReadFrame()
	if err != nil {
		return fmt.Errorf("%w: %w", errSPDYFrame, err)
	}
	if d.in.Len() != 0 {
		return fmt.Errorf("%w: %d bytes of a header frame not decoded", errSPDYFrame, d.in.Len())
	}
	if syn, ok := f.(*spdy.SynStreamFrame); ok {
		return d.streams.add(uint32(syn.StreamId), syn.Headers.Get(corev1.StreamType))
	}
	return nil
}
