package recording

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// The remote command protocols over websocket (channel.k8s.io, v2 to v5,
// and their base64 variants) send each write as one data message whose
// first payload byte names the channel (in base64 variants, the ASCII
// digit of the channel, then the data in standard base64):
//
//	0 stdin (caller → member)   1 stdout   2 stderr   3 error (a Status)
//	4 resize (caller → member, JSON {"Width":W,"Height":H})
//	255 close (v5, caller → member: [255, channel] ends that channel)
//
// A frame (RFC 6455 §5.2) is a 2-byte head — FIN, RSV1-3, opcode; MASK,
// 7-bit length — then a 16- or 64-bit length when the 7 bits say 126 or
// 127, then a 4-byte mask key when MASK is set (always from a client),
// then the payload. Messages may be fragmented into a first frame and
// continuations; control frames (opcode ≥ 8) may come between fragments
// and carry no channel data.
//
// wsDecoder reads these frames incrementally off a copy of the bytes and
// hands each channel's data to a wsHandler; it keeps only a frame head,
// a mask and a 3-byte base64 remainder between calls, and never
// allocates by a length read off the wire.

// Remote command channels.
const (
	chanStdin  = 0
	chanStdout = 1
	chanStderr = 2
	chanResize = 4
)

// Websocket opcodes and head bits.
const (
	opContinuation = 0x0
	opText         = 0x1
	opBinary       = 0x2
	opClose        = 0x8
	opPing         = 0x9
	opPong         = 0xa

	bitFin  = 0x80
	bitsRSV = 0x70
	bitMask = 0x80

	maxHeadLen = 2 + 8 + 4
	// scratchLen bounds the bytes unmasked or decoded at once.
	scratchLen = 4 << 10
)

var errWebsocketFrame = errors.New("malformed websocket frame")

// wsHandler receives a direction's channel data: data with each piece
// of ch's message, end when the message is over.
type wsHandler interface {
	data(ch byte, b []byte) error
	end(ch byte) error
}

type wsDecoder struct {
	base64 bool
	h      wsHandler

	head      []byte // the current frame's head so far
	remaining uint64 // its payload bytes still to come
	offset    uint64 // its payload bytes seen (for the mask)
	mask      [4]byte
	masked    bool
	control   bool // a control frame: its payload is skipped
	fin       bool

	inMessage bool // a data message's frames are coming
	chanKnown bool // its channel byte was read
	channel   byte
	b64       [4]byte // base64 characters short of a group
	b64n      int
	b64end    bool // a padded group ended the message's base64
	scratch   [scratchLen]byte
	decoded   [scratchLen/4*3 + 3]byte // a carried group and a scratch's worth
}

func newWSDecoder(base64 bool, h wsHandler) *wsDecoder {
	return &wsDecoder{base64: base64, h: h, head: make([]byte, 0, maxHeadLen)}
}

// feed reads b, the next bytes of one direction.
func (d *wsDecoder) feed(b []byte) error {
	for len(b) > 0 {
		if d.remaining == 0 {
			d.head = append(d.head, b[0])
			b = b[1:]
			done, err := d.headDone()
			if err != nil {
				return err
			}
			if done && d.remaining == 0 {
				if err := d.frameDone(); err != nil {
					return err
				}
			}
			continue
		}
		k := min(uint64(len(b)), d.remaining, scratchLen)
		if err := d.payload(b[:k]); err != nil {
			return err
		}
		b = b[k:]
		d.remaining -= k
		d.offset += k
		if d.remaining == 0 {
			if err := d.frameDone(); err != nil {
				return err
			}
		}
	}
	return nil
}

