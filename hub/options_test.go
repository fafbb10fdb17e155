package hub

import (
	"flag"
	"testing"

	"backhaul.io/backhaul/pkg/flagdoc"
)

func TestFlagsDocumented(t *testing.T) {
	fs := flag.NewFlagSet("backhaul-hub", flag.ContinueOnError)
	NewOptions().Flags(fs)
	if err := flagdoc.Check(fs, "../docs/operations.md"); err != nil {
		t.Error(err)
	}
}
