package propagation

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

func i32(v int32) *int32 { return &v }

// divideTests are worked examples of the rule documented on Divide.
var divideTests = []struct {
	name   string
	total  int32
	shares []Share
	want   map[string]int32
}{
	{
		name:   "10 over 2:1:1 gives 5/3/2, the tie going to the first name",
		total:  10,
		shares: []Share{{Cluster: "a", Weight: 2}, {Cluster: "b", Weight: 1}, {Cluster: "c", Weight: 1}},
		want:   map[string]int32{"a": 5, "b": 3, "c": 2},
	},
	{
		name:   "input order does not matter",
		total:  10,
		shares: []Share{{Cluster: "c", Weight: 1}, {Cluster: "a", Weight: 2}, {Cluster: "b", Weight: 1}},
		want:   map[string]int32{"a": 5, "b": 3, "c": 2},
	},
	{
		name:   "10 over 2:1 (a cluster not Ready left out)",
		total:  10,
		shares: []Share{{Cluster: "a", Weight: 2}, {Cluster: "b", Weight: 1}},
		want:   map[string]int32{"a": 7, "b": 3},
	},
	{
		name:   "even split",
		total:  9,
		shares: []Share{{Cluster: "a", Weight: 1}, {Cluster: "b", Weight: 1}, {Cluster: "c", Weight: 1}},
		want:   map[string]int32{"a": 3, "b": 3, "c": 3},
	},
	{
		name:   "largest remainder beats name order",
		total:  10,
		shares: []Share{{Cluster: "a", Weight: 1}, {Cluster: "b", Weight: 2}, {Cluster: "c", Weight: 4}},
		// quotas 1.43, 2.86, 5.71: floors 1, 2, 5; two left go to b (.86) and c (.71)
		want: map[string]int32{"a": 1, "b": 3, "c": 6},
	},
	{
		name:   "zero total",
		total:  0,
		shares: []Share{{Cluster: "a", Weight: 1}},
		want:   map[string]int32{"a": 0},
	},
	{
		name:  "no shares",
		total: 5,
		want:  map[string]int32{},
	},
	{
		name:   "max caps and the rest moves on",
		total:  10,
		shares: []Share{{Cluster: "a", Weight: 2, Max: i32(2)}, {Cluster: "b", Weight: 1}, {Cluster: "c", Weight: 1}},
		want:   map[string]int32{"a": 2, "b": 4, "c": 4},
	},
	{
		name:   "min lifts a small share",
		total:  10,
		shares: []Share{{Cluster: "a", Weight: 8}, {Cluster: "b", Weight: 1, Min: 3}, {Cluster: "c", Weight: 1}},
		// b pinned at 3; a and c split 7 as 8:1 → 6.22, 0.78
		want: map[string]int32{"a": 6, "b": 3, "c": 1},
	},
	{
		name:   "min released once the level passes it",
		total:  10,
		shares: []Share{{Cluster: "a", Weight: 1, Max: i32(1)}, {Cluster: "b", Weight: 1, Min: 4}, {Cluster: "c", Weight: 1}},
		// water level 4.5: a 1, b 4.5, c 4.5 → the tie goes to b
		want: map[string]int32{"a": 1, "b": 5, "c": 4},
	},
	{
		name:   "maximums below the total: everyone full, the rest undivided",
		total:  10,
		shares: []Share{{Cluster: "a", Weight: 1, Max: i32(2)}, {Cluster: "b", Weight: 1, Max: i32(3)}},
		want:   map[string]int32{"a": 2, "b": 3},
	},
	{
		name:   "minimums above the total: split in proportion to them",
		total:  4,
		shares: []Share{{Cluster: "a", Weight: 1, Min: 3}, {Cluster: "b", Weight: 5, Min: 3}},
		want:   map[string]int32{"a": 2, "b": 2},
	},
	{
		name:   "weight 0 gets its min only",
		total:  10,
		shares: []Share{{Cluster: "a", Weight: 1}, {Cluster: "b", Weight: 0, Min: 2}},
		want:   map[string]int32{"a": 8, "b": 2},
	},
	{
		name:   "weight 0 takes what the weighted clusters cannot hold",
		total:  10,
		shares: []Share{{Cluster: "a", Weight: 1, Max: i32(4)}, {Cluster: "b", Weight: 0}, {Cluster: "c", Weight: 0}},
		want:   map[string]int32{"a": 4, "b": 3, "c": 3},
	},
	{
		name:   "all weights 0: even split",
		total:  5,
		shares: []Share{{Cluster: "a"}, {Cluster: "b"}},
		want:   map[string]int32{"a": 3, "b": 2},
	},
	{
		name:   "min above max: max wins",
		total:  10,
		shares: []Share{{Cluster: "a", Weight: 1, Min: 5, Max: i32(2)}, {Cluster: "b", Weight: 1}},
		want:   map[string]int32{"a": 2, "b": 8},
	},
	{
		name:   "pinned min == max",
		total:  10,
		shares: []Share{{Cluster: "a", Weight: 1, Min: 3, Max: i32(3)}, {Cluster: "b", Weight: 1}},
		want:   map[string]int32{"a": 3, "b": 7},
	},
	{
		name:   "max 0 excludes a cluster",
		total:  6,
		shares: []Share{{Cluster: "a", Weight: 5, Max: i32(0)}, {Cluster: "b", Weight: 1}, {Cluster: "c", Weight: 1}},
		want:   map[string]int32{"a": 0, "b": 3, "c": 3},
	},
	{
		name:   "large numbers stay exact",
		total:  math.MaxInt32,
		shares: []Share{{Cluster: "a", Weight: math.MaxInt32}, {Cluster: "b", Weight: math.MaxInt32}},
		want:   map[string]int32{"a": math.MaxInt32/2 + 1, "b": math.MaxInt32 / 2},
	},
}