// headDone reports whether the head is complete, and if so starts its
// frame.
func (d *wsDecoder) headDone() (bool, error) {
	h := d.head
	if len(h) < 2 {
		return false, nil
	}
	n := 2
	switch h[1] &^ bitMask {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	masked := h[1]&bitMask != 0
	if masked {
		n += 4
	}
	if len(h) < n {
		return false, nil
	}
	var length uint64
	switch l := h[1] &^ bitMask; l {
	case 126:
		length = uint64(binary.BigEndian.Uint16(h[2:4]))
	case 127:
		length = binary.BigEndian.Uint64(h[2:10])
		if length>>63 != 0 {
			return false, fmt.Errorf("%w: 64-bit length with its top bit set", errWebsocketFrame)
		}
	default:
		length = uint64(l)
	}
	if h[0]&bitsRSV != 0 {
		// RSV1 is permessage-deflate's; Tap refuses to record a session
		// that negotiated an extension, so a set bit is a broken stream.
		return false, fmt.Errorf("%w: reserved bits set", errWebsocketFrame)
	}
	d.masked = masked
	if masked {
		copy(d.mask[:], h[n-4:n])
	}
	d.fin = h[0]&bitFin != 0
	op := h[0] & 0x0f
	switch op {
	case opClose, opPing, opPong:
		d.control = true
		if !d.fin || length > 125 {
			return false, fmt.Errorf("%w: control frame fragmented or longer than 125 bytes", errWebsocketFrame)
		}
	case opText, opBinary:
		if d.inMessage {
			return false, fmt.Errorf("%w: a new message inside a fragmented one", errWebsocketFrame)
		}
		d.control, d.inMessage, d.chanKnown, d.b64n, d.b64end = false, true, false, 0, false
	case opContinuation:
		if !d.inMessage {
			return false, fmt.Errorf("%w: continuation outside a message", errWebsocketFrame)
		}
		d.control = false
	default:
		return false, fmt.Errorf("%w: opcode %#x", errWebsocketFrame, op)
	}
	d.remaining, d.offset, d.head = length, 0, d.head[:0]
	return true, nil
}

// payload handles up to scratchLen payload bytes of the current frame.
func (d *wsDecoder) payload(b []byte) error {
	if d.control {
		return nil
	}
	p := d.scratch[:len(b)]
	copy(p, b) // b is the spliced buffer: never unmask in place
	if d.masked {
		for i := range p {
			p[i] ^= d.mask[(d.offset+uint64(i))%4]
		}
	}
	if !d.chanKnown {
		c := p[0]
		if d.base64 {
			c -= '0'
		}
		d.channel, d.chanKnown = c, true
		p = p[1:]
	}
	if len(p) == 0 {
		return nil
	}
	if !d.base64 {
		return d.h.data(d.channel, p)
	}
	return d.decode64(p)
}

// decode64 decodes base64 text across frame and read boundaries, by
// whole groups of four characters. Padding ends the message's text, as
// it would for a decoder given the whole message at once.
func (d *wsDecoder) decode64(p []byte) error {
	out := d.decoded[:0]
	// Decoders skip line breaks in base64 (the API server's too); p is
	// the decoder's own copy.
	p = slices.DeleteFunc(p, func(c byte) bool { return c == '\r' || c == '\n' })
	if len(p) == 0 {
		return nil
	}
	if d.b64end {
		return fmt.Errorf("%w: base64 after padding", errWebsocketFrame)
	}
	if d.b64n > 0 {
		k := copy(d.b64[d.b64n:], p)
		d.b64n += k
		p = p[k:]
		if d.b64n < 4 {
			return nil
		}
		n, err := base64.StdEncoding.Decode(d.decoded[:3], d.b64[:])
		if err != nil {
			return fmt.Errorf("%w: base64: %w", errWebsocketFrame, err)
		}
		out, d.b64n, d.b64end = d.decoded[:n], 0, d.b64[3] == '='
		if d.b64end && len(p) > 0 {
			return fmt.Errorf("%w: base64 after padding", errWebsocketFrame)
		}
	}
	whole := len(p) / 4 * 4
	n, err := base64.StdEncoding.Decode(d.decoded[len(out):], p[:whole])
	if err != nil {
		return fmt.Errorf("%w: base64: %w", errWebsocketFrame, err)
	}
	out = d.decoded[:len(out)+n]
	if whole > 0 {
		// Not otherwise: a group completed from the carry above may have
		// ended the text already.
		d.b64end = p[whole-1] == '='
	}
	if d.b64n = copy(d.b64[:], p[whole:]); d.b64end && d.b64n > 0 {
		return fmt.Errorf("%w: base64 after padding", errWebsocketFrame)
	}
	if len(out) == 0 {
		return nil
	}
	return d.h.data(d.channel, out)
}

// frameDone ends the current frame, and its message when it was the last.
func (d *wsDecoder) frameDone() error {
	if d.control || !d.fin {
		return nil
	}
	d.inMessage = false
	if !d.chanKnown {
		return nil // an empty message names no channel
	}
	if d.b64n > 0 {
		return fmt.Errorf("%w: base64 message of a length not a multiple of 4", errWebsocketFrame)
	}
	return d.h.end(d.channel)
}
