package harness

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"runtime/pprof"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
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
func LabelledCPU(profile []byte, key, value string) (labelled, total time.Duration, err error) {
	zr, err := gzip.NewReader(bytes.NewReader(profile))
	if err != nil {
		return 0, 0, fmt.Errorf("cpu profile: %w", err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return 0, 0, fmt.Errorf("cpu profile: %w", err)
	}
	p, err := decodeProfile(raw)
	if err != nil {
		return 0, 0, fmt.Errorf("cpu profile: %w", err)
	}
	// The value to sum is the one of type cpu (nanoseconds); Go writes
	// samples/count first.
	idx := -1
	for i, st := range p.sampleTypes {
		if p.str(st) == "cpu" {
			idx = i
		}
	}
	if idx < 0 {
		return 0, 0, errors.New("cpu profile: no cpu sample type")
	}
	for _, s := range p.samples {
		if idx >= len(s.values) {
			continue
		}
		v := time.Duration(s.values[idx])
		total += v
		for _, l := range s.labels {
			if p.str(l[0]) == key && p.str(l[1]) == value {
				labelled += v
				break
			}
		}
	}
	return labelled, total, nil
}

// The parts of profile.proto (github.com/google/pprof) LabelledCPU needs:
// Profile{sample_type=1, sample=2, string_table=6},
// ValueType{type=1, unit=2}, Sample{location_id=1, value=2, label=3},
// Label{key=1, str=2, num=3, num_unit=4}. Decoded here rather than with
// github.com/google/pprof/profile, which this module does not require.
type profileProto struct {
	sampleTypes []int64 // string indexes of ValueType.type
	samples     []sampleProto
	strings     []string
}

type sampleProto struct {
	values []int64
	labels [][2]int64 // string indexes of key and str
}

func (p *profileProto) str(i int64) string {
	if i < 0 || i >= int64(len(p.strings)) {
		return ""
	}
	return p.strings[i]
}

func decodeProfile(b []byte) (*profileProto, error) {
	p := &profileProto{}
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		switch {
		case num == 1 && typ == protowire.BytesType:
			var t int64
			if err := eachField(v, func(n protowire.Number, ty protowire.Type, _ []byte, x uint64) error {
				if n == 1 && ty == protowire.VarintType {
					t = int64(x)
				}
				return nil
			}); err != nil {
				return err
			}
			p.sampleTypes = append(p.sampleTypes, t)
		case num == 2 && typ == protowire.BytesType:
			s, err := decodeSample(v)
			if err != nil {
				return err
			}
			p.samples = append(p.samples, s)
		case num == 6 && typ == protowire.BytesType:
			p.strings = append(p.strings, string(v))
		}
		return nil
	})
	return p, err
}

func decodeSample(b []byte) (sampleProto, error) {
	var s sampleProto
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == 2 && typ == protowire.VarintType:
			s.values = append(s.values, int64(x))
		case num == 2 && typ == protowire.BytesType: // packed
			for len(v) > 0 {
				x, n := protowire.ConsumeVarint(v)
				if n < 0 {
					return protowire.ParseError(n)
				}
				s.values = append(s.values, int64(x))
				v = v[n:]
			}
		case num == 3 && typ == protowire.BytesType:
			var l [2]int64
			if err := eachField(v, func(n protowire.Number, ty protowire.Type, _ []byte, x uint64) error {
				if (n == 1 || n == 2) && ty == protowire.VarintType {
					l[n-1] = int64(x)
				}
				return nil
			}); err != nil {
				return err
			}
			s.labels = append(s.labels, l)
		}
		return nil
	})
	return s, err
}

// eachField calls fn for every field of message b: v is a length-delimited
// field's bytes, x a varint field's value; other wire types are skipped.
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := fn(num, typ, v, x); err != nil {
			return err
		}
	}
	return nil
}
