package ctl

import (
	"testing"

	"github.com/stretchr/testify/assert"

	"backhaul.io/backhaul/pkg/version"
)

func TestCommandLine(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
		wantErr  string
	}{
		{name: "version command", args: []string{"version"}, wantOut: "backhaulctl " + version.Version + "\n"},
		{name: "version flag", args: []string{"--version"}, wantOut: "backhaulctl " + version.Version + "\n"},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: 1,
			wantErr: "error: unknown command \"frobnicate\" for \"backhaulctl\"\nSee 'backhaulctl --help' for usage.\n"},
		{name: "unknown subcommand", args: []string{"cluster", "frobnicate"}, wantCode: 1,
			wantErr: "error: unknown command \"frobnicate\" for \"backhaulctl cluster\"\nSee 'backhaulctl cluster --help' for usage.\n"},
		{name: "unknown flag", args: []string{"cluster", "list", "--frob"}, wantCode: 1,
			wantErr: "error: unknown flag: --frob\nSee 'backhaulctl cluster list --help' for usage.\n"},
		{name: "bad namespace", args: []string{"cluster", "list", "-n", "Not_A_Namespace"}, wantCode: 1,
			wantErr: "error: --namespace \"Not_A_Namespace\": "},
		{name: "bad hub url", args: []string{"cluster", "list", "--hub-url", "http://hub"}, wantCode: 1,
			wantErr: "error: --hub-url: \"http://hub\": want wss://host:port or https://host:port\n"},
		{name: "extra argument", args: []string{"cluster", "list", "edge-1"}, wantCode: 1,
			wantErr: "error: \"backhaulctl cluster list\" accepts no arguments, got [\"edge-1\"]\n"},
		{name: "remove needs a name", args: []string{"cluster", "rm"}, wantCode: 1,
			wantErr: "error: backhaulctl cluster remove requires a cluster name\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := run(t, newFakeClient(t), tc.args...)
			assert.Equal(t, tc.wantCode, res.code)
			assert.Equal(t, tc.wantOut, res.out)
			if tc.wantErr == "" {
				assert.Empty(t, res.err)
			} else {
				assert.Contains(t, res.err, tc.wantErr)
			}
		})
	}
}

func TestHelpListsCommands(t *testing.T) {
	res := run(t, newFakeClient(t), "cluster", "--help")
	assert.Equal(t, 0, res.code)
	for _, sub := range []string{"add", "list", "get", "remove"} {
		assert.Contains(t, res.out, "  "+sub+" ")
	}
}
