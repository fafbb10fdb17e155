package harness

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// userHZ is the unit of the CPU times in /proc/PID/stat (USER_HZ, 100 on
// every Linux architecture Go supports).
const userHZ = 100

// ProcUsage is what /proc says about a process: the CPU time it has used
// (user and system, its reaped children excluded) and its memory.
type ProcUsage struct {
	CPU     time.Duration
	RSS     int64 // bytes resident now (VmRSS)
	PeakRSS int64 // bytes, the most ever resident (VmHWM)
}

// ReadProcUsage reads pid's [ProcUsage] from /proc/PID/stat and
// /proc/PID/status: the measure of a process the test did not build into
// itself, such as the hub.
func ReadProcUsage(pid int) (ProcUsage, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcUsage{}, err
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return ProcUsage{}, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return ProcUsage{}, fmt.Errorf("/proc/%d/stat: %d fields after comm", pid, len(f))
	}
	// Fields 14 (utime) and 15 (stime) of stat(5), counted from state (3).
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return ProcUsage{}, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	u := ProcUsage{CPU: time.Duration(ut+st) * time.Second / userHZ}
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcUsage{}, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			return ProcUsage{}, fmt.Errorf("/proc/%d/status: %s: %w", pid, k, err)
		}
		if k == "VmRSS" {
			u.RSS = kb << 10
		} else {
			u.PeakRSS = kb << 10
		}
	}
	return u, nil
}

// MachineCPU is the CPU time of the whole machine, from the first line of
// /proc/stat, summed over all CPUs.
type MachineCPU struct {
	Busy  time.Duration // everything but idle and iowait
	Total time.Duration
}

// ReadMachineCPU reads [MachineCPU]: the difference of two readings says
// how busy the machine was in between, whoever kept it busy.
func ReadMachineCPU() (MachineCPU, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return MachineCPU{}, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return MachineCPU{}, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var c MachineCPU
	// user nice system idle iowait irq softirq steal [guest guest_nice,
	// which user and nice already include].
	for i, v := range f[1:min(len(f), 9)] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return MachineCPU{}, fmt.Errorf("/proc/stat: %w", err)
		}
		d := time.Duration(n) * time.Second / userHZ
		c.Total += d
		if i != 3 && i != 4 {
			c.Busy += d
		}
	}
	return c, nil
}
