package frontend

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"
)

// DefaultMemoryBudget is the share of the memory limit above which new
// streams are refused. The rest is headroom for the streams already open
// to fill their windows and for the garbage collector to catch up.
const DefaultMemoryBudget = 0.8

// Where a memory limit came from (logs, the budget's metric).
const (
	MemorySourceFlag       = "flag"
	MemorySourceGOMEMLIMIT = "GOMEMLIMIT"
	MemorySourceCgroup     = "cgroup"
)

// MemoryBudget refuses new streams while the process uses more than a
// share of its memory limit. Usage is what the Go runtime holds from the
// OS and has not returned (the quantity GOMEMLIMIT governs): read from
// runtime/metrics, which does not stop the world, on each new stream.
type MemoryBudget struct {
	limit, refuseAbove uint64
	source             string
	inUse              func() uint64
}

// NewMemoryBudget refuses above fraction (0 < fraction ≤ 1) of limit
// bytes; source says where limit came from.
func NewMemoryBudget(limit uint64, fraction float64, source string) (*MemoryBudget, error) {
	if limit == 0 || !(fraction > 0 && fraction <= 1) {
		return nil, fmt.Errorf("memory budget: want a limit and a fraction in (0, 1], got %d and %v", limit, fraction)
	}
	return &MemoryBudget{limit: limit, refuseAbove: uint64(float64(limit) * fraction), source: source, inUse: runtimeInUse}, nil
}

// Over reports the memory in use and whether it is above the budget.
func (b *MemoryBudget) Over() (inUse uint64, over bool) {
	inUse = b.inUse()
	return inUse, inUse > b.refuseAbove
}

// Limit is the memory limit, RefuseAbove the budget, Source where the
// limit came from.
func (b *MemoryBudget) Limit() uint64       { return b.limit }
func (b *MemoryBudget) RefuseAbove() uint64 { return b.refuseAbove }
func (b *MemoryBudget) Source() string      { return b.source }

// runtimeInUse is the Go runtime's mapped memory less what it released:
// close to the process's RSS for a pure-Go program, and garbage not yet
// collected included, which errs on the side of refusing.
func runtimeInUse() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 || s[1].Value.Kind() != metrics.KindUint64 {
		return 0 // the runtime no longer has these: measure nothing rather than refuse everything
	}
	return s[0].Value.Uint64() - s[1].Value.Uint64()
}

// ParseMemoryLimit reads --memory-limit: a Kubernetes quantity ("1Gi",
// "800Mi", bytes); "" or "0" means detect it.
func ParseMemoryLimit(s string) (uint64, error) {
	if s == "" {
		return 0, nil
	}
	q, err := resource.ParseQuantity(s)
	if err != nil {
		return 0, fmt.Errorf("memory limit %q: %w", s, err)
	}
	v, ok := q.AsInt64()
	if !ok || v < 0 {
		return 0, fmt.Errorf("memory limit %q: want a whole number of bytes", s)
	}
	return uint64(v), nil
}

// DetectMemoryLimit finds the process's memory limit: flag (bytes, 0:
// none given), else GOMEMLIMIT, else the memory limit of its cgroup (v2
// or v1, the tightest along the path). It returns 0 when there is none.
func DetectMemoryLimit(flag uint64) (limit uint64, source string) {
	return detectMemoryLimit(flag, func() int64 { return debug.SetMemoryLimit(-1) }, os.DirFS("/"))
}

// detectMemoryLimit is DetectMemoryLimit with its sources injected:
// goLimit is the runtime's soft limit (math.MaxInt64 unset), root the
// file system holding /proc and /sys.
func detectMemoryLimit(flag uint64, goLimit func() int64, root fs.FS) (uint64, string) {
	if flag > 0 {
		return flag, MemorySourceFlag
	}
	if l := goLimit(); l > 0 && l != math.MaxInt64 {
		return uint64(l), MemorySourceGOMEMLIMIT
	}
	if l := cgroupMemoryLimit(root); l > 0 {
		return l, MemorySourceCgroup
	}
	return 0, ""
}

// unlimitedV1 is above any real limit: cgroup v1 writes "no limit" as the
// largest page-aligned int64.
const unlimitedV1 = 1 << 62

// cgroupMemoryLimit is the tightest memory limit on the path of this
// process's cgroup, 0 if none. Without a cgroup namespace the process sees
// the host's path for its cgroup while /sys/fs/cgroup may be its own
// cgroup's root; checking every ancestor, the mount's root included,
// covers both.
func cgroupMemoryLimit(root fs.FS) uint64 {
	b, err := fs.ReadFile(root, "proc/self/cgroup")
	if err != nil {
		return 0
	}
	var best uint64
	take := func(v uint64) {
		if v > 0 && v < unlimitedV1 && (best == 0 || v < best) {
			best = v
		}
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		// hierarchy-ID:controller-list:cgroup-path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "": // v2
			walkUp(root, "sys/fs/cgroup", parts[2], "memory.max", take)
		case hasController(parts[1], "memory"): // v1
			walkUp(root, "sys/fs/cgroup/memory", parts[2], "memory.limit_in_bytes", take)
		}
	}
	return best
}

func hasController(list, c string) bool {
	for _, x := range strings.Split(list, ",") {
		if x == c {
			return true
		}
	}
	return false
}

// walkUp reads file in mount/cgroupPath and each of its ancestors up to
// mount, passing every number it finds to take ("max" is no limit).
func walkUp(root fs.FS, mount, cgroupPath, file string, take func(uint64)) {
	p := path.Clean("/" + cgroupPath)
	for {
		if v, err := readLimit(root, path.Join(mount, p, file)); err == nil {
			take(v)
		}
		if p == "/" {
			return
		}
		p = path.Dir(p)
	}
}

var errNoLimit = errors.New("no limit")

func readLimit(root fs.FS, name string) (uint64, error) {
	b, err := fs.ReadFile(root, name)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return 0, errNoLimit
	}
	return strconv.ParseUint(s, 10, 64)
}
