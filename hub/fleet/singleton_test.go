package fleet

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/leaderelection/resourcelock"

	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/pkg/testutil"
)

// workLog records singleton work on every replica: how many run at once,
// at most, and who ran.
type workLog struct {
	mu      sync.Mutex
	running map[string]bool
	most    int
	ran     []string
}

func (w *workLog) work(id string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		w.mu.Lock()
		w.running[id] = true
		w.most = max(w.most, len(w.running))
		w.ran = append(w.ran, id)
		w.mu.Unlock()
		<-ctx.Done()
		w.mu.Lock()
		delete(w.running, id)
		w.mu.Unlock()
		return nil
	}
}

func (w *workLog) runningNow() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for id := range w.running {
		out = append(out, id)
	}
	return out
}

// Lease durations travel in whole seconds: these are the shortest that
// work.
func newSingleton(t *testing.T, client *fake.Clientset, id string, w *workLog) *Singleton {
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, "backhaul-system", "backhaul-hub", nil, client.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: id})
	require.NoError(t, err)
	s, err := NewSingleton(SingletonConfig{
		Lock:          lock,
		LeaseDuration: 2 * time.Second, RenewDeadline: time.Second, RetryPeriod: 200 * time.Millisecond,
		Work: w.work(id), Log: testutil.Logger(t),
	})
	require.NoError(t, err)
	return s
}

// optimisticLocking makes the fake clientset refuse a Lease update that
// carries a stale resourceVersion, as the API server does; without it two
// candidates could both "acquire" the Lease.
func optimisticLocking(client *fake.Clientset) {
	gvr := coordinationv1.SchemeGroupVersion.WithResource("leases")
	client.PrependReactor("create", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		a.(k8stesting.CreateAction).GetObject().(*coordinationv1.Lease).ResourceVersion = "1"
		return false, nil, nil
	})
	client.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		l := a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease)
		cur, err := client.Tracker().Get(gvr, l.Namespace, l.Name)
		if err != nil {
			return true, nil, err
		}
		rv := cur.(*coordinationv1.Lease).ResourceVersion
		if l.ResourceVersion != rv {
			return true, nil, apierrors.NewConflict(gvr.GroupResource(), l.Name, errors.New("the object has been modified"))
		}
		n, _ := strconv.Atoi(rv)
		l.ResourceVersion = strconv.Itoa(n + 1)
		return false, nil, nil
	})
}

// A leader cut off from the host (its lease updates fail) stops its work
// before the other replica starts it: never two writers. The cut-off
// replica campaigns again and takes over once it can write again.
func TestSingletonLosesTheLeaseOnPurpose(t *testing.T) {
	client := fake.NewClientset()
	optimisticLocking(client)
	var cutOff atomic.Value // identity whose lease writes fail
	cutOff.Store("")
	client.PrependReactor("update", "leases", func(a k8stesting.Action) (bool, runtime.Object, error) {
		l := a.(k8stesting.UpdateAction).GetObject().(*coordinationv1.Lease)
		if l.Spec.HolderIdentity != nil && *l.Spec.HolderIdentity == cutOff.Load() {
			return true, nil, errors.New("host cluster unreachable")
		}
		return false, nil, nil
	})
	w := &workLog{running: map[string]bool{}}
	a := newSingleton(t, client, "hub-a", w)
	testutil.Background(t, "singleton a", hubtest.WaitBound, a.Run)
	require.Eventually(t, a.Leading, hubtest.WaitBound, 10*time.Millisecond)
	b := newSingleton(t, client, "hub-b", w)
	testutil.Background(t, "singleton b", hubtest.WaitBound, b.Run)

	cutOff.Store("hub-a")
	require.Eventually(t, b.Leading, hubtest.WaitBound, 10*time.Millisecond, "b takes over")
	assert.False(t, a.Leading())
	assert.Equal(t, int64(1), a.Lost())
	// Leading is said as the term starts; its work starts just after.
	require.Eventually(t, func() bool { return len(w.runningNow()) == 1 }, hubtest.WaitBound, 10*time.Millisecond)
	assert.Equal(t, []string{"hub-b"}, w.runningNow())

	cutOff.Store("hub-b")
	require.Eventually(t, a.Leading, hubtest.WaitBound, 10*time.Millisecond, "a, reachable again, takes over")
	w.mu.Lock()
	defer w.mu.Unlock()
	assert.Equal(t, 1, w.most, "singleton work never ran on two replicas at once")
	assert.Equal(t, []string{"hub-a", "hub-b", "hub-a"}, w.ran)
}

func TestSingletonWorkFailureGivesUpTheLease(t *testing.T) {
	client := fake.NewClientset()
	lock, err := resourcelock.New(resourcelock.LeasesResourceLock, "ns", "l", nil, client.CoordinationV1(), resourcelock.ResourceLockConfig{Identity: "hub-a"})
	require.NoError(t, err)
	var runs atomic.Int32
	s, err := NewSingleton(SingletonConfig{
		Lock: lock, LeaseDuration: 2 * time.Second, RenewDeadline: time.Second, RetryPeriod: 50 * time.Millisecond,
		Work: func(context.Context) error { runs.Add(1); return errors.New("cannot start") },
		Log:  testutil.Logger(t),
	})
	require.NoError(t, err)
	testutil.Background(t, "singleton", hubtest.WaitBound, s.Run)
	require.Eventually(t, func() bool { return runs.Load() >= 2 }, hubtest.WaitBound, 10*time.Millisecond, "failed work is retried in a new term")
}

// A replica that shuts down hands the Lease over at once, after its work
// stopped.
func TestSingletonReleasesOnShutdown(t *testing.T) {
	client := fake.NewClientset()
	optimisticLocking(client)
	w := &workLog{running: map[string]bool{}}
	a := newSingleton(t, client, "hub-a", w)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	require.Eventually(t, a.Leading, hubtest.WaitBound, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
	assert.Empty(t, w.runningNow())
	l, err := client.CoordinationV1().Leases("backhaul-system").Get(context.Background(), "backhaul-hub", metav1.GetOptions{})
	require.NoError(t, err)
	assert.Empty(t, l.Spec.HolderIdentity, "released")
}
