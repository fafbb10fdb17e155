package propagation

import (
	"cmp"
	"math/big"
	"slices"
)

// Share is one cluster's claim in a replica division.
type Share struct {
	Cluster string
	// Weight is the cluster's relative share; 0 means it gets its Min only
	// (unless every cluster with a positive weight is full, see [Divide]).
	Weight int32
	// Min is a floor: honoured whenever the minimums fit in the total.
	Min int32
	// Max caps the cluster's replicas; nil means no cap.
	Max *int32
}

// Divide splits total replicas among shares (the Ready clusters; a cluster
// that is not Ready gets 0 and is not passed in) and returns each cluster's
// replicas.
//
// The rule, in exact rational arithmetic so the result is the same on every
// platform:
//
//  1. Ideal quotas: the proportional split "water-filled" within the bounds:
//     q_i = clamp(λ·w_i, min_i, max_i), with λ chosen so that Σq_i = total.
//     If even the maximums do not reach the total, every cluster gets its
//     max and the rest stays undivided; clusters of weight 0 get their min,
//     and take part (as weight 1) only for what the weighted clusters
//     cannot hold. If the minimums exceed the total, the total is split in
//     proportion to the minimums instead.
//  2. Rounding, largest remainder (Hamilton): every cluster gets ⌊q_i⌋; the
//     replicas left over go one each to the clusters with the largest
//     fractional parts, ties broken by cluster name (ascending).
//
// So 10 over weights 2:1:1 on a, b, c gives quotas 5, 2.5, 2.5 and the
// result 5, 3, 2. Each cluster's replicas differ from its ideal quota by
// less than one, which is what keeps the division stable: nudging one
// weight moves only the replicas its quota moved, plus at most one per
// cluster of rounding. The bounds always hold (min ≤ r ≤ max, with min
// lowered to max when it is larger) and the sum is min(total, Σmax).
func Divide(total int32, shares []Share) map[string]int32 {
	out := make(map[string]int32, len(shares))
	items := make([]divItem, 0, len(shares))
	for _, s := range shares {
		out[s.Cluster] = 0
		it := divItem{name: s.Cluster, w: max(int64(s.Weight), 0), lo: max(int64(s.Min), 0), hi: -1}
		if s.Max != nil {
			it.hi = max(int64(*s.Max), 0)
			it.lo = min(it.lo, it.hi)
		}
		items = append(items, it)
	}
	if total <= 0 || len(items) == 0 {
		return out
	}
	slices.SortFunc(items, func(a, b divItem) int { return cmp.Compare(a.name, b.name) })
	t := int64(total)

	var sumLo int64
	for _, it := range items {
		sumLo += it.lo
	}
	var quotas []*big.Rat
	if sumLo >= t {
		// The minimums do not fit: split the total in proportion to them,
		// so nobody gets more than its minimum.
		quotas = make([]*big.Rat, len(items))
		for i, it := range items {
			quotas[i] = new(big.Rat).SetFrac64(t*it.lo, sumLo)
		}
	} else {
		quotas = waterFillWeighted(t, items)
	}
	for i, n := range roundLargestRemainder(quotas) {
		out[items[i].name] = int32(n)
	}
	return out
}

type divItem struct {
	name   string
	w      int64
	lo, hi int64 // hi < 0: unbounded
}

// waterFillWeighted computes the quotas when the minimums fit (Σlo < t):
// first over the clusters with a positive weight (weight-0 clusters held at
// their minimum), then whatever those cannot hold over the weight-0
// clusters as if they weighed 1.
func waterFillWeighted(t int64, items []divItem) []*big.Rat {
	quotas := make([]*big.Rat, len(items))
	var pos, zero []int
	var zeroLo int64
	for i, it := range items {
		if it.w > 0 {
			pos = append(pos, i)
		} else {
			zero = append(zero, i)
			zeroLo += it.lo
			quotas[i] = new(big.Rat).SetInt64(it.lo)
		}
	}
	if len(pos) == 0 {
		// Nobody asked for a share: divide evenly.
		ones := make([]divItem, len(items))
		for i, it := range items {
			ones[i] = it
			ones[i].w = 1
		}
		return waterFill(t, ones)
	}
	sub := make([]divItem, len(pos))
	for j, i := range pos {
		sub[j] = items[i]
	}
	q := waterFill(t-zeroLo, sub)
	placed := new(big.Rat)
	for j, i := range pos {
		quotas[i] = q[j]
		placed.Add(placed, q[j])
	}
	left := new(big.Rat).Sub(new(big.Rat).SetInt64(t-zeroLo), placed)
	if left.Sign() > 0 && len(zero) > 0 {
		// The weighted clusters are all at their max (so left is whole).
		sub = make([]divItem, len(zero))
		for j, i := range zero {
			sub[j] = items[i]
			sub[j].w = 1
		}
		q = waterFill(zeroLo+left.Num().Int64(), sub)
		for j, i := range zero {
			quotas[i] = q[j]
		}
	}
	return quotas
}

