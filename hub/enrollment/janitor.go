package enrollment

import (
	"context"
	"time"

	"github.com/hashicorp/go-hclog"
	"sigs.k8s.io/controller-runtime/pkg/manager"
)

// Janitor deletes expired bootstrap tokens every interval. It is a
// controller-runtime runnable that runs on the leading replica only.
type Janitor struct {
	tokens   *BootstrapTokens
	interval time.Duration
	log      hclog.Logger
}

var _ manager.LeaderElectionRunnable = (*Janitor)(nil)

// NewJanitor returns the janitor of tokens.
func NewJanitor(tokens *BootstrapTokens, interval time.Duration, log hclog.Logger) *Janitor {
	return &Janitor{tokens: tokens, interval: interval, log: log}
}

// Start deletes expired tokens now and every interval until ctx ends.
func (j *Janitor) Start(ctx context.Context) error {
	t := time.NewTicker(j.interval)
	defer t.Stop()
	for {
		if n, err := j.tokens.DeleteExpired(ctx); err != nil && ctx.Err() == nil {
			j.log.Warn("deleting expired bootstrap tokens", "error", err)
		} else if n > 0 {
			j.log.Info("deleted expired bootstrap tokens", "count", n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// NeedLeaderElection: only the leader deletes tokens.
func (j *Janitor) NeedLeaderElection() bool { return true }
