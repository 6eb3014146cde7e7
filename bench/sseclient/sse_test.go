package main

import (
	"bufio"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSplitLinesAllLineEnds(t *testing.T) {
	sc := bufio.NewScanner(strings.NewReader("a\nb\r\nc\rd\r\n\ne"))
	sc.Split(splitLines)
	var got []string
	for sc.Scan() {
		got = append(got, sc.Text())
	}
	want := []string{"a", "b", "c", "d", "", "e"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestIntAfter(t *testing.T) {
	data := []byte(`{"stream":"s","seq":12,"data":{"bench_ns": 1795559364903786271}}`)
	if v, ok := intAfter(data, seqKey); !ok || v != 12 {
		t.Fatalf("seq: %d %v", v, ok)
	}
	if v, ok := intAfter(data, benchKey); !ok || v != 1795559364903786271 {
		t.Fatalf("bench_ns: %d %v", v, ok)
	}
	if _, ok := intAfter([]byte(`{"seq":"x"}`), seqKey); ok {
		t.Fatal("a non-number parsed")
	}
}

func TestHistogramBucketsAndPercentiles(t *testing.T) {
	for _, v := range []uint64{0, 1, 127, 128, 129, 1000, 123456, 1 << 40} {
		lo, hi := bucketBounds(bucketIndex(v))
		if v < lo || v >= hi {
			t.Fatalf("%d not in its bucket [%d, %d)", v, lo, hi)
		}
		if v >= exactBelow && float64(hi-lo) > float64(lo)/64+1 {
			t.Fatalf("bucket of %d too wide: [%d, %d)", v, lo, hi)
		}
	}
	var h Histogram
	for i := uint64(1); i <= 1000; i++ {
		h.Record(i * 1000) // 1 ms .. 1 s
	}
	s := h.Summary()
	if s.Count != 1000 || s.MaxMs != 1000 || s.MinMs != 1 {
		t.Fatalf("summary %+v", s)
	}
	for _, c := range []struct{ got, want float64 }{{s.P50Ms, 500}, {s.P99Ms, 990}} {
		if c.got < c.want*0.98 || c.got > c.want*1.02 {
			t.Fatalf("percentile %.1f, want about %.1f", c.got, c.want)
		}
	}
}

func TestLatencyFromEnvelopeTs(t *testing.T) {
	st := newStats()
	cfg := &Config{LatencyFromTS: true}
	sent := time.Now().Add(-50 * time.Millisecond).UnixMilli()
	data := []byte(`{"stream":"s","seq":0,"type":"partial_result","ts":` +
		strconv.FormatInt(sent, 10) + `,"data":{"chunk":"ts\":1 ","bench_ns":1}}`)
	cs := connState{lastSeq: -1}
	st.dispatch(&cs, Target{ExpectSeq: -1}, cfg, []byte("partial_result"), data, time.Now(),
		time.Time{})
	s := st.latency.Load().Summary()
	// ts is whole milliseconds (floored), so the latency reads 50 to 51 ms (plus the run).
	if s.Count != 1 || s.P50Ms < 49 || s.P50Ms > 60 {
		t.Fatalf("latency from ts: %+v", s)
	}
}