// waterFill returns q_i = clamp(λ·w_i, lo_i, hi_i) with Σq_i = t, or every
// hi_i when Σhi_i < t. It needs Σlo_i ≤ t and every w_i > 0.
//
// f(λ) = Σ clamp(λ·w_i, lo_i, hi_i) is continuous, non-decreasing and
// linear between the breakpoints lo_i/w_i (cluster i starts growing) and
// hi_i/w_i (it stops). Sweep the breakpoints in order, keeping f as
// base + slope·λ, until f reaches t, then solve for λ in that piece.
func waterFill(t int64, items []divItem) []*big.Rat {
	type event struct {
		at    *big.Rat
		i     int
		enter bool
	}
	var events []event
	base := new(big.Rat) // Σ of the clusters not growing (at lo or at hi)
	for i, it := range items {
		base.Add(base, new(big.Rat).SetInt64(it.lo))
		if it.lo == it.hi {
			continue // pinned
		}
		events = append(events, event{at: new(big.Rat).SetFrac64(it.lo, it.w), i: i, enter: true})
		if it.hi >= 0 {
			events = append(events, event{at: new(big.Rat).SetFrac64(it.hi, it.w), i: i})
		}
	}
	slices.SortStableFunc(events, func(a, b event) int { return a.at.Cmp(b.at) })

	target := new(big.Rat).SetInt64(t)
	if base.Cmp(target) >= 0 {
		quotas := make([]*big.Rat, len(items))
		for i, it := range items {
			quotas[i] = new(big.Rat).SetInt64(it.lo)
		}
		return quotas
	}
	slope := new(big.Rat)
	var lambda *big.Rat
	f := new(big.Rat)
	for _, e := range events {
		f.Mul(slope, e.at).Add(f, base)
		if f.Cmp(target) >= 0 {
			break
		}
		it := items[e.i]
		w := new(big.Rat).SetInt64(it.w)
		if e.enter {
			base.Sub(base, new(big.Rat).SetInt64(it.lo))
			slope.Add(slope, w)
		} else {
			base.Add(base, new(big.Rat).SetInt64(it.hi))
			slope.Sub(slope, w)
		}
	}
	if slope.Sign() > 0 {
		lambda = new(big.Rat).Sub(target, base)
		lambda.Quo(lambda, slope)
	}
	quotas := make([]*big.Rat, len(items))
	for i, it := range items {
		if lambda == nil { // every cluster is at its max and t is not reached
			quotas[i] = new(big.Rat).SetInt64(max(it.hi, it.lo))
			continue
		}
		q := new(big.Rat).Mul(lambda, new(big.Rat).SetInt64(it.w))
		if lo := new(big.Rat).SetInt64(it.lo); q.Cmp(lo) < 0 {
			q = lo
		}
		if it.hi >= 0 {
			if hi := new(big.Rat).SetInt64(it.hi); q.Cmp(hi) > 0 {
				q = hi
			}
		}
		quotas[i] = q
	}
	return quotas
}

// roundLargestRemainder rounds quotas whose sum is whole: floors, then one
// more to each of the largest fractional parts, ties by name (items are
// sorted by name, and the sort is stable).
func roundLargestRemainder(quotas []*big.Rat) []int64 {
	out := make([]int64, len(quotas))
	fracs := make([]*big.Rat, len(quotas))
	sum := new(big.Rat)
	var floors int64
	for i, q := range quotas {
		sum.Add(sum, q)
		fl := new(big.Int).Quo(q.Num(), q.Denom()) // quotas are ≥ 0
		out[i] = fl.Int64()
		floors += out[i]
		fracs[i] = new(big.Rat).Sub(q, new(big.Rat).SetInt(fl))
	}
	// sum is whole by construction; Quo truncates the exact value.
	left := new(big.Int).Quo(sum.Num(), sum.Denom()).Int64() - floors
	order := make([]int, len(quotas))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return fracs[b].Cmp(fracs[a]) })
	for _, i := range order {
		if left <= 0 {
			break
		}
		if fracs[i].Sign() > 0 {
			out[i]++
			left--
		}
	}
	return out
}
