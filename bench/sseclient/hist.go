package main

import (
	"math"
	"math/bits"
	"sync/atomic"
)

// Histogram is a fixed-size, lock-free, log-linear histogram of microsecond values
// (HDR-like): values below 128 are exact, above that each power of two is split in
// 64 buckets, so a bucket is at most 1/64 (1.6 %) of its value wide. Memory is fixed
// (about 18 KB) whatever the number of samples.
type Histogram struct {
	counts [numBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64
	max    atomic.Uint64
	min    atomic.Uint64 // stored as value+1 so that 0 means "no sample"
}

const (
	subBuckets = 64
	exactBelow = 2 * subBuckets // 128
	maxShift   = 34             // values up to 2^41 us (about 25 days)
	numBuckets = exactBelow + maxShift*subBuckets
)

func bucketIndex(v uint64) int {
	if v < exactBelow {
		return int(v)
	}
	e := bits.Len64(v) // >= 8
	shift := e - 7
	if shift > maxShift {
		return numBuckets - 1
	}
	top := v >> uint(shift) // in [64, 128)
	return exactBelow + (shift-1)*subBuckets + int(top-subBuckets)
}

// bucketBounds returns [lo, hi) of bucket i.
func bucketBounds(i int) (uint64, uint64) {
	if i < exactBelow {
		return uint64(i), uint64(i) + 1
	}
	k := i - exactBelow
	shift := uint(k/subBuckets + 1)
	top := uint64(k%subBuckets + subBuckets)
	return top << shift, (top + 1) << shift
}

func (h *Histogram) Record(us uint64) {
	h.counts[bucketIndex(us)].Add(1)
	h.n.Add(1)
	h.sum.Add(us)
	for {
		cur := h.max.Load()
		if us <= cur || h.max.CompareAndSwap(cur, us) {
			break
		}
	}
	for {
		cur := h.min.Load()
		if (cur != 0 && us+1 >= cur) || h.min.CompareAndSwap(cur, us+1) {
			break
		}
	}
}

// HistSummary is what the client prints: percentiles in milliseconds and the
// non-empty buckets [lo_us, hi_us, count] so that several clients can be merged.
type HistSummary struct {
	Count   uint64      `json:"count"`
	MinMs   float64     `json:"min_ms"`
	MeanMs  float64     `json:"mean_ms"`
	P50Ms   float64     `json:"p50_ms"`
	P95Ms   float64     `json:"p95_ms"`
	P99Ms   float64     `json:"p99_ms"`
	P999Ms  float64     `json:"p999_ms"`
	MaxMs   float64     `json:"max_ms"`
	Buckets [][3]uint64 `json:"buckets"`
}

func (h *Histogram) Summary() HistSummary {
	var s HistSummary
	var counts [numBuckets]uint64
	for i := range counts {
		counts[i] = h.counts[i].Load()
		s.Count += counts[i]
	}
	if s.Count == 0 {
		s.Buckets = [][3]uint64{}
		return s
	}
	maxUs := h.max.Load()
	minUs := h.min.Load() - 1
	s.MaxMs = float64(maxUs) / 1000
	s.MinMs = float64(minUs) / 1000
	s.MeanMs = float64(h.sum.Load()) / float64(h.n.Load()) / 1000
	pct := func(q float64) float64 {
		rank := uint64(math.Ceil(q * float64(s.Count)))
		if rank < 1 {
			rank = 1
		}
		var seen uint64
		for i, c := range counts {
			seen += c
			if seen >= rank {
				lo, hi := bucketBounds(i)
				mid := float64(lo) + float64(hi-lo-1)/2
				mid = math.Min(mid, float64(maxUs))
				mid = math.Max(mid, float64(minUs))
				return mid / 1000
			}
		}
		return s.MaxMs
	}
	s.P50Ms, s.P95Ms, s.P99Ms, s.P999Ms = pct(0.50), pct(0.95), pct(0.99), pct(0.999)
	for i, c := range counts {
		if c > 0 {
			lo, hi := bucketBounds(i)
			s.Buckets = append(s.Buckets, [3]uint64{lo, hi, c})
		}
	}
	return s
}
