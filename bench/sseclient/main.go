// sseclient is the benchmark's SSE client swarm: many concurrent Server-Sent Events
// connections from one process (one goroutine and one socket each), parsed by the
// WHATWG event-stream rules. Per event it records the publish-to-receive latency
// from the `"bench_ns":` (unix nanoseconds) the bench publisher puts in the event's
// data, or (-latency-from ts) from the envelope's `"ts":` (unix milliseconds, set by
// whoever wrote the event: the worker, for generated streams); per connection the
// time to the first event. Memory is bounded: counters and fixed-size histograms only.
//
// Output: JSON lines on stdout. {"kind":"dialed"} once every connection was tried,
// {"kind":"snapshot"} on SIGUSR1 (the histograms then start again; counters are
// cumulative), {"kind":"final"} at the end (after -duration, on SIGTERM/SIGINT, or
// once every connection has ended).
//
// Modes:
//
//	sseclient -urls FILE ...   lines "URL[<TAB>Last-Event-ID[<TAB>expected first seq]]"
//	                           (-rate, -from-start: reconnect storms, see storm.go)
//	sseclient -create URL -n N creates N streams (POST) and times each to its first event
//	sseclient -create URL -n N -body JSON -followers K
//	                           creates N streams with that body and follows each with K
//	                           connections until the server ends them (after the terminal
//	                           event); {"kind":"dialed"} once every stream was created and
//	                           every follower connected
//	sseclient -post-urls FILE  closed-loop POSTs of -body to each URL (appends.go)
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type Config struct {
	MaxEvents       int
	HeaderTimeout   time.Duration
	DialConcurrency int
	// LatencyFromTS takes the latency from the envelope's "ts" (ms) instead of
	// data.bench_ns (ns).
	LatencyFromTS bool
}

type Stats struct {
	attempted        atomic.Int64
	established      atomic.Int64
	open             atomic.Int64
	failedTotal      atomic.Int64
	endedByServer    atomic.Int64
	closedByClient   atomic.Int64
	closedAtEnd      atomic.Int64
	broken           atomic.Int64
	events           atomic.Uint64
	heartbeats       atomic.Uint64
	comments         atomic.Uint64
	closingComments  atomic.Uint64
	bytes            atomic.Uint64
	firstSeqMismatch atomic.Uint64
	seqGaps          atomic.Uint64
	seqDuplicates    atomic.Uint64
	negativeLatency  atomic.Uint64
	postFailed       atomic.Uint64
	posts            atomic.Uint64
	timed            atomic.Uint64 // bench_ns values received (latency samples)

	mu       sync.Mutex
	failures map[string]int64
	types    map[string]uint64

	latency     atomic.Pointer[Histogram]
	ttfe        atomic.Pointer[Histogram]
	headers     atomic.Pointer[Histogram]
	createFirst atomic.Pointer[Histogram]
	post        atomic.Pointer[Histogram]
}

func newStats() *Stats {
	st := &Stats{failures: map[string]int64{}, types: map[string]uint64{}}
	st.resetHists()
	return st
}

func (st *Stats) resetHists() {
	for _, p := range []*atomic.Pointer[Histogram]{&st.latency, &st.ttfe, &st.headers,
		&st.createFirst, &st.post} {
		p.Store(&Histogram{})
	}
}

func (st *Stats) fail(reason string) {
	st.failedTotal.Add(1)
	st.mu.Lock()
	st.failures[reason]++
	st.mu.Unlock()
}

func (st *Stats) countType(t []byte) {
	st.mu.Lock()
	if len(t) == 0 {
		st.types["message"]++
	} else {
		st.types[string(t)]++
	}
	st.mu.Unlock()
}

func cpuSeconds() (float64, float64, int64) {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime), tv(ru.Stime), ru.Maxrss
}

