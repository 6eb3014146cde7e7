package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// Append-load mode (bench/scn_durable.py, Durable Streams appends):
//
//	-post-urls FILE   one stream URL a line; one closed-loop writer per line POSTs -body
//	                  with -content-type to it, the next POST as soon as the last is
//	                  answered, until -duration ends. A 2xx answer counts in "posts" and
//	                  times the "post" histogram (request to answer); anything else is a
//	                  failure ("post-status-N", "post-error"). Snapshots (SIGUSR1) cut
//	                  the windows as in the other modes.

func runAppends(ctx context.Context, urls []Target, body []byte, contentType string,
	st *Stats, timeout time.Duration) {
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{
		MaxIdleConnsPerHost: len(urls), DisableCompression: true}}
	var wg sync.WaitGroup
	for _, t := range urls {
		wg.Go(func() {
			for ctx.Err() == nil {
				t0 := time.Now()
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.URL,
					bytes.NewReader(body))
				if err != nil {
					st.fail("post-request")
					return
				}
				req.Header.Set("Content-Type", contentType)
				resp, err := client.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						st.postFailed.Add(1)
						st.fail("post-error")
						time.Sleep(10 * time.Millisecond)
					}
					continue
				}
				_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64*1024))
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					st.postFailed.Add(1)
					st.fail("post-status-" + strconv.Itoa(resp.StatusCode))
					continue
				}
				st.posts.Add(1)
				st.post.Load().Record(uint64(time.Since(t0).Microseconds()))
			}
		})
	}
	wg.Wait()
}
