package main

import (
	"context"
	"time"
)

// Reconnect-storm mode (bench/scn_storm.py):
//
//	-rate R        open at most R connections per second (0: as fast as they can be
//	               dialed, bounded by -dial-concurrency)
//	-from-start    time every connection's first event from the process's start instead
//	               of only from its own request: the "create_to_first_event" histogram
//	               then holds "start to first event", so its max is when the last
//	               connection got its first event

// pacer spaces connection starts evenly at a fixed rate.
type pacer struct {
	interval time.Duration
	next     time.Time
}

func newPacer(perSecond float64) *pacer {
	if perSecond <= 0 {
		return &pacer{}
	}
	return &pacer{interval: time.Duration(float64(time.Second) / perSecond), next: time.Now()}
}

// wait blocks until the next connection may start (at once without a rate), or ctx ends.
func (p *pacer) wait(ctx context.Context) bool {
	if p.interval == 0 {
		return ctx.Err() == nil
	}
	d := time.Until(p.next)
	p.next = p.next.Add(p.interval)
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// stormOrigin is what first events are also timed from: the start with -from-start.
func stormOrigin(fromStart bool, began time.Time) time.Time {
	if fromStart {
		return began
	}
	return time.Time{}
}
