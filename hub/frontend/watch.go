package frontend

import (
	"encoding/binary"
	"io"
	"mime"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
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
	websocketFrames // an upgraded exec, attach or port-forward (upgrade.go)
)

// Why the gateway ends an upgraded session (in its Status and close frame).
const (
	whyDraining = "the hub replica serving this session is shutting down; run the command again to reach another replica"
	whyBroken   = "the connection to the cluster was lost (its agent, or the hub replica carrying it, went away); run the command again"
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
	// For websocketFrames: the frames' state. tail holds the gateway's own
	// frames still to hand out once the body ends; done, that it has.
	ws   *wsState
	tail []byte
	done bool
	// leaving is set once the replica starts to drain.
	leaving *atomic.Bool
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
	if w.done {
		n := copy(p, w.tail)
		w.tail = w.tail[n:]
		if n == 0 {
			return 0, io.EOF
		}
		return n, nil
	}
	if w.pending == nil {
		var drained <-chan struct{}
		if w.atBoundary() {
			drained = w.drained // may end here, and only here
		}
		select {
		case c := <-w.data:
			w.pending = &c
		case <-drained:
			return w.end(p, 0, whyDraining)
		case <-w.stop: // closed under a Read: an upgrade's other direction ended
			return 0, io.ErrClosedPipe
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
	select {
	case w.ack <- struct{}{}:
	case <-w.stop:
	}
	switch {
	case c.err == nil && w.isDrained() && w.atBoundary():
		return w.end(p, n, whyDraining)
	case c.err != nil && w.atBoundary():
		// The stream broke between two events (the agent's session, or a
		// peer replica carrying it, went away). An API server may end a
		// watch at any time; ending it the same way lets the client resume
		// from its last resourceVersion through another route instead of
		// surfacing an error. Broken inside an event, it stays an error.
		// An upgraded session cannot resume, but it can end with a reason.
		why := whyBroken
		if w.leaving != nil && w.leaving.Load() {
			why = whyDraining // its agents let go of this replica as it drains
		}
		return w.end(p, n, why)
	}
	return n, c.err
}

// end ends the body at a boundary, after the n bytes just read into p
// and, for an upgraded session, the gateway's farewell frames (Read hands
// them out before io.EOF).
func (w *watchBody) end(p []byte, n int, why string) (int, error) {
	w.done = true
	if w.ws != nil {
		w.tail = w.ws.farewell(why)
	}
	if n == 0 {
		n = copy(p, w.tail)
		w.tail = w.tail[n:]
	}
	if len(w.tail) > 0 || (n > 0 && w.ws != nil) {
		return n, nil
	}
	return n, io.EOF
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
	switch w.framing {
	case jsonLines:
		return !w.inFrame
	case websocketFrames:
		return w.ws.atBoundary()
	}
	return len(w.header) == 0 && w.remaining == 0
}

// track advances the frame state over b.
func (w *watchBody) track(b []byte) {
	switch w.framing {
	case jsonLines:
		if len(b) > 0 {
			w.inFrame = b[len(b)-1] != '\n'
		}
		return
	case websocketFrames:
		w.ws.track(b)
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
	leaving  atomic.Bool // the replica drains: broken sessions say so
	mu       sync.Mutex
	draining bool
	bodies   map[*watchBody]struct{}
}

// wrap makes resp's body end cleanly on drain if it is a watch or an
// upgraded websocket session.
func (ws *watches) wrap(req *http.Request, resp *http.Response) {
	f, up := watchFraming(req, resp), upgradeState(resp)
	if up != nil {
		f = websocketFrames
	}
	if f == notWatch {
		return
	}
	wb := newWatchBody(resp.Body, f)
	wb.ws, wb.leaving = up, &ws.leaving
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
	u := &untrack{watchBody: wb, ws: ws}
	resp.Body = u
	if rw, ok := wb.body.(io.ReadWriter); ok && up != nil {
		// The proxy splices an upgrade only through a ReadWriteCloser.
		resp.Body = &upgraded{untrack: u, w: rw}
	}
}

// upgraded is an upgraded connection's body: reads are tracked, writes
// (the caller's direction) go straight to the member.
type upgraded struct {
	*untrack
	w io.Writer
}

func (u *upgraded) Write(p []byte) (int, error) { return u.w.Write(p) }

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
