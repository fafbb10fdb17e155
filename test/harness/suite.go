package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// Cleanups collects teardown steps; Run calls them newest first.
type Cleanups struct {
	fns []func()
}

// Add registers f.
func (c *Cleanups) Add(f func()) { c.fns = append(c.fns, f) }

// Run calls every registered function, newest first, once.
func (c *Cleanups) Run() {
	for i := len(c.fns) - 1; i >= 0; i-- {
		c.fns[i]()
	}
	c.fns = nil
}

// RunSuite is a TestMain for packages whose tests share one environment:
// setup runs once within timeout, the tests run, and every cleanup setup
// registered runs afterwards, also when setup failed half way. Without root
// (no network namespaces) setup is skipped and *setupErr says why, so the
// package's tests can Skip with it (which fails them when Required). It
// returns the exit code.
func RunSuite[E any](m *testing.M, name string, timeout time.Duration, env *E, setupErr *error,
	setup func(ctx context.Context, c *Cleanups) (E, error)) int {
	if os.Geteuid() != 0 {
		*setupErr = errors.New("skipping: the " + name + " suite needs root for network namespaces")
		if Required() {
			fmt.Fprintf(os.Stderr, "%s e2e: %v, and %s is set\n", name, *setupErr, EnvRequire)
			return 1
		}
		return m.Run()
	}
	var c Cleanups
	defer c.Run()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	*env, *setupErr = setup(ctx, &c)
	if *setupErr != nil {
		fmt.Fprintf(os.Stderr, "%s e2e setup failed: %v\n", name, *setupErr)
		return 1
	}
	return m.Run()
}

// EnvRequire, when set (`.ci/run` sets it), turns every missing
// prerequisite of a test — root, a tool, a binary, Docker — into a failure
// instead of a skip, so that CI cannot pass with suites that never ran.
const EnvRequire = "BACKHAUL_E2E_REQUIRE"

// Required says whether missing prerequisites fail (EnvRequire is set).
func Required() bool { return os.Getenv(EnvRequire) != "" }

// Skip skips t for a missing prerequisite, or fails it when Required.
func Skip(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if Required() {
		t.Fatalf("missing prerequisite (%s is set, so this fails instead of skipping): %s", EnvRequire, msg)
	}
	t.Skip(msg)
}

// SuiteDir makes the suite's directory for logs and state. It is removed
// when the suite ends, unless BACKHAUL_E2E_KEEP is set: then its path is
// printed.
func SuiteDir(cl *Cleanups, suite string) (string, error) {
	dir, err := os.MkdirTemp("", "backhaul-"+suite+"-")
	if err != nil {
		return "", err
	}
	cl.Add(func() {
		if os.Getenv("BACKHAUL_E2E_KEEP") == "" {
			_ = os.RemoveAll(dir)
		} else {
			fmt.Fprintf(os.Stderr, "%s e2e: logs kept in %s\n", suite, dir)
		}
	})
	return dir, nil
}

// StartMembers starts the members at once (their API servers are the slow
// part) and registers every one that started to be stopped with the
// suite, also when another failed.
func StartMembers(ctx context.Context, cl *Cleanups, cfgs ...MemberConfig) ([]*Member, error) {
	ms := make([]*Member, len(cfgs))
	errs := make([]error, len(cfgs))
	var wg sync.WaitGroup
	for i, c := range cfgs {
		wg.Go(func() { ms[i], errs[i] = StartMember(ctx, c) })
	}
	wg.Wait()
	for _, m := range ms {
		if m != nil {
			cl.Add(func() { _ = m.Stop() })
		}
	}
	return ms, errors.Join(errs...)
}
