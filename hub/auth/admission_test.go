package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/hub/internal/hubtest"
	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/testutil"
)

type fakeAuthz struct {
	allowed bool
	reason  string
	err     error
}

func (f fakeAuthz) Authorize(context.Context, *User, string) (bool, string, error) {
	return f.allowed, f.reason, f.err
}

// clusterSet is a fixed Clusters.
type clusterSet map[string]bool

func (c clusterSet) Known(name string) bool { return c[name] }

func TestAdmission(t *testing.T) {
	reg := session.NewRegistry(testutil.Logger(t), session.NewMetrics(prometheus.NewRegistry()))
	hubSide, _ := hubtest.PipeSessions(t)
	connected, remove, err := reg.Add("alpha", hubSide, session.Agent{})
	require.NoError(t, err)
	t.Cleanup(remove)
	alice := &User{Name: "alice"}
	allow := fakeAuthz{allowed: true}

	tests := []struct {
		name       string
		authz      Authorizer
		cluster    string
		wantCode   int
		wantReason string
		wantMsg    string
	}{
		{"admitted", allow, "alpha", 0, "", ""},
		{"not authorized", fakeAuthz{reason: "not on the list"}, "alpha", http.StatusForbidden, session.ReasonForbidden, `user "alice" cannot reach cluster alpha through the hub: not on the list`},
		{"host unavailable", fakeAuthz{err: fmt.Errorf("%w: sar", ErrUnavailable)}, "alpha", http.StatusServiceUnavailable, session.ReasonForbidden, "the hub's host cluster is unavailable"},
		{"authorizer fails", fakeAuthz{err: errors.New("boom")}, "alpha", http.StatusInternalServerError, session.ReasonForbidden, "boom"},
		{"unknown cluster", allow, "gamma", http.StatusNotFound, session.ReasonUnknownCluster, `cluster "gamma" not found`},
		{"not connected", allow, "beta", http.StatusServiceUnavailable, session.ReasonNotConnected, "cluster beta is not connected"},
		// Authorization comes first: a caller learns nothing about
		// clusters it may not reach.
		{"unknown and not authorized", fakeAuthz{}, "gamma", http.StatusForbidden, session.ReasonForbidden, "cannot reach cluster gamma"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := NewAdmission(tc.authz, clusterSet{"alpha": true, "beta": true}, session.NewDialer(reg, nil, session.NewMetrics(prometheus.NewRegistry()), hubtest.WaitBound))
			s, ref := a.Admit(t.Context(), alice, tc.cluster)
			if tc.wantCode == 0 {
				require.Nil(t, ref)
				assert.Same(t, connected, s.Local())
				return
			}
			require.NotNil(t, ref)
			assert.Nil(t, s)
			assert.Equal(t, tc.wantCode, ref.Code)
			assert.Equal(t, tc.wantReason, ref.Reason)
			assert.Contains(t, ref.Message, tc.wantMsg)
		})
	}
}

func TestAdmissionRoute(t *testing.T) {
	reg := session.NewRegistry(testutil.Logger(t), session.NewMetrics(prometheus.NewRegistry()))
	older, _ := hubtest.PipeSessions(t)
	newer, _ := hubtest.PipeSessions(t)
	routed, rm1, err := reg.Add("edge", older, session.Agent{Addresses: []netip.Addr{netip.MustParseAddr("10.0.0.7")}})
	require.NoError(t, err)
	t.Cleanup(rm1)
	_, rm2, err := reg.Add("edge", newer, session.Agent{})
	require.NoError(t, err)
	t.Cleanup(rm2)

	dialer := session.NewDialer(reg, nil, session.NewMetrics(prometheus.NewRegistry()), hubtest.WaitBound)
	route, err := dialer.NodeRoute("edge", netip.MustParseAddr("10.0.0.7"))
	require.NoError(t, err)
	require.Same(t, routed, route.Local())
	a := NewAdmission(fakeAuthz{allowed: true}, clusterSet{"edge": true}, dialer)
	r, ref := a.AdmitRoute(t.Context(), &User{Name: "alice"}, route)
	require.Nil(t, ref)
	assert.Same(t, routed, r.Local(), "the stream goes where the route points, not to the cluster's newest session")

	a = NewAdmission(fakeAuthz{reason: "no"}, clusterSet{"edge": true}, dialer)
	_, ref = a.AdmitRoute(t.Context(), &User{Name: "alice"}, route)
	require.NotNil(t, ref)
	assert.Equal(t, http.StatusForbidden, ref.Code)
	assert.False(t, a.Allowed(t.Context(), &User{Name: "alice"}, "edge"))
}
