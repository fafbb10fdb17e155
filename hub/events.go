package hub

import (
	"context"
	"sync"
)

// events fans out "cluster X became reachable, or stopped being
// reachable" (through a session here, or a peer's per the directory) to
// subscribers that come and go with leadership terms. Session changes
// that leave a cluster as reachable as it was (a second session of an
// agent that looks for replicas, one of two ending) are not events.
type events struct {
	// connected says whether a cluster is reachable now.
	connected func(cluster string) bool

	mu   sync.Mutex
	next int
	subs map[int]func(cluster string)
	// up are the clusters last reported reachable.
	up map[string]bool
}

func newEvents(connected func(string) bool) *events {
	return &events{connected: connected, subs: map[int]func(string){}, up: map[string]bool{}}
}

// fire is told that cluster's sessions changed somewhere; it calls every
// subscriber if that changed whether the cluster is reachable. They must
// not block.
func (e *events) fire(cluster string) {
	e.mu.Lock()
	// Under the lock, so that concurrent changes are judged in order.
	now := e.connected(cluster)
	if now == e.up[cluster] {
		e.mu.Unlock()
		return
	}
	if now {
		e.up[cluster] = true
	} else {
		delete(e.up, cluster)
	}
	subs := make([]func(string), 0, len(e.subs))
	for _, fn := range e.subs {
		subs = append(subs, fn)
	}
	e.mu.Unlock()
	for _, fn := range subs {
		fn(cluster)
	}
}

// watch subscribes fn until ctx ends.
func (e *events) watch(ctx context.Context, fn func(cluster string)) {
	e.mu.Lock()
	id := e.next
	e.next++
	e.subs[id] = fn
	e.mu.Unlock()
	context.AfterFunc(ctx, func() {
		e.mu.Lock()
		delete(e.subs, id)
		e.mu.Unlock()
	})
}