func (st *Stats) report(kind, label string, began time.Time, swap bool) map[string]any {
	hists := map[string]*Histogram{
		"latency": st.latency.Load(), "first_event": st.ttfe.Load(),
		"headers": st.headers.Load(), "create_to_first_event": st.createFirst.Load(),
		"post": st.post.Load(),
	}
	if swap {
		st.resetHists()
	}
	user, sys, maxrss := cpuSeconds()
	st.mu.Lock()
	failures := make(map[string]int64, len(st.failures))
	for k, v := range st.failures {
		failures[k] = v
	}
	types := make(map[string]uint64, len(st.types))
	for k, v := range st.types {
		types[k] = v
	}
	st.mu.Unlock()
	out := map[string]any{
		"kind": kind, "label": label, "pid": os.Getpid(),
		"elapsed_s": time.Since(began).Seconds(),
		"unix_ns":   time.Now().UnixNano(),
		"connections": map[string]any{
			"attempted": st.attempted.Load(), "established": st.established.Load(),
			"open": st.open.Load(), "failed": st.failedTotal.Load(), "failures": failures,
			"ended_by_server": st.endedByServer.Load(), "closed_by_client": st.closedByClient.Load(),
			"closed_at_end": st.closedAtEnd.Load(), "broken": st.broken.Load(),
		},
		"events": st.events.Load(), "events_by_type": types,
		"heartbeats": st.heartbeats.Load(), "comments": st.comments.Load(),
		"closing_comments": st.closingComments.Load(), "bytes": st.bytes.Load(),
		"first_seq_mismatch": st.firstSeqMismatch.Load(), "seq_gaps": st.seqGaps.Load(),
		"seq_duplicates": st.seqDuplicates.Load(), "negative_latency": st.negativeLatency.Load(),
		"post_failed": st.postFailed.Load(), "posts": st.posts.Load(),
		"timed":      st.timed.Load(),
		"cpu":        map[string]any{"user_s": user, "sys_s": sys, "total_s": user + sys},
		"max_rss_kb": maxrss,
	}
	for name, h := range hists {
		out[name] = h.Summary()
	}
	return out
}

var stdoutMu sync.Mutex

func emit(v map[string]any) {
	b, err := json.Marshal(v)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sseclient: json:", err)
		return
	}
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	os.Stdout.Write(append(b, '\n'))
}

func readTargets(path string, args []string) ([]Target, error) {
	var out []Target
	if path != "" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			parts := strings.Split(line, "\t")
			t := Target{URL: parts[0], ExpectSeq: -1}
			if len(parts) > 1 {
				t.LastEventID = parts[1]
			}
			if len(parts) > 2 && parts[2] != "" {
				v, err := strconv.ParseInt(parts[2], 10, 64)
				if err != nil {
					return nil, fmt.Errorf("bad expected seq %q", parts[2])
				}
				t.ExpectSeq = v
			}
			out = append(out, t)
		}
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	for _, a := range args {
		out = append(out, Target{URL: a, ExpectSeq: -1})
	}
	return out, nil
}

// createOne POSTs a new external stream and follows it to its first event.
// With followers > 0 it starts that many follower connections and returns at once
// (setupDone is called by each once it is connected or has failed); with 0 it follows
// the stream itself, synchronously, on one connection.
func createOne(ctx context.Context, client *http.Client, createURL string, body []byte,
	followers int, st *Stats, cfg *Config, dialSem chan struct{}, wg *sync.WaitGroup,
	setupDone func()) {
	t0 := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, createURL, bytes.NewReader(body))
	if err != nil {
		st.postFailed.Add(1)
		st.fail("post-request")
		failFollowers(followers, setupDone)
		return
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		st.postFailed.Add(1)
		st.fail("post-error")
		failFollowers(followers, setupDone)
		return
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64*1024))
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		st.postFailed.Add(1)
		st.fail("post-status-" + strconv.Itoa(resp.StatusCode))
		failFollowers(followers, setupDone)
		return
	}
	st.post.Load().Record(uint64(time.Since(t0).Microseconds()))
	var created struct {
		EventsURL string `json:"events_url"`
	}
	if err := json.Unmarshal(raw, &created); err != nil || created.EventsURL == "" {
		st.postFailed.Add(1)
		st.fail("post-body")
		failFollowers(followers, setupDone)
		return
	}
	base, _ := url.Parse(createURL)
	ref, err := url.Parse(created.EventsURL)
	if err != nil {
		st.postFailed.Add(1)
		st.fail("post-body")
		failFollowers(followers, setupDone)
		return
	}
	target := Target{URL: base.ResolveReference(ref).String(), ExpectSeq: 0}
	if followers == 0 {
		runConn(ctx, target, st, cfg, dialSem, t0, func() {})
		return
	}
	for range followers {
		wg.Go(func() {
			var once sync.Once
			runConn(ctx, target, st, cfg, dialSem, t0, func() { once.Do(setupDone) })
		})
	}
}

// failFollowers reports the followers of a stream that could not be created as set up.
func failFollowers(followers int, setupDone func()) {
	for range followers {
		setupDone()
	}
}

