package identity

import (
	"fmt"
	"strings"
)

// ReservedPrefix starts the user and group names that are the hub's own
// (its push identity, and the names it gives host service accounts in
// members). No caller may carry or act as one.
const ReservedPrefix = "backhaul:"

// HostPrefix is the part of the reserved space the hub gives names it
// maps from its host cluster (by default, host service accounts): they
// are callers' identities in members, not the hub's own.
const HostPrefix = ReservedPrefix + "host:"

// The hub's own identity in members, which its controllers push as.
// Members grant it (onboard.sh binds the group) like any other user, so
// the member's RBAC and audit log see who wrote.
const (
	HubUser  = ReservedPrefix + "hub"
	HubGroup = ReservedPrefix + "propagators"
)

// HeaderImpersonatePrefix carries, from hub to agent, the impersonation a
// caller asked for (kubectl --as): Backhaul-Impersonate-User, -Group, -Uid
// and -Extra-KEY, as the Impersonate-* headers the caller sent. The hub's
// own Impersonate-* headers name the caller; the agent checks the request
// with the member before acting as what these name.
const HeaderImpersonatePrefix = "Backhaul-Impersonate-"

// ReservedIn names the first of user and groups in the reserved space, as
// `user "X"` or `group "X"`, or "".
func ReservedIn(user string, groups []string) string {
	if strings.HasPrefix(user, ReservedPrefix) {
		return fmt.Sprintf("user %q", user)
	}
	for _, g := range groups {
		if strings.HasPrefix(g, ReservedPrefix) {
			return fmt.Sprintf("group %q", g)
		}
	}
	return ""
}

// HubOnlyIn is ReservedIn less the names under HostPrefix: the names an
// agent accepts only on the hub's own streams.
func HubOnlyIn(user string, groups []string) string {
	if strings.HasPrefix(user, ReservedPrefix) && !strings.HasPrefix(user, HostPrefix) {
		return fmt.Sprintf("user %q", user)
	}
	for _, g := range groups {
		if strings.HasPrefix(g, ReservedPrefix) && !strings.HasPrefix(g, HostPrefix) {
			return fmt.Sprintf("group %q", g)
		}
	}
	return ""
}

// EscapeExtraKey escapes an extra key for an Impersonate-Extra-KEY header
// name as client-go does, so keys with '/' or upper case survive.
func EscapeExtraKey(k string) string {
	var b strings.Builder
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-!#$&'*+.^_`|~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
