package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

func clientFor(t *testing.T, cfg *rest.Config) *kubernetes.Clientset {
	t.Helper()
	c, err := kubernetes.NewForConfig(cfg)
	require.NoError(t, err)
	return c
}

func nsObj(name string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func makeNamespace(t *testing.T, c *kubernetes.Clientset, name string) {
	t.Helper()
	_, err := c.CoreV1().Namespaces().Create(context.Background(), nsObj(name), metav1.CreateOptions{})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{}) })
}

// A watch through the hub sees a write made directly inside the member
// within a second: watches stream, they are not buffered.
func TestWatchSeesDirectWrite(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := e.client(t, "m2", "admin")
	makeNamespace(t, c, "e2e-watch")

	w, err := c.CoreV1().ConfigMaps("e2e-watch").Watch(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	defer w.Stop()

	for i := range 3 {
		name := fmt.Sprintf("direct-%d", i)
		_, stderr, err := e.members["m2"].Kubectl(ctx, "-n", "e2e-watch", "create", "configmap", name)
		require.NoError(t, err, stderr)
		// kubectl has returned, so the object exists; the watch event must
		// follow promptly.
		written := time.Now()
		select {
		case ev, ok := <-w.ResultChan():
			require.True(t, ok, "watch closed")
			require.Equal(t, watch.Added, ev.Type, "event: %#v", ev.Object)
			assert.Equal(t, name, ev.Object.(*corev1.ConfigMap).Name)
			lag := time.Since(written)
			t.Logf("watch event %s arrived %s after the direct write returned", name, lag)
		case <-time.After(time.Second):
			t.Fatalf("watch did not see %s within 1s", name)
		}
	}
}

// Listing 5,000 ConfigMaps through the hub returns every one, in one
// response and paginated.
func TestListFiveThousand(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c := e.client(t, "m1", "admin")
	makeNamespace(t, c, "e2e-list")

	const n = 5000
	var (
		wg     sync.WaitGroup
		failed atomic.Int64
		first  atomic.Value
		next   atomic.Int64
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= n {
					return
				}
				cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%05d", i)}, Data: map[string]string{"i": fmt.Sprint(i)}}
				if _, err := c.CoreV1().ConfigMaps("e2e-list").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
					failed.Add(1)
					first.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	wg.Wait()
	require.Zero(t, failed.Load(), "creates failed; first: %v", first.Load())

	all, err := c.CoreV1().ConfigMaps("e2e-list").List(ctx, metav1.ListOptions{})
	require.NoError(t, err)
	seen := map[string]bool{}
	for _, cm := range all.Items {
		seen[cm.Name] = true
	}
	for i := range n {
		require.True(t, seen[fmt.Sprintf("cm-%05d", i)], "cm-%05d missing from the list", i)
	}

	paged, cont := 0, ""
	for {
		page, err := c.CoreV1().ConfigMaps("e2e-list").List(ctx, metav1.ListOptions{Limit: 500, Continue: cont})
		require.NoError(t, err)
		paged += len(page.Items)
		if cont = page.Continue; cont == "" {
			break
		}
	}
	// kube-root-ca.crt may or may not exist in the namespace.
	assert.GreaterOrEqual(t, paged, n)
	assert.Equal(t, len(all.Items), paged)
}

// A ~1 MiB object round-trips byte-identical.
func TestLargeObjectRoundTrip(t *testing.T) {
	e := requireEnv(t)
	ctx := context.Background()
	c := e.client(t, "m1", "admin")
	makeNamespace(t, c, "e2e-large")

	raw := make([]byte, 700<<10)
	_, _ = rand.Read(raw)
	payload := base64.StdEncoding.EncodeToString(raw) // ~956 KiB of text, ~1 MiB on the wire
	bin := make([]byte, 32<<10)
	_, _ = rand.Read(bin)
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "large"},
		Data:       map[string]string{"payload": payload},
		BinaryData: map[string][]byte{"bin": bin},
	}
	_, err := c.CoreV1().ConfigMaps("e2e-large").Create(ctx, cm, metav1.CreateOptions{})
	require.NoError(t, err)
	got, err := c.CoreV1().ConfigMaps("e2e-large").Get(ctx, "large", metav1.GetOptions{})
	require.NoError(t, err)
	require.Equal(t, payload, got.Data["payload"])
	require.Equal(t, bin, got.BinaryData["bin"])

	// And what the member itself stored is the same.
	direct, stderr, err := e.members["m1"].Kubectl(ctx, "-n", "e2e-large", "get", "configmap", "large", "-o", "jsonpath={.data.payload}")
	require.NoError(t, err, stderr)
	require.Equal(t, payload, direct)
}
