package e2e

// Named zz_ so it runs with the other tests that stop agents.

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// Killing the agent mid-exec ends kubectl with an error within the
// keepalive bound (it is in fact immediate: the agent's socket closes); a
// client-go informer through the hub resumes on its own after the agent
// returns and catches up with a write made while it was gone.
func TestAgentLossDuringExecAndInformerResume(t *testing.T) {
	e, _ := requireStreams(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	m := e.members["m1"]

	// An informer on ConfigMaps in the streams namespace, through the hub.
	c := e.client(t, "m1", "admin")
	factory := informers.NewSharedInformerFactoryWithOptions(c, 0, informers.WithNamespace(streamsNS))
	cms := factory.Core().V1().ConfigMaps().Informer()
	var mu sync.Mutex
	seen := map[string]bool{}
	_, err := cms.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
		if cm, ok := obj.(*corev1.ConfigMap); ok {
			mu.Lock()
			seen[cm.Name] = true
			mu.Unlock()
		}
	}})
	require.NoError(t, err)
	ictx, stopInformer := context.WithCancel(ctx)
	// Shutdown waits for the informers, so they must be told to stop first
	// (defers run last-in, first-out).
	defer factory.Shutdown()
	defer stopInformer()
	factory.Start(ictx.Done())
	require.True(t, cache.WaitForCacheSync(ctx.Done(), cms.HasSynced))
	has := func(name string) func() error {
		return func() error {
			mu.Lock()
			defer mu.Unlock()
			if !seen[name] {
				return fmt.Errorf("informer has not seen %s", name)
			}
			return nil
		}
	}
	_, stderr, err := m.Kubectl(ctx, "-n", streamsNS, "create", "configmap", "before-loss")
	require.NoError(t, err, stderr)
	require.NoError(t, waitNoErr(10*time.Second, has("before-loss")))

	// A long exec, then the agent dies under it.
	cmd := execCommand(ctx, e.bins.Kubectl, "--kubeconfig", e.kubeconfig, "--context", "m1", "-n", streamsNS,
		"exec", streamsPod, "-c", "app", "--", "sh", "-c", "echo started; sleep 120")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	require.NoError(t, waitNoErr(20*time.Second, func() error {
		if !bytes.Contains(out.Bytes(), []byte("started")) {
			return fmt.Errorf("exec not running yet")
		}
		return nil
	}))
	t.Cleanup(func() {
		if !e.isConnected("m1") {
			_ = e.restartAgent(context.Background(), "m1")
		}
	})
	e.agent("m1").Kill()
	killed := time.Now()
	select {
	case err := <-done:
		require.Error(t, err, "kubectl exec must fail when the tunnel goes")
		t.Logf("kubectl exec ended %s after the agent was killed: %v", time.Since(killed).Round(time.Millisecond), err)
	case <-time.After(25*time.Second + 10*time.Second):
		_ = cmd.Process.Kill()
		t.Fatalf("kubectl exec still hanging after the keepalive bound:\n%s", out.String())
	}

	// Written while the tunnel is down, seen once it is back.
	_, stderr, err = m.Kubectl(ctx, "-n", streamsNS, "create", "configmap", "during-loss")
	require.NoError(t, err, stderr)
	require.NoError(t, e.restartAgent(ctx, "m1"))
	require.NoError(t, e.waitReachable(ctx, "m1", 30*time.Second))
	require.NoError(t, waitNoErr(60*time.Second, has("during-loss")), "the informer did not resume")
	assert.NoError(t, has("before-loss")())
}
