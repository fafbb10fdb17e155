package hub

import (
	"context"
	"sync"
)

// events fans out "cluster X gained or lost a session somewhere" (the
// registry here, or a peer per the directory) to subscribers that come and
// go with leadership terms.
type events struct {
	mu   sync.Mutex
	next int
	subs map[int]func(cluster string)
}

func newEvents() *events { return &events{subs: map[int]func(string){}} }

// fire calls every subscriber; they must not block.
func (e *events) fire(cluster string) {
	e.mu.Lock()
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
