package main

import (
	"os"
	"testing"

	"backhaul.io/backhaul/test/harness"
)

// The README's main command works: everything starts, both clusters answer
// through the hub, and everything stops.
func TestDemoSmoke(t *testing.T) {
	if os.Geteuid() != 0 {
		harness.Skip(t, "the demo needs root for network namespaces")
	}
	if err := run(true, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/run/netns/bhe2e-edge"); err == nil {
		t.Error("the demo left its network namespace behind")
	}
}
