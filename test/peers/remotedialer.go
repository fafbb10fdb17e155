package main

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/rancher/remotedialer"
	"github.com/sirupsen/logrus"
)

// Headers the remotedialer agents present: their client key and the shared
// token the server's Authorizer checks.
const (
	rdHeaderID    = "X-Tunnel-ID"
	rdHeaderToken = "X-Tunnel-Token"
	rdPath        = "/connect"
)

// runRDServer is remotedialer's server as deployed: its http.Handler on a
// TLS listener (agents dial wss://…/connect), with an HTTP CONNECT front end
// on TCP and on a Unix socket that dials every target through the tunnel of
// one client, and a plain admin listener answering /clients (sessions
// connected) and /goroutines.
func runRDServer(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("rdserver", flag.ContinueOnError)
	listen := fs.String("listen", "127.0.0.1:0", "TLS address agents dial")
	certFile := fs.String("cert", "", "serving certificate (PEM)")
	keyFile := fs.String("key", "", "serving key (PEM)")
	connectTCP := fs.String("connect-listen", "", "TCP address of the CONNECT front end (empty: off)")
	connectUDS := fs.String("connect-uds", "", "Unix socket of the CONNECT front end (empty: off)")
	admin := fs.String("admin", "", "plain-HTTP address for /clients and /goroutines")
	tokenFile := fs.String("token-file", "", "file holding the agents' shared token")
	client := fs.String("client", "bench", "client key whose tunnel CONNECT targets are dialled through")
	if err := fs.Parse(args); err != nil {
		return err
	}
	logrus.SetLevel(logrus.WarnLevel)
	token, err := os.ReadFile(*tokenFile)
	if err != nil {
		return err
	}
	token = []byte(strings.TrimSpace(string(token)))
	rd := remotedialer.New(func(req *http.Request) (string, bool, error) {
		id := req.Header.Get(rdHeaderID)
		ok := id != "" && subtle.ConstantTimeCompare([]byte(req.Header.Get(rdHeaderToken)), token) == 1
		return id, ok, nil
	}, remotedialer.DefaultErrorWriter)
	cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.Handle(rdPath, rd)
	srv := &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	errc := make(chan error, 4)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	defer srv.Close()

	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		return rd.Dialer(*client)(ctx, "tcp", addr)
	}
	for _, l := range []struct{ network, addr string }{{"tcp", *connectTCP}, {"unix", *connectUDS}} {
		if l.addr == "" {
			continue
		}
		if l.network == "unix" {
			_ = os.Remove(l.addr)
		}
		cl, err := net.Listen(l.network, l.addr)
		if err != nil {
			return err
		}
		defer cl.Close()
		go func() { errc <- serveConnect(ctx, cl, dial) }()
	}
	if *admin != "" {
		amux := http.NewServeMux()
		amux.HandleFunc("GET /clients", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, strconv.Itoa(len(rd.ListClients())))
		})
		amux.HandleFunc("GET /goroutines", func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, strconv.Itoa(runtime.NumGoroutine()))
		})
		asrv := &http.Server{Addr: *admin, Handler: amux, ReadHeaderTimeout: 10 * time.Second}
		go func() { errc <- asrv.ListenAndServe() }()
		defer asrv.Close()
	}
	select {
	case <-ctx.Done():
		return nil
	case err := <-errc:
		return err
	}
}

// runRDAgent is remotedialer's client as deployed: it keeps one session to
// the server and dials, for the server, only the address it allows.
func runRDAgent(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("rdagent", flag.ContinueOnError)
	url := fs.String("url", "", "wss://HOST:PORT/connect of the server")
	caFile := fs.String("ca", "", "CA of the server's certificate (PEM)")
	id := fs.String("id", "bench", "client key")
	tokenFile := fs.String("token-file", "", "file holding the shared token")
	allow := fs.String("allow", "", "the one host:port the server may dial through this agent")
	if err := fs.Parse(args); err != nil {
		return err
	}
	logrus.SetLevel(logrus.WarnLevel)
	token, err := os.ReadFile(*tokenFile)
	if err != nil {
		return err
	}
	d, err := rdWebsocketDialer(*caFile)
	if err != nil {
		return err
	}
	h := rdHeaders(*id, strings.TrimSpace(string(token)))
	auth := func(proto, address string) bool { return proto == "tcp" && address == *allow }
	for ctx.Err() == nil {
		err := remotedialer.ConnectToProxy(ctx, *url, h, auth, d, nil)
		if err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintln(os.Stderr, "rdagent: session ended:", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
	return nil
}

func rdHeaders(id, token string) http.Header {
	h := http.Header{}
	h.Set(rdHeaderID, id)
	h.Set(rdHeaderToken, token)
	return h
}

// rdWebsocketDialer trusts the CA in caFile and never uses a proxy.
func rdWebsocketDialer(caFile string) (*websocket.Dialer, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no certificates", caFile)
	}
	return &websocket.Dialer{
		TLSClientConfig:  &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		HandshakeTimeout: remotedialer.HandshakeTimeOut,
	}, nil
}
