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
	if err := run(true, 0, false); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/run/netns/bhe2e-edge"); err == nil {
		t.Error("the demo left its network namespace behind")
	}
}

// make demo REAL_NODES=1: the members run real nodes, and kubectl exec
// through the hub reaches a real container in each (run checks it).
func TestDemoSmokeRealNodes(t *testing.T) {
	if os.Geteuid() != 0 {
		harness.Skip(t, "the demo needs root for network namespaces")
	}
	if _, err := harness.LocateNodeBinaries(); err != nil {
		harness.Skip(t, "%v", err)
	}
	if err := run(true, 0, true); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/run/netns/bhe2e-edge"); err == nil {
		t.Error("the demo left its network namespace behind")
	}
	if _, err := os.Stat(harness.NodeRunDir + "/edge-node"); err == nil {
		t.Error("the demo left its node behind")
	}
}
