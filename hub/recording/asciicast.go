package recording

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"strconv"
	"time"
	"unicode/utf8"
)

// The size a player starts with when the session never said its own (no
// terminal, or output before the first resize).
const (
	defaultCols = 80
	defaultRows = 24
)

// header is the asciicast v2 header line.
type header struct {
	Version   int    `json:"version"`
	Width     int    `json:"width"`
	Height    int    `json:"height"`
	Timestamp int64  `json:"timestamp"`
	Command   string `json:"command,omitempty"`
	Title     string `json:"title,omitempty"`
	Backhaul  Meta   `json:"backhaul"`
}

// source is where an event's bytes came from.
type source uint8

const (
	srcStdout source = iota
	srcStderr
	srcStdin
	srcResize
	srcMarker
	textSources = srcStdin + 1 // sources whose bytes are terminal text
)

// event is one thing that happened in a session, at its offset from the
// session's start.
type event struct {
	at         time.Duration
	src        source
	data       []byte
	cols, rows uint16
}

// size is what an event holds the queue to (a resize's few bytes count
// as a small fixed cost so that a resize flood is bounded too).
func (e *event) size() int { return len(e.data) + 32 }

// castWriter writes an asciicast v2 stream: the header before the first
// event (so that a resize at once, as kubectl sends, becomes the initial
// size), then one JSON array per line. Times are seconds since the start.
type castWriter struct {
	w       *bufio.Writer
	hdr     header
	started bool
	// carry holds, per text source, the start of a UTF-8 sequence a chunk
	// ended in the middle of: events are JSON strings, where a split
	// sequence would become two U+FFFD on replay.
	carry [textSources][]byte
	buf   bytes.Buffer
	enc   *json.Encoder
	// last is the latest event time written: the two directions queue
	// their events concurrently, and a player wants times in order.
	last time.Duration
}

func newCastWriter(w io.Writer, hdr header) *castWriter {
	c := &castWriter{w: bufio.NewWriterSize(w, 32<<10), hdr: hdr}
	c.enc = json.NewEncoder(&c.buf)
	c.enc.SetEscapeHTML(false)
	return c
}

// write adds one event.
func (c *castWriter) write(e *event) error {
	if !c.started {
		c.started = true
		if e.src == srcResize {
			c.hdr.Width, c.hdr.Height = int(e.cols), int(e.rows)
			return c.line(c.hdr)
		}
		if err := c.line(c.hdr); err != nil {
			return err
		}
	}
	switch e.src {
	case srcResize:
		return c.event(e.at, "r", strconv.Itoa(int(e.cols))+"x"+strconv.Itoa(int(e.rows)))
	case srcMarker:
		return c.event(e.at, "m", string(e.data))
	}
	text := c.text(e.src, e.data)
	if len(text) == 0 {
		return nil
	}
	kind := "o"
	if e.src == srcStdin {
		kind = "i"
	}
	return c.event(e.at, kind, string(text))
}

// finish writes what the carries still hold (a sequence the session never
// finished: U+FFFD on replay) and flushes; the header too for a session
// that said nothing.
func (c *castWriter) finish(at time.Duration) error {
	if !c.started {
		c.started = true
		if err := c.line(c.hdr); err != nil {
			return err
		}
	}
	for src, rest := range c.carry {
		if len(rest) > 0 {
			kind := "o"
			if source(src) == srcStdin {
				kind = "i"
			}
			if err := c.event(at, kind, string(rest)); err != nil {
				return err
			}
			c.carry[src] = nil
		}
	}
	return c.w.Flush()
}

func (c *castWriter) flush() error { return c.w.Flush() }

// text is data after what src carried, less an unfinished UTF-8 sequence
// at its end, which src now carries.
func (c *castWriter) text(src source, data []byte) []byte {
	if len(c.carry[src]) > 0 {
		data = append(c.carry[src], data...)
	}
	done, rest := splitIncomplete(data)
	c.carry[src] = bytes.Clone(rest)
	return done
}

// splitIncomplete splits off a UTF-8 sequence b ends in the middle of.
func splitIncomplete(b []byte) (done, rest []byte) {
	for i := 1; i <= utf8.UTFMax-1 && i <= len(b); i++ {
		tail := b[len(b)-i:]
		if utf8.RuneStart(tail[0]) {
			if !utf8.FullRune(tail) {
				return b[:len(b)-i], tail
			}
			break
		}
	}
	return b, nil
}

// event writes [time, kind, data].
func (c *castWriter) event(at time.Duration, kind, data string) error {
	at = max(at, c.last)
	c.last = at
	c.buf.Reset()
	c.buf.WriteByte('[')
	c.buf.Write(strconv.AppendFloat(nil, at.Seconds(), 'f', 6, 64))
	c.buf.WriteString(`, "`)
	c.buf.WriteString(kind)
	c.buf.WriteString(`", `)
	if err := c.enc.Encode(data); err != nil { // with a newline
		return err
	}
	c.buf.Truncate(c.buf.Len() - 1)
	c.buf.WriteString("]\n")
	_, err := c.w.Write(c.buf.Bytes())
	return err
}

// line writes v as one JSON line.
func (c *castWriter) line(v any) error {
	c.buf.Reset()
	if err := c.enc.Encode(v); err != nil {
		return err
	}
	_, err := c.w.Write(c.buf.Bytes())
	return err
}
