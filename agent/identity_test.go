package agent

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	authorizationv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestReservedIdentityOnlyOnTheHubsStreams plays a caller that reaches the
// agent as the hub's push identity (a hub bug, or a forged stream): on a
// caller's stream it is refused, on the hub's own stream kind it passes.
func TestReservedIdentityOnlyOnTheHubsStreams(t *testing.T) {
	tests := []struct {
		name     string
		header   http.Header
		hub      bool
		wantCode int
	}{
		{name: "hub user on a caller stream", header: http.Header{"Impersonate-User": {"backhaul:hub"}}, wantCode: http.StatusForbidden},
		{name: "hub group on a caller stream", header: http.Header{"Impersonate-User": {"mallory"}, "Impersonate-Group": {"backhaul:propagators"}}, wantCode: http.StatusForbidden},
		{name: "any reserved name on a caller stream", header: http.Header{"Impersonate-User": {"backhaul:anything"}}, wantCode: http.StatusForbidden},
		{name: "mapped host service account on a caller stream", header: http.Header{"Impersonate-User": {"backhaul:host:system:serviceaccount:ci:deployer"}}, wantCode: http.StatusOK},
		{name: "hub identity on the hub's stream", hub: true, header: http.Header{"Impersonate-User": {"backhaul:hub"}, "Impersonate-Group": {"backhaul:propagators"}}, wantCode: http.StatusOK},
		{name: "no identity on the hub's stream", hub: true, header: http.Header{}, wantCode: http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			member := newFakeMember(t)
			p, err := newAPIProxy(member.restConfig(), []string{"system:masters"}, testLogger(t))
			require.NoError(t, err)
			r := httptest.NewRequest(http.MethodGet, "/api/v1/namespaces", nil)
			for k, v := range tc.header {
				r.Header[k] = v
			}
			rec := httptest.NewRecorder()
			if tc.hub {
				p.forHub().ServeHTTP(rec, r)
			} else {
				p.ServeHTTP(rec, r)
			}
			require.Equal(t, tc.wantCode, rec.Code, "body: %s", rec.Body)
			if tc.wantCode != http.StatusOK {
				assert.Empty(t, member.requests(), "a refused request reached the member")
				return
			}
			require.Len(t, member.requests(), 1)
			assert.Equal(t, tc.header.Values("Impersonate-User"), member.requests()[0].Header.Values("Impersonate-User"))
		})
	}
}

// TestCallerImpersonationIsCheckedWithTheMember plays kubectl --as through
// the hub: the member decides, by SubjectAccessReview for the caller,
// whether the caller may act as what it asked for.
func TestCallerImpersonationIsCheckedWithTheMember(t *testing.T) {
	caller := http.Header{"Impersonate-User": {"alice"}, "Impersonate-Group": {"dev", "system:authenticated"}}
	allowBob := func(s authorizationv1.SubjectAccessReviewSpec) bool {
		ra := s.ResourceAttributes
		return s.User == "alice" && ra != nil && ra.Verb == "impersonate" && ra.Resource == "users" && ra.Name == "bob"
	}
	allowAll := func(authorizationv1.SubjectAccessReviewSpec) bool { return true }
	tests := []struct {
		name       string
		allow      func(authorizationv1.SubjectAccessReviewSpec) bool
		asked      http.Header
		wantCode   int
		wantUser   string
		wantGroups []string
		wantMsg    string
	}{
		{name: "allowed user", allow: allowBob, asked: http.Header{"Backhaul-Impersonate-User": {"bob"}},
			wantCode: http.StatusOK, wantUser: "bob", wantGroups: []string{"system:authenticated"}},
		{name: "refused user", allow: allowBob, asked: http.Header{"Backhaul-Impersonate-User": {"carol"}},
			wantCode: http.StatusForbidden, wantMsg: `users "carol" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope`},
		{name: "allowed user, refused group", allow: allowBob, asked: http.Header{"Backhaul-Impersonate-User": {"bob"}, "Backhaul-Impersonate-Group": {"ops"}},
			wantCode: http.StatusForbidden, wantMsg: `groups "ops" is forbidden`},
		{name: "service account form", allow: func(s authorizationv1.SubjectAccessReviewSpec) bool {
			ra := s.ResourceAttributes
			return ra.Resource == "serviceaccounts" && ra.Namespace == "ci" && ra.Name == "deployer"
		}, asked: http.Header{"Backhaul-Impersonate-User": {"system:serviceaccount:ci:deployer"}},
			wantCode: http.StatusOK, wantUser: "system:serviceaccount:ci:deployer", wantGroups: []string{"system:serviceaccounts", "system:serviceaccounts:ci", "system:authenticated"}},
		{name: "denied groups still dropped", allow: allowAll, asked: http.Header{"Backhaul-Impersonate-User": {"bob"}, "Backhaul-Impersonate-Group": {"system:masters", "ops"}},
			wantCode: http.StatusOK, wantUser: "bob", wantGroups: []string{"ops", "system:authenticated"}},
		{name: "the hub's identity is never reachable by --as", allow: allowAll, asked: http.Header{"Backhaul-Impersonate-User": {"backhaul:hub"}},
			wantCode: http.StatusForbidden, wantMsg: `user "backhaul:hub" is reserved`},
		{name: "group without user", allow: allowAll, asked: http.Header{"Backhaul-Impersonate-Group": {"ops"}},
			wantCode: http.StatusBadRequest, wantMsg: "without impersonating a user"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			member := newFakeMember(t)
			member.setAllow(tc.allow)
			p, err := newAPIProxy(member.restConfig(), []string{"system:masters"}, testLogger(t))
			require.NoError(t, err)
			r := httptest.NewRequest(http.MethodGet, "/api/v1/namespaces", nil)
			for _, h := range []http.Header{caller, tc.asked} {
				for k, v := range h {
					r.Header[k] = v
				}
			}
			rec := httptest.NewRecorder()
			p.ServeHTTP(rec, r)
			require.Equal(t, tc.wantCode, rec.Code, "body: %s", rec.Body)
			for _, rv := range member.reviewed() {
				assert.Equal(t, "alice", rv.User, "reviews ask about the caller")
				assert.ElementsMatch(t, []string{"dev", "system:authenticated"}, rv.Groups)
			}
			if tc.wantCode != http.StatusOK {
				assert.Empty(t, member.requests(), "a refused request reached the member")
				var st metav1.Status
				require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &st), rec.Body.String())
				assert.Contains(t, st.Message, tc.wantMsg)
				return
			}
			require.NotEmpty(t, member.reviewed(), "impersonation was not checked")
			require.Len(t, member.requests(), 1)
			got := member.requests()[0].Header
			assert.Equal(t, []string{tc.wantUser}, got.Values("Impersonate-User"))
			assert.Equal(t, tc.wantGroups, got.Values("Impersonate-Group"))
			for k := range got {
				assert.NotContains(t, k, "Backhaul-Impersonate", "the request the member sees carries only the final identity")
			}
		})
	}
}
