package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"backhaul.io/backhaul/test/harness"
)

// idleCutter is a TCP proxy that, like a cloud load balancer, closes a
// connection once no byte has crossed it in either direction for idle.
type idleCutter struct {
	ln     net.Listener
	target string
	idle   time.Duration
	wg     sync.WaitGroup
}

func startIdleCutter(t *testing.T, listen, target string, idle time.Duration) *idleCutter {
	ln, err := net.Listen("tcp", listen)
	require.NoError(t, err)
	p := &idleCutter{ln: ln, target: target, idle: idle}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *idleCutter) serve() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer c.Close()
			up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
			if err != nil {
				return
			}
			defer up.Close()
			var once sync.Once
			stop := func() { once.Do(func() { c.Close(); up.Close() }) }
			timer := time.AfterFunc(p.idle, stop)
			defer timer.Stop()
			cp := func(dst, src net.Conn) {
				buf := make([]byte, 32<<10)
				for {
					n, err := src.Read(buf)
					if n > 0 {
						timer.Reset(p.idle)
						if _, werr := dst.Write(buf[:n]); werr != nil {
							break
						}
					}
					if err != nil {
						break
					}
				}
				stop()
			}
			done := make(chan struct{})
			go func() { cp(up, c); close(done) }()
			cp(c, up)
			<-done
		}()
	}
}

// Behind a load balancer that cuts connections idle for 3 s, an agent with
// keepalives below that keeps its tunnel, and an idle `logs -f` and an idle
// watch stay open and deliver what comes later.
func TestIdleStreamsSurviveLoadBalancerTimeout(t *testing.T) {
	e, k := requireStreams(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m := e.members["m1"]
	const idle = 3 * time.Second
	lb := startIdleCutter(t, net.JoinHostPort(m.Netns.HostIP.String(), "0"), fmt.Sprintf("127.0.0.1:%d", e.hub.Port), idle)

	// The cutter does cut: a silent connection through it is closed.
	c, err := net.Dial("tcp", lb.ln.Addr().String())
	require.NoError(t, err)
	_ = c.SetReadDeadline(time.Now().Add(3 * idle))
	_, err = c.Read(make([]byte, 1))
	assert.ErrorIs(t, err, io.EOF, "the load balancer stand-in should cut an idle connection")
	c.Close()

	e.agent("m1").Stop()
	t.Cleanup(func() {
		e.agent("m1").Stop()
		_ = e.restartAgent(context.Background(), "m1")
		_ = e.waitReachable(context.Background(), "m1", 30*time.Second)
	})
	p, err := harness.StartAgent(ctx, e.hub, m, harness.AgentConfig{
		Binary: e.agentBin, Cluster: "m1", AdminPort: agentAdminPort,
		HubURL: "wss://" + lb.ln.Addr().String(),
		Args:   []string{"--keepalive-interval", "1s", "--keepalive-timeout", "5s"},
	})
	require.NoError(t, err)
	e.mu.Lock()
	e.agents["m1"] = p
	e.mu.Unlock()
	require.NoError(t, e.waitReachable(ctx, "m1", 30*time.Second), p.Tail(20))

	logFile := filepath.Join(k.LogDir, fmt.Sprintf("%s_%s_follow.log", streamsNS, streamsPod))
	require.NoError(t, os.WriteFile(logFile, []byte("idle 0\n"), 0o644))
	c1 := e.client(t, "m1", "admin")
	logs, err := c1.CoreV1().Pods(streamsNS).GetLogs(streamsPod, &corev1.PodLogOptions{Container: "follow", Follow: true}).Stream(ctx)
	require.NoError(t, err)
	defer logs.Close()
	w, err := c1.CoreV1().ConfigMaps(streamsNS).Watch(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	defer w.Stop()
	first := make([]byte, len("idle 0\n"))
	_, err = io.ReadFull(logs, first)
	require.NoError(t, err)

	time.Sleep(2*idle + time.Second) // idle well past the cutter's timeout

	f, err := os.OpenFile(logFile, os.O_APPEND|os.O_WRONLY, 0)
	require.NoError(t, err)
	_, err = f.WriteString("idle 1\n")
	require.NoError(t, err)
	f.Close()
	got := make(chan string, 1)
	go func() {
		b := make([]byte, len("idle 1\n"))
		_, _ = io.ReadFull(logs, b)
		got <- string(b)
	}()
	select {
	case s := <-got:
		assert.Equal(t, "idle 1\n", s)
	case <-time.After(10 * time.Second):
		t.Fatal("the idle logs -f stream did not deliver the new line")
	}

	_, stderr, err := m.Kubectl(ctx, "-n", streamsNS, "create", "configmap", "after-idle")
	require.NoError(t, err, stderr)
	for {
		select {
		case ev, ok := <-w.ResultChan():
			require.True(t, ok, "the idle watch was closed")
			if cm, ok := ev.Object.(*corev1.ConfigMap); ok && cm.Name == "after-idle" {
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the idle watch did not deliver the new object")
		}
	}
}
