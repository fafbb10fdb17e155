package ha

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// The readiness probe of deploy/hub/deployment.yaml: /readyz every 2 s,
// not ready after 2 failures in a row, ready again after one success
// (the kubelet's default), each with the default 1 s timeout.
const (
	probePeriod   = 2 * time.Second
	probeFailures = 2
	probeTimeout  = time.Second
)

// endpoints plays the kubelet's readiness probe, the endpoint controller
// and kube-proxy for Service backhaul-hub: a replica is behind the virtual
// IP while its Pod is admitted (running, not terminating; the tests say
// when) and its readiness probe passes.
type endpoints struct {
	e      *environment
	cancel context.CancelFunc
	done   chan struct{}

	mu       sync.Mutex // guards the maps and the VIP's contents
	admitted map[string]bool
	ready    map[string]bool
	failures map[string]int
	changes  []endpointChange
}

// endpointChange is a replica entering or leaving the virtual IP.
type endpointChange struct {
	at      time.Time
	replica string
	in      bool
	why     string
}

func (e *environment) startEndpoints() *endpoints {
	ctx, cancel := context.WithCancel(context.Background())
	ep := &endpoints{e: e, cancel: cancel, done: make(chan struct{}),
		admitted: map[string]bool{}, ready: map[string]bool{}, failures: map[string]int{}}
	go ep.run(ctx)
	return ep
}

func (ep *endpoints) stop() {
	ep.cancel()
	<-ep.done
}

// admit says r's Pod is running and not terminating (in) or is
// terminating or gone (!in). Admitting r starts it ready: the caller has
// just seen its /readyz answer 200.
func (ep *endpoints) admit(r *replica, in bool, why string) error {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	ep.admitted[r.name] = in
	if in {
		ep.ready[r.name], ep.failures[r.name] = true, 0
	}
	return ep.syncLocked(r, why)
}

// syncLocked puts r in the virtual IP or takes it out. Callers hold mu.
func (ep *endpoints) syncLocked(r *replica, why string) error {
	want := ep.admitted[r.name] && ep.ready[r.name]
	var err error
	if want {
		err = ep.e.vip.Add(r.backend())
	} else {
		err = ep.e.vip.Remove(r.backend())
	}
	if err != nil {
		return fmt.Errorf("endpoints of %s: %w", r.name, err)
	}
	if n := len(ep.changes); n == 0 || ep.lastLocked(r.name) != want {
		ep.changes = append(ep.changes, endpointChange{at: time.Now(), replica: r.name, in: want, why: why})
	}
	return nil
}

func (ep *endpoints) lastLocked(name string) bool {
	for i := len(ep.changes) - 1; i >= 0; i-- {
		if ep.changes[i].replica == name {
			return ep.changes[i].in
		}
	}
	return false
}

// run probes the admitted replicas every probePeriod.
func (ep *endpoints) run(ctx context.Context) {
	defer close(ep.done)
	client := &http.Client{Timeout: probeTimeout}
	tick := time.NewTicker(probePeriod)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for _, r := range ep.e.replicas {
			ep.mu.Lock()
			admitted := ep.admitted[r.name]
			ep.mu.Unlock()
			if !admitted {
				continue
			}
			ok := false
			if resp, err := client.Get(r.adminURL() + "/readyz"); err == nil {
				resp.Body.Close()
				ok = resp.StatusCode == http.StatusOK
			}
			ep.mu.Lock()
			switch {
			case ok:
				ep.failures[r.name] = 0
				if !ep.ready[r.name] {
					ep.ready[r.name] = true
					_ = ep.syncLocked(r, "readiness probe passed")
				}
			default:
				ep.failures[r.name]++
				if ep.ready[r.name] && ep.failures[r.name] >= probeFailures {
					ep.ready[r.name] = false
					_ = ep.syncLocked(r, fmt.Sprintf("readiness probe failed %d times", probeFailures))
				}
			}
			ep.mu.Unlock()
		}
	}
}

// firstChange is the first time after since that r entered (in) or left
// the virtual IP.
func (ep *endpoints) firstChange(r *replica, in bool, since time.Time) (time.Time, bool) {
	ep.mu.Lock()
	defer ep.mu.Unlock()
	for _, c := range ep.changes {
		if c.replica == r.name && c.in == in && !c.at.Before(since) {
			return c.at, true
		}
	}
	return time.Time{}, false
}
