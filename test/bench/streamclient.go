package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/streaming/pkg/httpstream"
)

// The exec and port-forward clients speak SPDY through client-go's
// transport/spdy, the layer under remotecommand.NewSPDYExecutor and
// portforward.New. Those two packages import gorilla/websocket for their
// websocket variants, which this module does not require; the few lines of
// protocol below are what they would do over SPDY.
const (
	execProtocol    = "v4.channel.k8s.io"  // remotecommand.StreamProtocolV4Name
	forwardProtocol = "portforward.k8s.io" // portforward.PortForwardProtocolV1Name
)

// streamTarget is an API server, as whom to call it, and the pod to reach;
// JSON so a child in the member's namespace gets the same.
type streamTarget struct {
	Host      string `json:"host"` // base URL: the member's, or the hub's /clusters/NAME
	Token     string `json:"token"`
	CAPEM     []byte `json:"caPEM"`
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
}

func (s streamTarget) restConfig() *rest.Config {
	return &rest.Config{
		Host:            s.Host,
		BearerToken:     s.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: s.CAPEM},
		Proxy:           noProxy,
		// Only log streams go through client-go's rate limiter; never let
		// it be what is measured.
		QPS: 1000, Burst: 1000,
	}
}

// streamClient opens exec and port-forward sessions to one pod.
type streamClient struct {
	target   streamTarget
	clients  *kubernetes.Clientset
	upgrader spdy.Upgrader
	http     *http.Client
}

func newStreamClient(t streamTarget) (*streamClient, error) {
	cfg := t.restConfig()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	rt, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return nil, err
	}
	return &streamClient{target: t, clients: cs, upgrader: upgrader, http: &http.Client{Transport: rt}}, nil
}

// dial upgrades a POST to the pod's subresource to a SPDY connection; each
// dial is a new TCP and TLS connection, as for kubectl.
func (c *streamClient) dial(ctx context.Context, subresource, protocol string, params *corev1.PodExecOptions) (httpstream.Connection, error) {
	req := c.clients.CoreV1().RESTClient().Post().Resource("pods").
		Namespace(c.target.Namespace).Name(c.target.Pod).SubResource(subresource)
	if params != nil {
		req = req.VersionedParams(params, scheme.ParameterCodec)
	}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, req.URL().String(), nil)
	if err != nil {
		return nil, err
	}
	conn, got, err := spdy.NegotiateStreaming(c.upgrader, c.http, hreq, protocol)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", subresource, err)
	}
	if got != protocol {
		conn.Close()
		return nil, fmt.Errorf("%s: server chose protocol %q, want %q", subresource, got, protocol)
	}
	return conn, nil
}

// execEcho runs `echo x` in the pod's app container and checks its output
// and exit status: one whole exec round trip.
func (c *streamClient) execEcho(ctx context.Context) error {
	conn, err := c.dial(ctx, "exec", execProtocol, &corev1.PodExecOptions{
		Container: "app", Command: []string{"echo", "x"}, Stdout: true,
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	h := http.Header{}
	h.Set(corev1.StreamType, corev1.StreamTypeError)
	errStream, err := conn.CreateStream(h)
	if err != nil {
		return fmt.Errorf("exec: error stream: %w", err)
	}
	h.Set(corev1.StreamType, corev1.StreamTypeStdout)
	stdout, err := conn.CreateStream(h)
	if err != nil {
		return fmt.Errorf("exec: stdout stream: %w", err)
	}
	out, err := io.ReadAll(stdout)
	if err != nil {
		return fmt.Errorf("exec: stdout: %w", err)
	}
	status, err := io.ReadAll(errStream)
	if err != nil {
		return fmt.Errorf("exec: error stream: %w", err)
	}
	if err := execStatus(status); err != nil {
		return err
	}
	if string(out) != "x\n" {
		return fmt.Errorf("exec: stdout %q, want %q", out, "x\n")
	}
	return nil
}

// execStatus reads the v4 protocol's error stream: nothing or a Status of
// Success means the command ran and exited 0.
func execStatus(msg []byte) error {
	if len(msg) == 0 {
		return nil
	}
	var st metav1.Status
	if err := json.Unmarshal(msg, &st); err != nil {
		return fmt.Errorf("exec: error stream %q: %w", msg, err)
	}
	if st.Status != metav1.StatusSuccess {
		return fmt.Errorf("exec: %s: %s", st.Reason, st.Message)
	}
	return nil
}

// forward pulls n bytes from the source server on port in the pod through
// one port-forward stream and returns bytes per second, timed from the
// request to the last byte (the dial and stream set-up are not counted;
// they are the exec figure's business).
func (c *streamClient) forward(ctx context.Context, port int, n int64) (float64, error) {
	conn, err := c.dial(ctx, "portforward", forwardProtocol, nil)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	h := http.Header{}
	h.Set(corev1.StreamType, corev1.StreamTypeError)
	h.Set(corev1.PortHeader, strconv.Itoa(port))
	h.Set(corev1.PortForwardRequestIDHeader, "0")
	errStream, err := conn.CreateStream(h)
	if err != nil {
		return 0, fmt.Errorf("port-forward: error stream: %w", err)
	}
	errStream.Close() // nothing to send on it
	remoteErr := make(chan error, 1)
	go func() {
		msg, err := io.ReadAll(errStream)
		if err == nil && len(msg) > 0 {
			err = fmt.Errorf("port-forward: kubelet: %s", msg)
		}
		remoteErr <- err
	}()
	h.Set(corev1.StreamType, corev1.StreamTypeData)
	data, err := conn.CreateStream(h)
	if err != nil {
		return 0, fmt.Errorf("port-forward: data stream: %w", err)
	}
	var req [8]byte
	binary.BigEndian.PutUint64(req[:], uint64(n))
	start := time.Now()
	if _, err := data.Write(req[:]); err != nil {
		return 0, fmt.Errorf("port-forward: request: %w", err)
	}
	got, err := io.CopyBuffer(io.Discard, io.LimitReader(data, n), make([]byte, 256<<10))
	took := time.Since(start)
	if err == nil && got < n {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		// The kubelet's reason (the source not listening, say) arrives on
		// the error stream; give it a moment.
		select {
		case rerr := <-remoteErr:
			err = errors.Join(err, rerr)
		case <-time.After(2 * time.Second):
		}
		return 0, fmt.Errorf("port-forward: after %d of %d bytes: %w", got, n, err)
	}
	return float64(n) / took.Seconds(), nil
}
