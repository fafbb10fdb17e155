package harness

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReadProcUsage(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		Skip(t, "skipping: no /proc: %v", err)
	}
	// Burn a little CPU so the figure cannot be zero.
	x := 0
	for i := range 50_000_000 {
		x ^= i
	}
	u, err := ReadProcUsage(os.Getpid())
	require.NoError(t, err, "%d", x)
	assert.Positive(t, u.CPU)
	assert.Positive(t, u.RSS)
	assert.GreaterOrEqual(t, u.PeakRSS, u.RSS)

	_, err = ReadProcUsage(-1)
	assert.Error(t, err)
}

func TestParseOnboardCommand(t *testing.T) {
	for _, tc := range []struct {
		name, out string
		token     string
		hubURL    string
		wantErr   bool
	}{
		{
			name: "as backhaulctl prints it",
			out: "clusters.backhaul.io/sc01 created\n\nRun this at the edge site, with the member cluster's kubeconfig:\n\n" +
				"sh onboard.sh --hub-url wss://10.251.110.1:4443 --cluster sc01 --token abcdef.0123456789abcdef --hub-ca-data 'LS0t+/='\n\nThe token expires ...\n",
			token: "abcdef.0123456789abcdef", hubURL: "wss://10.251.110.1:4443",
		},
		{name: "no command", out: "error: forbidden\n", wantErr: true},
		{name: "no token", out: "sh onboard.sh --hub-url wss://h:1 --cluster x\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseOnboardCommand(tc.out)
			if tc.wantErr {
				require.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.token, c.Token)
			assert.Equal(t, tc.hubURL, c.Flag("--hub-url"))
			assert.Equal(t, "LS0t+/=", c.Flag("--hub-ca-data"))
		})
	}
}

func TestReadMachineCPU(t *testing.T) {
	if _, err := os.Stat("/proc/stat"); err != nil {
		Skip(t, "skipping: no /proc: %v", err)
	}
	c, err := ReadMachineCPU()
	require.NoError(t, err)
	assert.Positive(t, c.Total)
	assert.LessOrEqual(t, c.Busy, c.Total)
}
