// Command backhaul-test-kubelet serves the kubelet API's streaming and log
// endpoints for the end-to-end suite, with the upstream streaming library
// (k8s.io/cri-streaming): exec runs real host commands, attach joins a real
// long-running process per container, containerLogs serves real files (with
// follow), and port-forward dials real TCP ports on the node. It is a test
// tool: every "container" is the host, and it trusts the API server's
// client certificate, as a kubelet does.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"k8s.io/cri-streaming/pkg/streaming/portforward"
	"k8s.io/cri-streaming/pkg/streaming/remotecommand"
)

func main() {
	listen := flag.String("listen", ":10250", "kubelet API address")
	cert := flag.String("tls-cert-file", "", "serving certificate")
	key := flag.String("tls-key-file", "", "serving key")
	clientCA := flag.String("client-ca-file", "", "CA of the API server's kubelet client certificate (empty: no client auth)")
	logDir := flag.String("log-dir", "", "container logs are read from LOGDIR/NAMESPACE_POD_CONTAINER.log")
	flag.Parse()
	if err := run(*listen, *cert, *key, *clientCA, *logDir); err != nil {
		log.Fatal(err)
	}
}

const (
	idleTimeout           = 4 * time.Hour
	streamCreationTimeout = 30 * time.Second
)

func run(listen, cert, key, clientCA, logDir string) error {
	if cert == "" || key == "" || logDir == "" {
		return errors.New("--tls-cert-file, --tls-key-file and --log-dir are required")
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s: no certificates", clientCA)
		}
		tlsCfg.ClientCAs, tlsCfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	rt := newRuntime(ctx, logDir)
	defer rt.stop()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux.HandleFunc("GET /containerLogs/{ns}/{pod}/{container}", rt.serveLogs)
	mux.HandleFunc("/exec/{ns}/{pod}/{container}", func(w http.ResponseWriter, r *http.Request) {
		opts, err := remotecommand.NewOptions(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		remotecommand.ServeExec(w, r, rt, r.PathValue("pod"), "", r.PathValue("container"),
			r.URL.Query()["command"], opts, idleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
	})
	mux.HandleFunc("/attach/{ns}/{pod}/{container}", func(w http.ResponseWriter, r *http.Request) {
		opts, err := remotecommand.NewOptions(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		remotecommand.ServeAttach(w, r, rt, r.PathValue("ns")+"/"+r.PathValue("pod"), "", r.PathValue("container"),
			opts, idleTimeout, streamCreationTimeout, remotecommand.SupportedStreamingProtocols)
	})
	mux.HandleFunc("/portForward/{ns}/{pod}", func(w http.ResponseWriter, r *http.Request) {
		opts, err := portforward.NewV4Options(r)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		portforward.ServePortForward(w, r, rt, r.PathValue("pod"), "", opts, idleTimeout, streamCreationTimeout, portforward.SupportedProtocols)
	})
	srv := &http.Server{Addr: listen, Handler: mux, TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second}
	go func() { <-ctx.Done(); _ = srv.Close() }()
	log.Printf("test kubelet serving on %s", listen)
	if err := srv.ListenAndServeTLS(cert, key); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
