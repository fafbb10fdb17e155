package frontend

import (
	"encoding/binary"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
)

// Watches carried by a replica that is going away must end the way an API
// server ends them at their timeout: cleanly, between two events, so that
// client-go re-lists or re-watches (through another replica) without an
// error. Cutting the stream mid-event would surface "unexpected EOF".
//
// A watch response is a sequence of frames: one JSON object per line for
// application/json, or a 4-byte big-endian length and that many bytes for
// the protobuf stream. watchBody passes bytes through as they come and
// tracks where the current frame ends; once draining, it ends the body at
// the next frame boundary (at once if it is at one). An upstream that
// breaks at a boundary ends the watch cleanly too.

// framing says how a watch response's events are delimited.
type framing int

const (
	notWatch framing = iota
	jsonLines
	lengthPrefixed
)

// watchFraming recognizes a watch response and its framing.
func watchFraming(req *http.Request, resp *http.Response) framing {
	q := req.URL.Query()
	if q.Get("watch") != "true" && q.Get("watch") != "1" && !strings.Contains(req.URL.Path, "/watch/") {
		return notWatch
	}
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	switch {
	case err != nil:
		return notWatch
	case mt == "application/json":
		return jsonLines
	case mt == "application/vnd.kubernetes.protobuf" && params["stream"] == "watch":
		return lengthPrefixed
	default:
		return notWatch
	}
}

// watchBody ends a watch at a frame boundary once its gateway drains. A
// goroutine of its own reads the upstream body (it ends with the body), so
// that a Read waiting for the next event can be ended without closing the
// upstream under a read that may be taking half an event.
type watchBody struct {
	body    io.ReadCloser
	framing framing
	data    chan chunk    // from pump
	ack     chan struct{} // to pump: the chunk is consumed
	stop    chan struct{} // closed by Close
	drained chan struct{} // closed by drain
	once    sync.Once
	dOnce   sync.Once

	// Read's state; only Read touches it.
	pending *chunk
	// For jsonLines: inFrame is whether bytes of an unfinished line were
	// passed on. For lengthPrefixed: header holds the bytes of a length
	// read so far, remaining the payload bytes still to come.
	inFrame   bool
	header    []byte
	remaining uint32
}

type chunk struct {
	b   []byte
	err error
}

func newWatchBody(body io.ReadCloser, f framing) *watchBody {
	w := &watchBody{body: body, framing: f, data: make(chan chunk), ack: make(chan struct{}), stop: make(chan struct{}), drained: make(chan struct{})}
	go w.pump()
	return w
}

// pump reads upstream into one buffer, handing each read to Read.
func (w *watchBody) pump() {
	buf := make([]byte, 32<<10)
	for {
		n, err := w.body.Read(buf)
		select {
		case w.data <- chunk{b: buf[:n], err: err}:
		case <-w.stop:
			return
		}
		select {
		case <-w.ack:
		case <-w.stop:
			return
		}
		if err != nil {
			return
		}
	}
}

func (w *watchBody) Read(p []byte) (int, error) {
	if w.pending == nil {
		var drained <-chan struct{}
		if w.atBoundary() {
			drained = w.drained // may end here, and only here
		}
		select {
		case c := <-w.data:
			w.pending = &c
		case <-drained:
			return 0, io.EOF
		}
	}
	c := w.pending
	n := copy(p, c.b)
	c.b = c.b[n:]
	w.track(p[:n])
	if len(c.b) > 0 {
		return n, nil
	}
	w.pending = nil
	w.ack <- struct{}{}
	switch {
	case c.err == nil && w.isDrained() && w.atBoundary():
		return n, io.EOF
	case c.err != nil && w.atBoundary():
		// The stream broke between two events (the agent's session, or a
		// peer replica carrying it, went away). An API server may end a
		// watch at any time; ending it the same way lets the client resume
		// from its last resourceVersion through another route instead of
		// surfacing an error. Broken inside an event, it stays an error.
		return n, io.EOF
	}
	return n, c.err
}

func (w *watchBody) isDrained() bool {
	select {
	case <-w.drained:
		return true
	default:
		return false
	}
}

func (w *watchBody) Close() error {
	var err error
	w.once.Do(func() {
		close(w.stop)
		err = w.body.Close()
	})
	return err
}

// drain ends the body at the next boundary.
func (w *watchBody) drain() { w.dOnce.Do(func() { close(w.drained) }) }

func (w *watchBody) atBoundary() bool {
	if w.framing == jsonLines {
		return !w.inFrame
	}
	return len(w.header) == 0 && w.remaining == 0
}

// track advances the frame state over b.
func (w *watchBody) track(b []byte) {
	if w.framing == jsonLines {
		if len(b) > 0 {
			w.inFrame = b[len(b)-1] != '\n'
		}
		return
	}
	for len(b) > 0 {
		if w.remaining > 0 {
			k := min(uint32(len(b)), w.remaining)
			w.remaining -= k
			b = b[k:]
			continue
		}
		k := min(4-len(w.header), len(b))
		w.header = append(w.header, b[:k]...)
		b = b[k:]
		if len(w.header) == 4 {
			w.remaining = binary.BigEndian.Uint32(w.header)
			w.header = w.header[:0]
		}
	}
}

// watches tracks the watch bodies a gateway is carrying.
type watches struct {
	mu       sync.Mutex
	draining bool
	bodies   map[*watchBody]struct{}
}

// wrap makes resp's body end cleanly on drain if it is a watch.
func (ws *watches) wrap(req *http.Request, resp *http.Response) {
	f := watchFraming(req, resp)
	if f == notWatch {
		return
	}
	wb := newWatchBody(resp.Body, f)
	ws.mu.Lock()
	if ws.bodies == nil {
		ws.bodies = map[*watchBody]struct{}{}
	}
	ws.bodies[wb] = struct{}{}
	draining := ws.draining
	ws.mu.Unlock()
	if draining {
		wb.drain()
	}
	resp.Body = &untrack{watchBody: wb, ws: ws}
}

// drain ends every watch carried now or later at its next boundary.
func (ws *watches) drain() {
	ws.mu.Lock()
	ws.draining = true
	bodies := make([]*watchBody, 0, len(ws.bodies))
	for wb := range ws.bodies {
		bodies = append(bodies, wb)
	}
	ws.mu.Unlock()
	for _, wb := range bodies {
		wb.drain()
	}
}

// untrack forgets a watch body when the proxy closes it.
type untrack struct {
	*watchBody
	ws *watches
}

func (u *untrack) Close() error {
	u.ws.mu.Lock()
	delete(u.ws.bodies, u.watchBody)
	u.ws.mu.Unlock()
	return u.watchBody.Close()
}
