package harness

import (
	"context"
	"runtime"
	"runtime/pprof"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// spinCPU busies the calling goroutine's thread for d of its own CPU
// time (not wall time), so a CPU profile sees it however loaded the
// machine is.
func spinCPU(d time.Duration) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const rusageThread = 1 // RUSAGE_THREAD
	cpu := func() time.Duration {
		var ru syscall.Rusage
		_ = syscall.Getrusage(rusageThread, &ru) // on error 0: spin by count
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	end := cpu() + d
	x := 0
	for n := 0; cpu() < end && n < 1_000_000; n++ {
		for i := range 100_000 {
			x ^= i
		}
	}
	runtime.KeepAlive(x)
}

func TestLabelledCPU(t *testing.T) {
	prof, err := StartCPUProfile()
	if err != nil {
		t.Fatalf("start a CPU profile (does another run, e.g. go test -cpuprofile?): %v", err)
	}
	done := make(chan struct{})
	pprof.Do(context.Background(), pprof.Labels("component", "busy"), func(context.Context) {
		// A goroutine started here inherits the label.
		go func() {
			defer close(done)
			spinCPU(300 * time.Millisecond)
		}()
	})
	spinCPU(300 * time.Millisecond) // unlabelled
	<-done
	data := prof.Stop()
	assert.Equal(t, data, prof.Stop(), "Stop is idempotent")

	labelled, total, err := LabelledCPU(data, "component", "busy")
	require.NoError(t, err)
	t.Logf("labelled %v of %v", labelled, total)
	assert.Positive(t, labelled)
	assert.Greater(t, total, labelled, "the unlabelled spin counts only in the total")

	none, total2, err := LabelledCPU(data, "component", "other")
	require.NoError(t, err)
	assert.Zero(t, none)
	assert.Equal(t, total, total2)

	_, _, err = LabelledCPU([]byte("not a profile"), "k", "v")
	assert.Error(t, err)
}
