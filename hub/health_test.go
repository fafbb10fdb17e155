package hub

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"

	"backhaul.io/backhaul/hub/auth"
)

type unreachableHost struct{}

func (unreachableHost) Authorize(context.Context, *auth.User, string) (bool, string, error) {
	return false, "", fmt.Errorf("%w: subjectaccessreview: connection refused", auth.ErrUnavailable)
}

// One review the host could not answer makes the replica not ready.
func TestHostHealthFollowsReviews(t *testing.T) {
	var h hostHealth
	assert.True(t, h.ok())
	allowed, _, _ := h.authz(auth.AllowAuthenticated{}).Authorize(t.Context(), &auth.User{Name: "alice"}, "edge")
	assert.True(t, allowed)
	assert.True(t, h.ok(), "an answered review says nothing")
	_, _, err := h.authz(unreachableHost{}).Authorize(t.Context(), &auth.User{Name: "alice"}, "edge")
	assert.ErrorIs(t, err, auth.ErrUnavailable, "the error passes through")
	assert.False(t, h.ok())
}
