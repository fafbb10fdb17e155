package tunnel

import (
	"testing"

	"github.com/hashicorp/go-hclog"
	"go.uber.org/goleak"

	"backhaul.io/backhaul/pkg/testutil"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger writes through t.Log.
func testLogger(t testing.TB) hclog.Logger { return testutil.Logger(t) }
