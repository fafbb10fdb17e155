package agent

import (
	"flag"
	"testing"

	"backhaul.io/backhaul/pkg/flagdoc"
)

func TestFlagsDocumented(t *testing.T) {
	fs := flag.NewFlagSet("backhaul-agent", flag.ContinueOnError)
	NewOptions().Flags(fs)
	if err := flagdoc.Check(fs, "../docs/operations.md"); err != nil {
		t.Error(err)
	}
}
