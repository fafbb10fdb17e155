package auth

import (
	"context"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMappingMember(t *testing.T) {
	tests := []struct {
		name string
		m    Mapping
		in   *User
		want *User
	}{
		{name: "people keep their names by default", m: DefaultMapping(),
			in:   &User{Name: "alice", UID: "u1", Groups: []string{"dev", "system:authenticated"}, Extra: map[string][]string{"scopes": {"view"}}},
			want: &User{Name: "alice", UID: "u1", Groups: []string{"dev", "system:authenticated"}, Extra: map[string][]string{"scopes": {"view"}}}},
		{name: "a host service account is not the member's", m: DefaultMapping(),
			in:   &User{Name: "system:serviceaccount:kube-system:deployer", Groups: []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"}},
			want: &User{Name: "backhaul:host:system:serviceaccount:kube-system:deployer", Groups: []string{"system:authenticated"}}},
		{name: "system:masters and other host system groups are dropped", m: DefaultMapping(),
			in:   &User{Name: "admin", Groups: []string{"system:masters", "system:nodes", "ops", "system:authenticated"}},
			want: &User{Name: "admin", Groups: []string{"ops", "system:authenticated"}}},
		{name: "prefixes", m: Mapping{UserPrefix: "hub:", SystemUserPrefix: "hub-sa:", GroupPrefix: "hub:"},
			in:   &User{Name: "alice", Groups: []string{"dev", "system:authenticated"}},
			want: &User{Name: "hub:alice", Groups: []string{"hub:dev", "system:authenticated"}}},
		{name: "system prefix with prefixes", m: Mapping{UserPrefix: "hub:", SystemUserPrefix: "hub-sa:", GroupPrefix: "hub:"},
			in:   &User{Name: "system:node:n1", Groups: []string{"system:nodes"}},
			want: &User{Name: "hub-sa:system:node:n1", Groups: []string{}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in.Copy()
			got := tc.m.Member(tc.in)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, in, tc.in, "the caller's identity is not changed")
		})
	}
}

func TestMappingValidate(t *testing.T) {
	tests := []struct {
		name    string
		m       Mapping
		wantErr bool
	}{
		{name: "default", m: DefaultMapping()},
		{name: "prefixes", m: Mapping{UserPrefix: "hub:", SystemUserPrefix: "hub:", GroupPrefix: "hub:"}},
		{name: "under backhaul:host:", m: Mapping{SystemUserPrefix: "backhaul:host:eu:"}},
		{name: "empty system prefix", m: Mapping{}, wantErr: true},
		{name: "system prefix in system:", m: Mapping{SystemUserPrefix: "system:host:"}, wantErr: true},
		{name: "system prefix elsewhere in backhaul:", m: Mapping{SystemUserPrefix: "backhaul:"}, wantErr: true},
		{name: "user prefix in system:", m: Mapping{UserPrefix: "system:", SystemUserPrefix: "x:"}, wantErr: true},
		{name: "user prefix in backhaul:, which could make backhaul:hub", m: Mapping{UserPrefix: "backhaul:", SystemUserPrefix: "x:"}, wantErr: true},
		{name: "group prefix in backhaul:", m: Mapping{GroupPrefix: "backhaul:", SystemUserPrefix: "x:"}, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.m.Validate()
			if tc.wantErr {
				assert.Error(t, err)
			} else {
				assert.NoError(t, err)
			}
		})
	}
}

// TestCallersCannotClaimTheHubsIdentity plays callers whose host identity
// names the hub's push identity or its group (a token-file line, an OIDC
// group, a certificate's O=): admission refuses them on every front end,
// whatever the host's RBAC grants them.
func TestCallersCannotClaimTheHubsIdentity(t *testing.T) {
	a := NewAdmission(AllowAuthenticated{}, clusterSet{"alpha": true}, nil)
	for _, u := range []*User{
		{Name: HubUser},
		{Name: "mallory", Groups: []string{HubPusherGroup}},
		{Name: "mallory", Groups: []string{"dev", "backhaul:anything"}},
		{Name: "backhaul:host:system:serviceaccount:x:y"},
	} {
		t.Run(u.Name, func(t *testing.T) {
			ref := a.check(context.Background(), u, "alpha")
			require.NotNil(t, ref)
			assert.Equal(t, http.StatusForbidden, ref.Code)
			assert.Contains(t, ref.Message, "reserved for the Backhaul hub")
		})
	}
	assert.Nil(t, a.check(context.Background(), &User{Name: "alice", Groups: []string{"dev"}}, "alpha"))
}