func main() {
	urlsFile := flag.String("urls", "", "file of targets: URL[<TAB>Last-Event-ID[<TAB>expected first seq]]")
	createURL := flag.String("create", "", "create mode: POST streams to this URL (…/v1/streams)")
	n := flag.Int("n", 100, "create mode: how many streams")
	concurrency := flag.Int("concurrency", 1, "create mode: creations in flight")
	duration := flag.Float64("duration", 60, "stop after this many seconds")
	maxEvents := flag.Int("max-events", 0, "close a connection after this many events (0: never)")
	dialConc := flag.Int("dial-concurrency", 200, "connections being set up at once")
	headerTimeout := flag.Float64("header-timeout", 30, "seconds to wait for response headers")
	label := flag.String("label", "", "label copied into the output")
	body := flag.String("body", `{"query":"bench first event","generator":"external"}`,
		"create mode: the POST body")
	followers := flag.Int("followers", 0, "create mode: follow each stream with this many "+
		"connections until the server ends them (0: one, timed to its first event)")
	latencyFrom := flag.String("latency-from", "bench_ns",
		"bench_ns (data.bench_ns, ns) or ts (the envelope's ts, ms)")
	rate := flag.Float64("rate", 0, "urls mode: open at most this many connections/s (0: no limit); see storm.go")
	fromStart := flag.Bool("from-start", false, "urls mode: also time first events from the start; see storm.go")
	postURLs := flag.String("post-urls", "", "append mode: closed-loop POSTs to each URL of this file; see appends.go")
	contentType := flag.String("content-type", "application/json", "append mode: the POSTs' Content-Type")
	flag.Parse()
	if *latencyFrom != "bench_ns" && *latencyFrom != "ts" {
		fmt.Fprintln(os.Stderr, "sseclient: -latency-from is bench_ns or ts")
		os.Exit(2)
	}

	cfg := &Config{MaxEvents: *maxEvents, DialConcurrency: *dialConc,
		HeaderTimeout: time.Duration(*headerTimeout * float64(time.Second)),
		LatencyFromTS: *latencyFrom == "ts"}
	st := newStats()
	began := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(),
		time.Duration(*duration*float64(time.Second)))
	defer cancel()

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for s := range sigs {
			if s == syscall.SIGUSR1 {
				emit(st.report("snapshot", *label, began, true))
				continue
			}
			cancel()
		}
	}()

	dialSem := make(chan struct{}, max(1, cfg.DialConcurrency))
	var wg sync.WaitGroup
	if *postURLs != "" {
		targets, err := readTargets(*postURLs, nil)
		if err != nil {
			fmt.Fprintln(os.Stderr, "sseclient:", err)
			os.Exit(2)
		}
		emit(st.report("dialed", *label, began, false))
		runAppends(ctx, targets, []byte(*body), *contentType, st, cfg.HeaderTimeout)
	} else if *createURL != "" {
		if cfg.MaxEvents == 0 && *followers == 0 {
			cfg.MaxEvents = 1 // the first event is what create mode times
		}
		client := &http.Client{Timeout: cfg.HeaderTimeout, Transport: &http.Transport{
			MaxIdleConnsPerHost: *concurrency, DisableCompression: true}}
		jobs := make(chan struct{})
		var creators, dialWg sync.WaitGroup
		dialWg.Add(*n * *followers)
		for range max(1, *concurrency) {
			creators.Go(func() {
				for range jobs {
					createOne(ctx, client, *createURL, []byte(*body), *followers, st, cfg,
						dialSem, &wg, dialWg.Done)
				}
			})
		}
		fed := 0
	feed:
		for range *n {
			select {
			case jobs <- struct{}{}:
				fed++
			case <-ctx.Done():
				break feed
			}
		}
		close(jobs)
		creators.Wait()
		// Streams never asked for (the run ended first) have no followers to wait for.
		dialWg.Add(-(*n - fed) * *followers)
		dialWg.Wait()
		emit(st.report("dialed", *label, began, false))
		wg.Wait()
	} else {
		targets, err := readTargets(*urlsFile, flag.Args())
		if err != nil {
			fmt.Fprintln(os.Stderr, "sseclient:", err)
			os.Exit(2)
		}
		var dialWg sync.WaitGroup
		pace := newPacer(*rate)
		origin := stormOrigin(*fromStart, began)
		for _, t := range targets {
			if !pace.wait(ctx) {
				break
			}
			wg.Add(1)
			dialWg.Add(1)
			go func() {
				defer wg.Done()
				var once sync.Once
				runConn(ctx, t, st, cfg, dialSem, origin, func() { once.Do(dialWg.Done) })
			}()
		}
		go func() {
			dialWg.Wait()
			emit(st.report("dialed", *label, began, false))
		}()
		wg.Wait()
	}
	emit(st.report("final", *label, began, false))
}