func TestDivide(t *testing.T) {
	for _, tc := range divideTests {
		t.Run(tc.name, func(t *testing.T) {
			got := Divide(tc.total, tc.shares)
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("Divide(%d, %+v) = %v, want %v", tc.total, tc.shares, got, tc.want)
			}
		})
	}
}

// idealQuotas is an independent, floating-point oracle for the quotas
// Divide rounds: bisection on the water level.
func idealQuotas(total int32, shares []Share) []float64 {
	type it struct{ w, lo, hi float64 }
	items := make([]it, len(shares))
	var sumLo, sumHi float64
	anyPos := false
	for i, s := range shares {
		x := it{w: float64(max(s.Weight, 0)), lo: float64(max(s.Min, 0)), hi: math.Inf(1)}
		if s.Max != nil {
			x.hi = float64(max(*s.Max, 0))
			x.lo = math.Min(x.lo, x.hi)
		}
		anyPos = anyPos || x.w > 0
		items[i] = x
		sumLo += x.lo
		sumHi += x.hi
	}
	T := float64(total)
	q := make([]float64, len(items))
	if sumLo >= T {
		for i, x := range items {
			q[i] = T * x.lo / sumLo
		}
		return q
	}
	fill := func(T float64, sel func(it) bool, w func(it) float64) float64 {
		f := func(l float64) float64 {
			var s float64
			for _, x := range items {
				if sel(x) {
					s += math.Max(x.lo, math.Min(x.hi, l*w(x)))
				}
			}
			return s
		}
		lo, hi := 0.0, 1.0
		for f(hi) < T && hi < 1e30 {
			hi *= 2
		}
		for range 100 {
			mid := (lo + hi) / 2
			if f(mid) < T {
				lo = mid
			} else {
				hi = mid
			}
		}
		var placed float64
		for i, x := range items {
			if sel(x) {
				q[i] = math.Max(x.lo, math.Min(x.hi, hi*w(x)))
				placed += q[i]
			}
		}
		return placed
	}
	if !anyPos {
		fill(T, func(it) bool { return true }, func(it) float64 { return 1 })
		return q
	}
	var zeroLo float64
	for i, x := range items {
		if x.w == 0 {
			q[i] = x.lo
			zeroLo += x.lo
		}
	}
	placed := fill(T-zeroLo, func(x it) bool { return x.w > 0 }, func(x it) float64 { return x.w })
	if left := T - zeroLo - placed; left > 1e-6 {
		fill(zeroLo+left, func(x it) bool { return x.w == 0 }, func(it) float64 { return 1 })
	}
	return q
}

