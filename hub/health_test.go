package hub

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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

// Out of rotation, no caller reviews arrive to say the host is back: the
// replica asks the host itself, and stays not ready until it answers.
func TestHostHealthReturnsWhenTheHostAnswers(t *testing.T) {
	var answers atomic.Bool
	probed := make(chan bool, 64)
	h := hostHealth{probe: func(context.Context) error {
		ok := answers.Load()
		probed <- ok
		if ok {
			return nil
		}
		return errors.New("connection refused")
	}}
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { h.run(ctx) })
	defer wg.Wait()
	defer cancel()

	_, _, _ = h.authz(unreachableHost{}).Authorize(ctx, &auth.User{Name: "alice"}, "edge")
	for range 2 {
		assert.False(t, <-probed, "the host still refuses")
	}
	assert.False(t, h.ok(), "not ready while the host does not answer")
	answers.Store(true)
	require.Eventually(t, h.ok, 10*time.Second, 10*time.Millisecond, "ready once the host answers")
}

// Without a host to ask, one failure keeps the replica out for a while.
func TestHostHealthWithoutProbeClearsItself(t *testing.T) {
	var h hostHealth
	h.failed.Store(time.Now().Add(-hostUnavailableFor - time.Second).UnixNano())
	assert.True(t, h.ok())
	h.note(fmt.Errorf("%w: tokenreview: timeout", auth.ErrUnavailable))
	assert.False(t, h.ok())
}
