package main

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"backhaul.io/backhaul/test/harness"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat CPU times; Linux fixes
// it at 100 for user space whatever the kernel's own tick rate.
const clockTicks = 100

// usage is what a process spent between two samples.
type usage struct {
	cpu      time.Duration // user + system
	switches float64       // voluntary context switches, all threads
}

func (u usage) sub(v usage) usage { return usage{u.cpu - v.cpu, u.switches - v.switches} }
func (u usage) add(v usage) usage { return usage{u.cpu + v.cpu, u.switches + v.switches} }

// cpuMeter samples the CPU time of a fixed set of named processes, so a
// figure can say where a request's CPU went (hub, agent, apiserver, etcd).
// A process that cannot be read counts as zero: the note gets less precise,
// the figure is not lost.
type cpuMeter map[string]int

func (m cpuMeter) sample() map[string]usage {
	out := make(map[string]usage, len(m))
	for name, pid := range m {
		out[name] = procUsage(pid)
	}
	return out
}

// procUsage reads a process's CPU time and its threads' voluntary context
// switches (each one a wait for I/O or another goroutine's thread).
func procUsage(pid int) usage {
	var u usage
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid)); err == nil {
		s := string(b)
		// Fields after "pid (comm) ": state is field 3, utime 14, stime 15.
		if i := strings.LastIndexByte(s, ')'); i >= 0 {
			f := strings.Fields(s[i+1:])
			if len(f) > 12 {
				ut, _ := strconv.ParseFloat(f[11], 64)
				st, _ := strconv.ParseFloat(f[12], 64)
				u.cpu = time.Duration((ut + st) * float64(time.Second) / clockTicks)
			}
		}
	}
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, t.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "voluntary_ctxt_switches:"); ok {
				n, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
				u.switches += n
			}
		}
	}
	return u
}

// netnsProcesses maps the command names of the processes inside a network
// namespace to their PIDs (the last one seen for a repeated name).
func netnsProcesses(ns string) (map[string]int, error) {
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns pids %s: %w", ns, err)
	}
	procs := map[string]int{}
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		if comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); err == nil {
			procs[strings.TrimSpace(string(comm))] = pid
		}
	}
	return procs, nil
}

// vmRSS reads a process's resident set size in bytes.
func vmRSS(pid int) (float64, error) {
	u, err := harness.ReadProcUsage(pid)
	return float64(u.RSS), err
}