// TestDivideProperties checks random divisions: the sum is the total when
// the maximums allow it (min(total, Σmax) otherwise), the bounds hold,
// each result is within one of its ideal quota (the stability guarantee),
// and the result does not depend on input order.
func TestDivideProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := range 1500 {
		n := 1 + rng.IntN(8)
		shares := make([]Share, n)
		for i := range shares {
			s := Share{Cluster: fmt.Sprintf("c%02d", i), Weight: int32(rng.IntN(6))}
			if rng.IntN(3) == 0 {
				s.Min = int32(rng.IntN(5))
			}
			if rng.IntN(3) == 0 {
				s.Max = i32(int32(rng.IntN(8)))
			}
			shares[i] = s
		}
		total := int32(rng.IntN(40))
		got := Divide(total, shares)

		var sum, sumHi int64
		unbounded := false
		for _, s := range shares {
			sum += int64(got[s.Cluster])
			if s.Max == nil {
				unbounded = true
			} else {
				sumHi += int64(*s.Max)
			}
		}
		want := int64(total)
		if !unbounded {
			want = min(want, sumHi)
		}
		if sum != want {
			t.Fatalf("#%d: Divide(%d, %+v) = %v: sum %d, want %d", iter, total, shares, got, sum, want)
		}
		var sumMin int64
		for _, s := range shares {
			lo := int64(s.Min)
			if s.Max != nil {
				lo = min(lo, int64(*s.Max))
			}
			sumMin += lo
		}
		for i, q := range idealQuotas(total, shares) {
			s := shares[i]
			r := got[s.Cluster]
			if s.Max != nil && r > *s.Max {
				t.Fatalf("#%d: %s gets %d over its max %d (%v)", iter, s.Cluster, r, *s.Max, got)
			}
			lo := s.Min
			if s.Max != nil {
				lo = min(lo, *s.Max)
			}
			if sumMin <= int64(total) && r < lo {
				t.Fatalf("#%d: %s gets %d under its min %d (%v)", iter, s.Cluster, r, lo, got)
			}
			if math.Abs(float64(r)-q) >= 1+1e-6 {
				t.Fatalf("#%d: %s gets %d, ideal quota %.4f (%+v, total %d: %v)", iter, s.Cluster, r, q, shares, total, got)
			}
		}
		shuffled := append([]Share(nil), shares...)
		rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		if again := Divide(total, shuffled); fmt.Sprint(again) != fmt.Sprint(got) {
			t.Fatalf("#%d: order matters: %v vs %v", iter, again, got)
		}
	}
}

// TestDivideStable nudges one weight at a time and checks that few
// replicas move: no more than the ideal quotas moved plus one per
// cluster of rounding.
func TestDivideStable(t *testing.T) {
	base := []Share{{Cluster: "a", Weight: 50}, {Cluster: "b", Weight: 30}, {Cluster: "c", Weight: 20}, {Cluster: "d", Weight: 10}}
	const total = 100
	before := Divide(total, base)
	for i := range base {
		nudged := append([]Share(nil), base...)
		nudged[i].Weight++
		after := Divide(total, nudged)
		moved := 0
		for _, s := range base {
			d := int(after[s.Cluster]) - int(before[s.Cluster])
			if d > 0 {
				moved += d
			}
		}
		if moved > 1 {
			t.Errorf("weight of %s +1: %v → %v moves %d replicas, want at most 1", base[i].Cluster, before, after, moved)
		}
	}
}

func BenchmarkDivide(b *testing.B) {
	shares := []Share{{Cluster: "a", Weight: 2}, {Cluster: "b", Weight: 1, Min: 1}, {Cluster: "c", Weight: 1, Max: i32(3)}}
	for b.Loop() {
		Divide(10, shares)
	}
}
