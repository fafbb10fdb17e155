package auth

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/pkg/identity"
)

// Mapping turns a caller's identity on the hub's host cluster into the
// identity members see, in the spirit of kube-apiserver's
// --oidc-username-prefix and --oidc-groups-prefix: host and member are
// different clusters, and a name only means the same thing in both when
// the operator says so.
//
//   - User names get UserPrefix; names in the "system:" space (host
//     service accounts, nodes, control-plane components) get
//     SystemUserPrefix instead, so a host service account never acts as the
//     member's service account of the same name.
//   - Groups get GroupPrefix. "system:" groups are dropped
//     (system:masters, system:serviceaccounts, system:nodes: they describe
//     the host), except system:authenticated, which means the same in
//     every cluster.
//   - Extra and UID pass unchanged.
//
// Whatever the prefixes, a caller whose own name or groups are in the
// hub's reserved "backhaul:" space is refused before mapping (see
// [Admission]), and no mapped name can be the hub's own identity.
type Mapping struct {
	UserPrefix       string
	SystemUserPrefix string
	GroupPrefix      string
}

// DefaultMapping keeps callers' user and group names, so member RBAC binds
// the names people have, and gives host "system:" users the prefix
// "backhaul:host:": host service account ns/sa acts in members as
// "backhaul:host:system:serviceaccount:ns:sa".
func DefaultMapping() Mapping { return Mapping{SystemUserPrefix: identity.HostPrefix} }

// Validate refuses prefixes under which a mapped name could land in the
// members' "system:" space or be the hub's own.
func (m Mapping) Validate() error {
	var errs []error
	for _, p := range []struct{ flag, v string }{{"user prefix", m.UserPrefix}, {"group prefix", m.GroupPrefix}} {
		if strings.HasPrefix(p.v, "system:") || strings.HasPrefix(p.v, identity.ReservedPrefix) {
			errs = append(errs, fmt.Errorf("member %s %q starts with %q or %q, where mapped names must not land", p.flag, p.v, "system:", identity.ReservedPrefix))
		}
	}
	switch p := m.SystemUserPrefix; {
	case p == "":
		errs = append(errs, errors.New("member system user prefix must not be empty: host service accounts would act as members' service accounts"))
	case strings.HasPrefix(p, "system:"):
		errs = append(errs, fmt.Errorf("member system user prefix %q starts with %q, where mapped names must not land", p, "system:"))
	case strings.HasPrefix(p, identity.ReservedPrefix) && !strings.HasPrefix(p, identity.HostPrefix):
		// Agents accept the rest of the reserved space only from the hub
		// itself.
		errs = append(errs, fmt.Errorf("member system user prefix %q is in %q outside %q, which agents accept only from the hub itself", p, identity.ReservedPrefix, identity.HostPrefix))
	}
	return errors.Join(errs...)
}

// allAuthenticated is the one "system:" group that passes.
const allAuthenticated = "system:authenticated"

// Member is u as members see it.
func (m Mapping) Member(u *User) *User {
	out := u.Copy()
	if strings.HasPrefix(u.Name, "system:") {
		out.Name = m.SystemUserPrefix + u.Name
	} else {
		out.Name = m.UserPrefix + u.Name
	}
	out.Groups = out.Groups[:0]
	for _, g := range u.Groups {
		switch {
		case g == allAuthenticated:
			out.Groups = append(out.Groups, g)
		case strings.HasPrefix(g, "system:"):
		default:
			out.Groups = append(out.Groups, m.GroupPrefix+g)
		}
	}
	return out
}

// refuseReserved refuses a caller that carries a name in the hub's
// reserved space: whoever can mint such an identity on the host (a group
// in a token file, an OIDC claim, a certificate's O=) would otherwise get
// what members grant the hub.
func refuseReserved(u *User) *Refusal {
	if what := identity.ReservedIn(u.Name, u.Groups); what != "" {
		return refuse(http.StatusForbidden, session.ReasonForbidden,
			"%s is reserved for the Backhaul hub's own identity; callers may not use it", what)
	}
	return nil
}
