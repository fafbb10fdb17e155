package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"
)

// frameSlack covers yamux's 12-byte header and websocket framing on top of
// the largest yamux body, which never exceeds the stream window.
const frameSlack = 4096

// Accept upgrades an agent's request to a tunnel session. The caller has
// already authenticated the request. On a version mismatch it answers 426
// and returns an error wrapping ErrVersion; the response is then written.
func Accept(w http.ResponseWriter, r *http.Request, cfg *Config) (*Session, error) {
	if !offers(r.Header, Subprotocol) {
		w.Header().Set("Upgrade", "websocket")
		http.Error(w, fmt.Sprintf("unsupported tunnel protocol %q; this hub speaks %q",
			r.Header.Get("Sec-WebSocket-Protocol"), Subprotocol), http.StatusUpgradeRequired)
		return nil, fmt.Errorf("%w: agent offered %q", ErrVersion, r.Header.Get("Sec-WebSocket-Protocol"))
	}
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		Subprotocols:    []string{Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		return nil, fmt.Errorf("websocket upgrade: %w", err)
	}
	return sessionOver(c, false, cfg, nil)
}

func sessionOver(c *websocket.Conn, client bool, cfg *Config, batch *batchConn) (*Session, error) {
	// The session outlives the upgrade request, so the conn gets its own
	// context; Session.Close ends it.
	nc := websocket.NetConn(context.Background(), c, websocket.MessageBinary)
	// NetConn lifts the read limit; put a bound back so a peer cannot send
	// one endless message.
	c.SetReadLimit(int64(cfg.StreamWindow) + frameSlack)
	return newSession(eofConn{nc}, client, cfg, batch)
}

// eofConn reads the end of the peer's stream as a bare io.EOF. Without a
// close frame (the peer's TCP connection went first, as it can when the
// peer closes) coder/websocket reports it wrapped, and yamux, which keeps
// quiet only about a bare io.EOF, would log an agent's goodbye at ERROR.
// The session ends the same either way.
type eofConn struct{ net.Conn }

func (c eofConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if errors.Is(err, io.EOF) {
		err = io.EOF
	}
	return n, err
}

func offers(h http.Header, proto string) bool {
	for _, v := range h.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if strings.TrimSpace(p) == proto {
				return true
			}
		}
	}
	return false
}

// Dialer opens tunnels from an agent to a hub.
type Dialer struct {
	// URL is wss://host[:port]; Path is appended when it has no path.
	URL string
	// TLSConfig verifies the hub (and may carry a client certificate).
	TLSConfig *tls.Config
	// Header is sent on the upgrade: credentials, HeaderCluster.
	Header http.Header
	// Proxy picks an egress proxy; nil means http.ProxyFromEnvironment
	// (HTTPS_PROXY, NO_PROXY).
	Proxy func(*http.Request) (*url.URL, error)
	// HandshakeTimeout bounds TCP, TLS and the upgrade together.
	HandshakeTimeout time.Duration
	// Config tunes the session.
	Config *Config

	clientOnce sync.Once
	client     *http.Client
}

// Dial connects once. A refused upgrade is a *HandshakeError.
func (d *Dialer) Dial(ctx context.Context) (*Session, error) {
	cfg := d.Config
	if cfg == nil {
		cfg = DefaultConfig()
	}
	u, err := d.url()
	if err != nil {
		return nil, err
	}
	d.clientOnce.Do(func() {
		proxy := d.Proxy
		if proxy == nil {
			proxy = http.ProxyFromEnvironment
		}
		tlsCfg := d.TLSConfig.Clone()
		if tlsCfg == nil {
			tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		tlsCfg.NextProtos = []string{"http/1.1"}
		d.client = &http.Client{Transport: &http.Transport{
			Proxy:           proxy,
			TLSClientConfig: tlsCfg,
			// Used when no proxy is: through a proxy the transport does
			// its own TLS, and writes are simply not batched.
			DialTLSContext:      dialTLSBatched(&tls.Dialer{Config: tlsCfg}),
			TLSHandshakeTimeout: d.timeout(),
			ForceAttemptHTTP2:   false,
			DisableCompression:  true,
			// Every dial is a new connection. An accepted upgrade is
			// hijacked anyway; a refused one (a draining replica's 503)
			// must not be pooled, or the next dial goes back to the same
			// replica instead of letting the load balancer pick again.
			DisableKeepAlives: true,
		}}
	})
	ctx, cancel := context.WithTimeout(ctx, d.timeout())
	defer cancel()
	slot := &batchSlot{}
	ctx = context.WithValue(ctx, batchKey{}, slot)
	header := d.Header.Clone()
	if header == nil {
		header = http.Header{}
	}
	header.Set(HeaderAgentTime, time.Now().UTC().Format(time.RFC3339Nano))
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPClient:      d.client,
		HTTPHeader:      header,
		Subprotocols:    []string{Subprotocol},
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		if resp != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			return nil, &HandshakeError{StatusCode: resp.StatusCode, Reason: reason(resp), RetryAfter: retryAfter(resp)}
		}
		return nil, fmt.Errorf("dial hub %s: %w", u, err)
	}
	if c.Subprotocol() != Subprotocol {
		_ = c.Close(websocket.StatusProtocolError, "subprotocol not negotiated")
		return nil, fmt.Errorf("%w: hub chose subprotocol %q", ErrVersion, c.Subprotocol())
	}
	sess, err := sessionOver(c, true, cfg, slot.conn)
	if err != nil {
		return nil, err
	}
	sess.replica, sess.replicas = replicaHeaders(resp.Header)
	return sess, nil
}

// replicaHeaders reads HeaderHubReplica and HeaderHubReplicas off the
// hub's 101 answer. They only steer how many sessions an agent keeps and
// where, so anything unusable reads as absent.
func replicaHeaders(h http.Header) (name string, n int) {
	name = strings.TrimSpace(h.Get(HeaderHubReplica))
	if len(name) > MaxReplicaLen || !printable(name) {
		name = ""
	}
	if v, err := strconv.ParseUint(strings.TrimSpace(h.Get(HeaderHubReplicas)), 10, 16); err == nil {
		n = int(v)
	}
	return name, n
}

func (d *Dialer) timeout() time.Duration {
	if d.HandshakeTimeout > 0 {
		return d.HandshakeTimeout
	}
	return 15 * time.Second
}

func (d *Dialer) url() (string, error) {
	u, err := url.Parse(d.URL)
	if err != nil {
		return "", fmt.Errorf("hub url: %w", err)
	}
	switch u.Scheme {
	case "wss", "https":
		u.Scheme = "wss"
	case "ws", "http":
		u.Scheme = "ws"
	default:
		return "", fmt.Errorf("hub url %q: scheme must be wss or https", d.URL)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = Path
	}
	return u.String(), nil
}

// reason extracts the hub's one-line explanation from a refused upgrade.
func reason(resp *http.Response) string {
	if resp.Body == nil {
		return ""
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if err != nil && !errors.Is(err, io.EOF) && len(b) == 0 {
		return ""
	}
	return strings.TrimSpace(string(b))
}
