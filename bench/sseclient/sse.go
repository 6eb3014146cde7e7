package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Target is one SSE connection to open.
type Target struct {
	URL         string
	LastEventID string
	ExpectSeq   int64 // expected seq of the first event; -1: no check
}

// splitLines is a bufio.SplitFunc for the event-stream line endings: CRLF, LF or CR.
func splitLines(data []byte, atEOF bool) (int, []byte, error) {
	if atEOF && len(data) == 0 {
		return 0, nil, nil
	}
	i := bytes.IndexAny(data, "\r\n")
	if i >= 0 {
		if data[i] == '\n' {
			return i + 1, data[:i], nil
		}
		// CR: a CRLF pair counts as one line break; wait for the next byte.
		if i+1 < len(data) {
			if data[i+1] == '\n' {
				return i + 2, data[:i], nil
			}
			return i + 1, data[:i], nil
		}
		if atEOF {
			return i + 1, data[:i], nil
		}
		return 0, nil, nil
	}
	if atEOF {
		return len(data), data, nil
	}
	return 0, nil, nil
}

var (
	benchKey = []byte(`"bench_ns":`)
	tsKey    = []byte(`"ts":`)
	seqKey   = []byte(`"seq":`)
	pingText = []byte("ping")
)

// intAfter parses the (possibly negative) integer right after key in b.
func intAfter(b, key []byte) (int64, bool) {
	i := bytes.Index(b, key)
	if i < 0 {
		return 0, false
	}
	j := i + len(key)
	for j < len(b) && b[j] == ' ' {
		j++
	}
	neg := false
	if j < len(b) && b[j] == '-' {
		neg = true
		j++
	}
	var v int64
	start := j
	for j < len(b) && b[j] >= '0' && b[j] <= '9' {
		v = v*10 + int64(b[j]-'0')
		j++
	}
	if j == start {
		return 0, false
	}
	if neg {
		v = -v
	}
	return v, true
}

// connState is what one connection has seen.
type connState struct {
	events  int64
	lastSeq int64
	lastID  string
}

// runConn opens one SSE connection and reads it until the server ends it, maxEvents
// events arrived, or ctx ends. origin, when not zero, is when the whole operation
// began (create mode: the POST); first-event latency is also recorded from there.
// setupDone is called once, when the connection is established or has failed.
func runConn(ctx context.Context, t Target, st *Stats, cfg *Config, dialSem chan struct{},
	origin time.Time, setupDone func()) {
	st.attempted.Add(1)
	defer setupDone()
	select {
	case dialSem <- struct{}{}:
	case <-ctx.Done():
		st.fail("cancelled")
		return
	}
	released := false
	release := func() {
		if !released {
			released = true
			<-dialSem
			setupDone()
		}
	}
	defer release()

	u, err := url.Parse(t.URL)
	if err != nil {
		st.fail("bad-url")
		return
	}
	start := time.Now()
	d := net.Dialer{Timeout: cfg.HeaderTimeout}
	conn, err := d.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		st.fail("dial")
		return
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	var req bytes.Buffer
	fmt.Fprintf(&req, "GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n"+
		"Cache-Control: no-cache\r\nUser-Agent: tidemark-bench-sseclient\r\n", u.RequestURI(), u.Host)
	if t.LastEventID != "" {
		fmt.Fprintf(&req, "Last-Event-ID: %s\r\n", t.LastEventID)
	}
	req.WriteString("\r\n")
	_ = conn.SetDeadline(time.Now().Add(cfg.HeaderTimeout))
	if _, err := conn.Write(req.Bytes()); err != nil {
		st.fail("write")
		return
	}
	br := bufio.NewReaderSize(conn, 4096)
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		if ctx.Err() != nil {
			st.fail("cancelled")
		} else {
			st.fail("headers")
		}
		return
	}
	// The body is never Close()d: net/http would drain it, and an SSE body has no end.
	// Closing the socket (deferred above) ends the response.
	st.headers.Load().Record(uint64(time.Since(start).Microseconds()))
	if resp.StatusCode != http.StatusOK {
		st.fail("status-" + strconv.Itoa(resp.StatusCode))
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64*1024))
		return
	}
	_ = conn.SetDeadline(time.Time{})
	st.established.Add(1)
	st.open.Add(1)
	defer st.open.Add(-1)
	release()

	cs := connState{lastSeq: -1}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 2048), 1<<20)
	sc.Split(splitLines)
	var evType []byte
	var data []byte
	hasData := false
	for sc.Scan() {
		line := sc.Bytes()
		st.bytes.Add(uint64(len(line) + 1))
		if len(line) == 0 {
			if !hasData {
				evType = evType[:0]
				continue
			}
			done := st.dispatch(&cs, t, cfg, evType, data, start, origin)
			evType, data, hasData = evType[:0], data[:0], false
			if done {
				st.closedByClient.Add(1)
				return
			}
			continue
		}
		if line[0] == ':' {
			text := bytes.TrimSpace(line[1:])
			if bytes.Equal(text, pingText) {
				st.heartbeats.Add(1)
			} else {
				st.comments.Add(1)
				if bytes.HasPrefix(text, []byte("closing")) {
					st.closingComments.Add(1)
				}
			}
			continue
		}
		name, value, found := bytes.Cut(line, []byte(":"))
		if found && len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
		switch string(name) {
		case "data":
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, value...)
			hasData = true
		case "event":
			evType = append(evType[:0], value...)
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				cs.lastID = string(value)
			}
		case "retry":
			// reconnection delay: not used by the benchmark
		}
	}
	switch {
	case ctx.Err() != nil:
		st.closedAtEnd.Add(1)
	case sc.Err() == nil:
		st.endedByServer.Add(1)
	default:
		st.broken.Add(1)
	}
}

