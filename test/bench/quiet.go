package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// quietWindow is how long one CPU sample of waitQuiet lasts.
const quietWindow = 500 * time.Millisecond

// waitQuiet waits until the machine's CPUs are busy less than frac of the
// time over one window, or until limit passes, and returns how long it
// waited and the last busy fraction. A freshly started kube-apiserver runs
// its start-up controllers for a while; on two cores, measuring during that
// would charge their CPU to whichever side ran at the time.
func waitQuiet(ctx context.Context, frac float64, limit time.Duration) (time.Duration, float64, error) {
	start := time.Now()
	for {
		b0, t0, err := cpuTimes()
		if err != nil {
			return 0, 0, err
		}
		select {
		case <-time.After(quietWindow):
		case <-ctx.Done():
			return time.Since(start), 0, ctx.Err()
		}
		b1, t1, err := cpuTimes()
		if err != nil {
			return 0, 0, err
		}
		busy := 0.0
		if t1 > t0 {
			busy = (b1 - b0) / (t1 - t0)
		}
		if busy < frac || time.Since(start) >= limit {
			return time.Since(start), busy, nil
		}
	}
}

// cpuTimes returns busy and total jiffies of all CPUs from /proc/stat.
func cpuTimes() (busy, total float64, _ error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	fields := strings.Fields(line)
	if len(fields) < 5 || fields[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	for i, f := range fields[1:] {
		v, err := strconv.ParseFloat(f, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/stat: %w", err)
		}
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total, nil
}
