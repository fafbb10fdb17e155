package agent

import (
	"flag"
	"io"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestOptionsHubConnections(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    int
		wantErr bool
	}{
		{name: "default keeps two", want: 2},
		{name: "one is a single session", args: []string{"--hub-connections=1"}, want: 1},
		{name: "three", args: []string{"--hub-connections=3"}, want: 3},
		{name: "zero is refused", args: []string{"--hub-connections=0"}, wantErr: true},
		{name: "negative is refused", args: []string{"--hub-connections=-1"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := NewOptions()
			fs := flag.NewFlagSet("backhaul-agent", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			o.Flags(fs)
			args := append([]string{"--hub-url=wss://hub.example:443", "--cluster=alpha", "--token-file=/dev/null"}, tc.args...)
			require.NoError(t, fs.Parse(args))
			err := o.Validate()
			if tc.wantErr {
				require.ErrorContains(t, err, "--hub-connections")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, o.HubConns)
		})
	}
}
