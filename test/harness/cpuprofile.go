package harness

import (
	"bytes"
	"errors"
	"fmt"
	"runtime/pprof"
	"slices"
	"time"

	"github.com/google/pprof/profile"
)

// CPUProfile is this process's CPU profile over a stretch of a test, for
// telling the CPU of code run under a pprof label (pprof.Do: goroutines
// inherit their creator's labels) from the rest of the process.
type CPUProfile struct {
	buf     bytes.Buffer
	stopped bool
}

// StartCPUProfile starts profiling this process's CPU. Only one profile
// runs at a time in a process: it fails when another does (go test
// -cpuprofile, for one).
func StartCPUProfile() (*CPUProfile, error) {
	p := &CPUProfile{}
	if err := pprof.StartCPUProfile(&p.buf); err != nil {
		return nil, fmt.Errorf("start CPU profile: %w", err)
	}
	return p, nil
}

// Stop ends the profile and returns it (gzipped protobuf, as
// runtime/pprof writes it). Idempotent.
func (p *CPUProfile) Stop() []byte {
	if !p.stopped {
		pprof.StopCPUProfile()
		p.stopped = true
	}
	return p.buf.Bytes()
}

// LabelledCPU sums a CPU profile's samples: total over all of them, and
// labelled over those carrying pprof label key=value. Samples of
// goroutines without the label (the runtime's GC workers among them)
// count only in total.
func LabelledCPU(raw []byte, key, value string) (labelled, total time.Duration, err error) {
	p, err := profile.Parse(bytes.NewReader(raw))
	if err != nil {
		return 0, 0, fmt.Errorf("cpu profile: %w", err)
	}
	// The value to sum is the one of type cpu (nanoseconds); Go writes
	// samples/count first.
	idx := slices.IndexFunc(p.SampleType, func(t *profile.ValueType) bool { return t.Type == "cpu" })
	if idx < 0 {
		return 0, 0, errors.New("cpu profile: no cpu sample type")
	}
	for _, s := range p.Sample {
		v := time.Duration(s.Value[idx])
		total += v
		if slices.Contains(s.Label[key], value) {
			labelled += v
		}
	}
	return labelled, total, nil
}
