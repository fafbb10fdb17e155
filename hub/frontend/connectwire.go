package frontend

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"backhaul.io/backhaul/hub/auth"
)

// authenticate takes a client certificate or Proxy-Authorization (Bearer,
// or Basic whose password is a token, which is what client-go's proxy-url
// with user info sends).
func (p *Connect) authenticate(r *http.Request) (*auth.User, error) {
	clone := r.Clone(r.Context())
	clone.Header = http.Header{}
	if pa := r.Header.Get("Proxy-Authorization"); pa != "" {
		if r.TLS == nil && !p.cfg.InsecureCredentials {
			return nil, errors.New("refusing Proxy-Authorization sent in plaintext: use the TLS CONNECT listener (--connect-tls, an https proxy-url) or start the hub with --connect-insecure-credentials")
		}
		tok, ok := auth.Bearer(pa)
		if !ok {
			tok, ok = basicPassword(pa)
		}
		if !ok {
			return nil, errors.New("Proxy-Authorization must be Bearer TOKEN or Basic with the token as password")
		}
		clone.Header.Set("Authorization", "Bearer "+tok)
	}
	u, ok, err := p.cfg.Authn.Authenticate(clone)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, errors.New("proxy authentication required: send Proxy-Authorization or a client certificate")
	}
	return u, nil
}

func basicPassword(h string) (string, bool) {
	const prefix = "Basic "
	if len(h) <= len(prefix) || !strings.EqualFold(h[:len(prefix)], prefix) {
		return "", false
	}
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(h[len(prefix):]))
	if err != nil {
		return "", false
	}
	_, pw, ok := strings.Cut(string(b), ":")
	return pw, ok && pw != ""
}

// refuseConnect answers with code and msg as both the reason phrase and
// the body, since CONNECT clients usually show only the status line.
func refuseConnect(w http.ResponseWriter, code int, msg string) {
	phrase := strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e {
			return ' '
		}
		return r
	}, msg)
	if len(phrase) > 200 {
		phrase = phrase[:200]
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		http.Error(w, msg, code)
		return
	}
	defer conn.Close()
	hdr := ""
	for k, vs := range w.Header() {
		for _, v := range vs {
			hdr += k + ": " + v + "\r\n"
		}
	}
	body := msg + "\n"
	fmt.Fprintf(brw, "HTTP/1.1 %d %s\r\n%sContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		code, phrase, hdr, len(body), body)
	_ = brw.Flush()
}

// bufferedConn reads what the server had buffered before the raw conn.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) {
	if c.r != nil && c.r.Buffered() > 0 {
		return c.r.Read(p)
	}
	c.r = nil
	return c.Conn.Read(p)
}

// CloseWrite keeps half-close working through the wrapper.
func (c *bufferedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
