package fleet

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"

	"backhaul.io/backhaul/test/harness"
)

var propagationsGVR = schema.GroupVersionResource{Group: "backhaul.io", Version: "v1alpha1", Resource: "propagations"}

// hubUsage is the hub process's CPU time so far and its resident memory.
func hubUsage(t *testing.T, pid int) (cpu time.Duration, rss string) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	require.NoError(t, err)
	f := strings.Fields(string(b)[strings.LastIndexByte(string(b), ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond, hubRSS(t, pid) // USER_HZ is 100 on Linux
}

// TestPropagationBench (BACKHAUL_BENCH=1, run by `make bench`): 1,000
// Propagations × 3 members converging through the tunnels, then 1,000 more
// with f3 offline, then f3 catching up, with the hub's CPU and memory.
func TestPropagationBench(t *testing.T) {
	if os.Getenv("BACKHAUL_BENCH") == "" {
		t.Skip("a benchmark: run with BACKHAUL_BENCH=1 (make bench)")
	}
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	rc, err := clientcmd.BuildConfigFromFlags("", e.hostKubeconfig)
	require.NoError(t, err)
	rc.QPS, rc.Burst = 500, 1000
	dyn, err := dynamic.NewForConfig(rc)
	require.NoError(t, err)
	props := dyn.Resource(propagationsGVR).Namespace("default")
	const n = 1000
	create := func(prefix string) {
		for i := range n {
			name := fmt.Sprintf("%s-%04d", prefix, i)
			obj := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "backhaul.io/v1alpha1", "kind": "Propagation",
				"metadata": map[string]any{"name": name, "labels": map[string]any{"bench": prefix}},
				"spec": map[string]any{
					"template": map[string]any{"apiVersion": "v1", "kind": "ConfigMap",
						"metadata": map[string]any{"name": name}, "data": map[string]any{"i": strconv.Itoa(i)}},
					"placement": map[string]any{"clusterSelector": map[string]any{"matchLabels": map[string]any{"tier": "edge"}}},
				},
			}}
			_, err := props.Create(ctx, obj, metav1.CreateOptions{})
			require.NoError(t, err)
		}
	}
	// waitReady waits until every Propagation labelled prefix has ready
	// clusters.
	waitReady := func(prefix string, ready int64) {
		require.NoError(t, harness.WaitFor(ctx, 15*time.Minute, time.Second, func() error {
			list, err := props.List(ctx, metav1.ListOptions{LabelSelector: "bench=" + prefix})
			if err != nil {
				return err
			}
			done := 0
			for _, p := range list.Items {
				if r, _, _ := unstructured.NestedInt64(p.Object, "status", "readyClusters"); r == ready {
					done++
				}
			}
			if done < n {
				return fmt.Errorf("%d of %d %s Propagations have %d ready clusters", done, n, prefix, ready)
			}
			return nil
		}))
	}
	pid := e.hub.Process().PID()
	phase := func(name string, run func()) {
		cpu0, _ := hubUsage(t, pid)
		start := time.Now()
		run()
		wall := time.Since(start)
		cpu1, rss := hubUsage(t, pid)
		t.Logf("BENCH %-44s wall %7.1fs  hub CPU %6.1fs (%3.0f%% of a core)  hub RSS %s",
			name, wall.Seconds(), (cpu1 - cpu0).Seconds(), 100*(cpu1-cpu0).Seconds()/wall.Seconds(), rss)
	}
	t.Cleanup(func() {
		_ = props.DeleteCollection(context.Background(), metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "bench"})
	})

	phase("1,000 Propagations x 3 members converge", func() { create("b1"); waitReady("b1", 3) })
	e.agent("f3").Stop()
	phase("1,000 more x 2 members, f3 offline", func() { create("b2"); waitReady("b2", 2) })
	phase("f3 returns and catches up on 1,000", func() {
		require.NoError(t, e.startAgent(ctx, "f3", e.agentURL))
		waitReady("b2", 3)
	})
	phase("delete 2,000 Propagations and their copies", func() {
		require.NoError(t, props.DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "bench"}))
		require.NoError(t, harness.WaitFor(ctx, 15*time.Minute, time.Second, func() error {
			list, err := props.List(ctx, metav1.ListOptions{LabelSelector: "bench"})
			if err != nil || len(list.Items) > 0 {
				return fmt.Errorf("%d Propagations left (%v)", len(list.Items), err)
			}
			return nil
		}))
	})
}
