package agent

import (
	"flag"
	"os"
	"testing"

	"backhaul.io/backhaul/pkg/flagdoc"
)

func TestFlagsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("backhaul-agent", flag.ContinueOnError)
	NewOptions().Flags(fs)
	if missing := flagdoc.Undocumented(fs, string(doc)); len(missing) > 0 {
		t.Errorf("flags of backhaul-agent missing from docs/operations.md: %v", missing)
	}
}
