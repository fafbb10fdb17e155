package identity

import (
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEscapeExtraKey(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{in: "scopes", want: "scopes"},
		{in: "example.com/scopes", want: "example.com%2Fscopes"},
		{in: "a b", want: "a%20b"},
		{in: "100%", want: "100%25"},
		{in: "ü", want: "%C3%BC"},
		{in: "tokens-!#$&'*+.^_`|~", want: "tokens-!#$&'*+.^_`|~"},
		{in: "a:b", want: "a%3Ab"},
		{in: "", want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got := EscapeExtraKey(tc.in)
			assert.Equal(t, tc.want, got)
			// kube-apiserver decodes the key with PathUnescape.
			back, err := url.PathUnescape(got)
			require.NoError(t, err)
			assert.Equal(t, tc.in, back)
		})
	}
}

func TestReservedNames(t *testing.T) {
	tests := []struct {
		user              string
		groups            []string
		reserved, hubOnly string
	}{
		{user: "alice", groups: []string{"dev"}},
		{user: "backhaul:hub", reserved: `user "backhaul:hub"`, hubOnly: `user "backhaul:hub"`},
		{user: "alice", groups: []string{"dev", "backhaul:propagators"}, reserved: `group "backhaul:propagators"`, hubOnly: `group "backhaul:propagators"`},
		{user: "backhaul:host:system:serviceaccount:a:b", reserved: `user "backhaul:host:system:serviceaccount:a:b"`},
		{user: "alice", groups: []string{"backhaul:host:ops"}, reserved: `group "backhaul:host:ops"`},
		{user: "backhaulx"},
	}
	for _, tc := range tests {
		t.Run(tc.user, func(t *testing.T) {
			assert.Equal(t, tc.reserved, ReservedIn(tc.user, tc.groups))
			assert.Equal(t, tc.hubOnly, HubOnlyIn(tc.user, tc.groups))
		})
	}
}
