package harness

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
)

// RaiseNoFile lets this process and its children (which inherit the
// limit) open at least need descriptors.
func RaiseNoFile(need uint64) error {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return err
	}
	if lim.Cur >= need {
		return nil
	}
	if lim.Max < need {
		return fmt.Errorf("RLIMIT_NOFILE hard limit %d is below the %d descriptors needed; ask for fewer sessions", lim.Max, need)
	}
	lim.Cur = need
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
}

// FanOut runs f in n goroutines, each with a 32 KiB buffer of its own,
// and returns the first error, cancelling the others' context when one
// fails. The benchmarks' load generators share it.
func FanOut(ctx context.Context, n int, f func(ctx context.Context, buf []byte) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if err := f(ctx, make([]byte, 32<<10)); err != nil {
				cancel(err)
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}
