package hub

import (
	"context"
	"slices"
	"testing"
)

// TestEventsOnlyOnReachabilityChanges: subscribers (the Propagation
// controller) hear of a cluster when it becomes reachable or stops being
// so, not when an agent's second session comes and goes while the first
// stays up.
func TestEventsOnlyOnReachabilityChanges(t *testing.T) {
	sessions := map[string]int{}
	e := newEvents(func(c string) bool { return sessions[c] > 0 })
	var heard []string
	e.watch(context.Background(), func(c string) { heard = append(heard, c) })
	step := func(c string, delta int) {
		sessions[c] += delta
		e.fire(c)
	}
	step("a", +1) // a connects
	step("a", +1) // its agent looks for replicas: a second session
	step("a", -1) // which ends
	step("b", -1) // b was never connected: nothing changes
	sessions["b"] = 0
	step("a", -1) // a's last session ends
	step("a", +1) // and it comes back
	if want := []string{"a", "a", "a"}; !slices.Equal(heard, want) {
		t.Fatalf("subscribers heard %v, want %v (up, down, up)", heard, want)
	}
}
