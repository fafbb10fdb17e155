package tunnel

import (
	"cmp"
	"context"
	"crypto/tls"
	"net"
	"sync"
)

// batchMax is how much a batchConn gathers before writing. The one under
// TLS gathers a batch's records: batchMax and their framing, well within
// recordSlack.
const (
	batchMax    = 64 << 10
	recordSlack = 1 << 10
)

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, batchMax+recordSlack); return &b }}

// batchConn sits between the websocket library and the agent's TLS
// connection. coder/websocket masks a client's payload into a fixed 4 KiB
// buffer and flushes it each time it fills, which on a bulk transfer means a
// TLS record and a syscall per 4 KiB; the library has no setting for it.
// While the session writes a message (hold … release), batchConn gathers
// those writes into up to 64 KiB; release writes what is left, so nothing
// waits once a message is complete. Writes outside a hold (the library's
// own control frames) go straight through.
//
// The agent's TLS connection sits on a second batchConn (records):
// crypto/tls writes each record of up to 16 KiB with a Write of its own,
// so a 64 KiB batch would be four syscalls; held for the flush, they go
// out in one.
type batchConn struct {
	net.Conn
	mu      sync.Mutex
	holding bool
	buf     *[]byte
	// limit is how much is gathered before writing (0: batchMax).
	limit int
	// records, when set, is the batchConn under Conn's TLS.
	records *batchConn
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
	limit := cmp.Or(c.limit, batchMax)
	n := 0
	for len(p) > 0 {
		room := limit - len(*c.buf)
		take := min(room, len(p))
		*c.buf = append(*c.buf, p[:take]...)
		p, n = p[take:], n+take
		if len(*c.buf) == limit {
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

// batchKey carries, through the upgrade request's context, where the
// transport's dial should leave the batchConn it made.
type batchKey struct{}

type batchSlot struct{ conn *batchConn }

// dialTLSBatched is the agent transport's TLS dial: TLS as usual, wrapped
// in a batchConn that the session then drives.
func dialTLSBatched(d *tls.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		// What tls.Dialer does, with a batchConn between TLS and TCP.
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
		rb := &batchConn{Conn: raw, limit: batchMax + recordSlack}
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
