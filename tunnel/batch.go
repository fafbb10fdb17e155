package tunnel

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
)

// batchMax is how much a batchConn gathers before writing.
const batchMax = 64 << 10

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, batchMax); return &b }}

// batchConn sits between the websocket library and the agent's TLS
// connection. coder/websocket masks a client's payload into a fixed 4 KiB
// buffer and flushes it each time it fills, which on a bulk transfer means a
// TLS record and a syscall per 4 KiB; the library has no setting for it.
// While the session writes a message (hold … release), batchConn gathers
// those writes into up to 64 KiB; release writes what is left, so nothing
// waits once a message is complete. Writes outside a hold (the library's
// own control frames) go straight through.
type batchConn struct {
	net.Conn
	mu      sync.Mutex
	holding bool
	buf     *[]byte
	// records, when set, is the connection under Conn's TLS: a flush
	// goes out as one write of all its records.
	records *recordBatch
}

func (c *batchConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.holding {
		if err := c.flushLocked(); err != nil {
			return 0, err
		}
		return c.Conn.Write(p)
	}
	if c.buf == nil {
		c.buf = batchPool.Get().(*[]byte)
	}
	n := 0
	for len(p) > 0 {
		room := batchMax - len(*c.buf)
		take := min(room, len(p))
		*c.buf = append(*c.buf, p[:take]...)
		p, n = p[take:], n+take
		if len(*c.buf) == batchMax {
			if err := c.flushLocked(); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

func (c *batchConn) hold() {
	c.mu.Lock()
	c.holding = true
	c.mu.Unlock()
}

// release ends a hold and writes what was gathered.
func (c *batchConn) release() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.holding = false
	err := c.flushLocked()
	if c.buf != nil {
		*c.buf = (*c.buf)[:0]
		batchPool.Put(c.buf)
		c.buf = nil
	}
	return err
}

func (c *batchConn) flushLocked() error {
	if c.buf == nil || len(*c.buf) == 0 {
		return nil
	}
	if c.records != nil {
		c.records.hold()
	}
	_, err := c.Conn.Write(*c.buf)
	if c.records != nil {
		if rerr := c.records.release(); err == nil {
			err = rerr
		}
	}
	*c.buf = (*c.buf)[:0]
	return err
}

// recordBatch sits under the agent's TLS connection. crypto/tls writes
// each record of up to 16 KiB with a Write of its own, so a 64 KiB batch
// was four syscalls; while batchConn flushes (hold … release), the
// records are gathered and go out in one. Writes outside a hold (the
// handshake, alerts) go straight through.
type recordBatch struct {
	net.Conn
	mu      sync.Mutex
	holding bool
	buf     []byte
}

func (r *recordBatch) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.holding {
		return r.Conn.Write(p)
	}
	r.buf = append(r.buf, p...)
	return len(p), nil
}

func (r *recordBatch) hold() {
	r.mu.Lock()
	r.holding = true
	r.mu.Unlock()
}

func (r *recordBatch) release() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.holding = false
	if len(r.buf) == 0 {
		return nil
	}
	_, err := r.Conn.Write(r.buf)
	// Keep the buffer for the next flush unless it grew past a batch's
	// worth of records.
	if cap(r.buf) > 2*batchMax {
		r.buf = nil
	} else {
		r.buf = r.buf[:0]
	}
	return err
}

// batchKey carries, through the upgrade request's context, where the
// transport's dial should leave the batchConn it made.
type batchKey struct{}

type batchSlot struct{ conn *batchConn }

// dialTLSBatched is the agent transport's TLS dial: TLS as usual, wrapped
// in a batchConn that the session then drives.
func dialTLSBatched(d *tls.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		// What tls.Dialer does, with a recordBatch between TLS and TCP.
		var nd net.Dialer
		if d.NetDialer != nil {
			nd = *d.NetDialer
		}
		raw, err := nd.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		cfg := d.Config
		if cfg == nil {
			cfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		if cfg.ServerName == "" {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				host = addr
			}
			cfg = cfg.Clone()
			cfg.ServerName = host
		}
		rb := &recordBatch{Conn: raw}
		c := tls.Client(rb, cfg)
		if err := c.HandshakeContext(ctx); err != nil {
			_ = raw.Close()
			return nil, err
		}
		bc := &batchConn{Conn: c, records: rb}
		if slot, ok := ctx.Value(batchKey{}).(*batchSlot); ok {
			slot.conn = bc
		}
		return bc, nil
	}
}
