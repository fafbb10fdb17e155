package harness

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// LockDir holds the flock(2) files that mark namespace names and subnet
// indexes as in use by a live process. Lock files are never deleted (deleting
// a flock file races with other lockers); they are empty and harmless.
const LockDir = "/run/backhaul-e2e"

// errLocked reports that another live process holds a lock.
var errLocked = errors.New("in use by another live process")

// tryLock takes an exclusive, non-blocking flock on LockDir/<name>.lock. The
// lock is released when the returned file is closed or the process dies. The
// descriptor is close-on-exec, so child processes never inherit it.
func tryLock(name string) (*os.File, error) {
	if err := os.MkdirAll(LockDir, 0o755); err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	path := filepath.Join(LockDir, name+".lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", name, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("lock %s: %w", path, errLocked)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return f, nil
}