// dispatch handles one complete event; true when the connection should close.
func (st *Stats) dispatch(cs *connState, t Target, cfg *Config, evType, data []byte,
	start, origin time.Time) bool {
	now := time.Now()
	cs.events++
	st.events.Add(1)
	st.countType(evType)
	if seq, ok := intAfter(data, seqKey); ok {
		if cs.events == 1 {
			if t.ExpectSeq >= 0 && seq != t.ExpectSeq {
				st.firstSeqMismatch.Add(1)
			}
		} else {
			if seq <= cs.lastSeq {
				st.seqDuplicates.Add(1)
			} else if seq > cs.lastSeq+1 {
				st.seqGaps.Add(uint64(seq - cs.lastSeq - 1))
			}
		}
		if seq > cs.lastSeq {
			cs.lastSeq = seq
		}
	}
	if cs.events == 1 {
		st.ttfe.Load().Record(uint64(now.Sub(start).Microseconds()))
		if !origin.IsZero() {
			st.createFirst.Load().Record(uint64(now.Sub(origin).Microseconds()))
		}
	}
	// The envelope's "ts" comes before its "data", and stream ids and type names
	// cannot contain a quote, so the first "ts": is the envelope's.
	if cfg.LatencyFromTS {
		if ms, ok := intAfter(data, tsKey); ok {
			lat := now.UnixNano() - ms*1_000_000
			if lat < 0 {
				st.negativeLatency.Add(1)
				lat = 0
			}
			st.latency.Load().Record(uint64(lat / 1000))
		}
	} else {
		// Every "bench_ns": of the data: a Durable Streams event carries a JSON array of
		// the messages appended since the last one.
		for rest := data; ; {
			ns, ok := intAfter(rest, benchKey)
			if !ok {
				break
			}
			lat := now.UnixNano() - ns
			if lat < 0 {
				st.negativeLatency.Add(1)
				lat = 0
			}
			st.latency.Load().Record(uint64(lat / 1000))
			st.timed.Add(1)
			rest = rest[bytes.Index(rest, benchKey)+len(benchKey):]
		}
	}
	return cfg.MaxEvents > 0 && cs.events >= int64(cfg.MaxEvents)
}
