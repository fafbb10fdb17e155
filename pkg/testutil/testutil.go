// Package testutil holds helpers the unit tests of several packages share.
package testutil

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

// Logger returns a logger that writes through t.Log and goes quiet once the
// test has finished, so a library goroutine logging late cannot panic the
// test binary.
func Logger(t testing.TB) hclog.Logger {
	w := &writer{t: t}
	t.Cleanup(w.stop)
	return hclog.New(&hclog.LoggerOptions{Name: "test", Level: hclog.Debug, Output: w})
}

type writer struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

func (w *writer) stop() {
	w.mu.Lock()
	w.done = true
	w.mu.Unlock()
}

// Background runs run(ctx) in a goroutine until the test ends; cleanup then
// cancels ctx and expects run to return nil within bound. Cleanups run last
// registered first, so start what must stop first last. The returned channel
// closes when run returns, for tests that watch for an early return.
func Background(t testing.TB, what string, bound time.Duration, run func(context.Context) error) <-chan struct{} {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	var err error
	go func() {
		err = run(ctx)
		close(done)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
			if err != nil {
				t.Errorf("%s returned %v", what, err)
			}
		case <-time.After(bound):
			t.Errorf("%s did not return", what)
		}
	})
	return done
}
