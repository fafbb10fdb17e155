package fleet

import (
	"context"

	"errors"
	"fmt"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/hashicorp/go-hclog"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/klog/v2"

	"backhaul.io/backhaul/pkg/logging"
)

// SingletonConfig says how replicas elect the one that does singleton work.
type SingletonConfig struct {
	// Lock is the Lease the replicas compete for.
	Lock resourcelock.Interface
	// LeaseDuration, RenewDeadline and RetryPeriod are client-go's: a
	// leader that cannot renew within RenewDeadline stops its work; another
	// replica takes over LeaseDuration after the last renewal it saw. The
	// Lease records whole seconds, so LeaseDuration is at least 1 s.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
	// Work runs while this replica leads and must return soon after its
	// context ends; the next campaign waits for it, so two replicas never
	// do it at once.
	Work func(ctx context.Context) error
	Log  hclog.Logger
}

// DefaultSingletonTimings are client-go's usual leader-election timings:
// a crashed leader is replaced within 15 s, and one that loses the host
// stops its work after 10 s, 5 s before anyone else may start.
func DefaultSingletonTimings() (lease, renew, retry time.Duration) {
	return 15 * time.Second, 10 * time.Second, 2 * time.Second
}

// Singleton runs work on exactly one replica at a time: the one holding
// the Lease. Serving (agents, callers, forwarding) never depends on it; only
// work with a single writer does (Cluster status, the Propagation
// controller, token clean-up). A replica that loses the Lease stops that
// work at once and campaigns again, and keeps serving meanwhile.
type Singleton struct {
	cfg     SingletonConfig
	leading atomic.Bool
	lost    atomic.Int64
}

// NewSingleton checks cfg.
func NewSingleton(cfg SingletonConfig) (*Singleton, error) {
	if cfg.Lock == nil || cfg.Work == nil || cfg.Log == nil {
		return nil, errors.New("singleton: Lock, Work and Log are required")
	}
	if cfg.LeaseDuration < time.Second || cfg.LeaseDuration <= cfg.RenewDeadline || cfg.RenewDeadline <= cfg.RetryPeriod || cfg.RetryPeriod <= 0 {
		return nil, fmt.Errorf("singleton: want lease duration (at least 1s) > renew deadline > retry period > 0, got %v, %v, %v", cfg.LeaseDuration, cfg.RenewDeadline, cfg.RetryPeriod)
	}
	return &Singleton{cfg: cfg}, nil
}

// Leading says whether this replica does the singleton work now.
func (s *Singleton) Leading() bool { return s.leading.Load() }

// Lost counts the times this replica lost the Lease while leading.
func (s *Singleton) Lost() int64 { return s.lost.Load() }

// Run campaigns until ctx ends; it returns nil then.
func (s *Singleton) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		if err := s.term(ctx); err != nil {
			return err
		}
		if ctx.Err() == nil {
			// A term ended while the hub runs: a lost lease or failed work.
			// Pause one retry period so a failing work function does not
			// spin.
			select {
			case <-ctx.Done():
			case <-time.After(s.cfg.RetryPeriod):
			}
		}
	}
	return nil
}

// term campaigns once, leads until the lease is lost, ctx ends or the work
// returns, and waits for the work to stop.
func (s *Singleton) term(ctx context.Context) error {
	tctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// client-go's elector logs through the context's klog logger.
	tctx = klog.NewContext(tctx, logging.Logr(s.cfg.Log.Named("lease")))
	stopped := make(chan struct{})
	var started atomic.Bool
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:          s.cfg.Lock,
		LeaseDuration: s.cfg.LeaseDuration, RenewDeadline: s.cfg.RenewDeadline, RetryPeriod: s.cfg.RetryPeriod,
		// Not client-go's release: it runs before the work's context ends,
		// and against a host that cannot be reached it retries for many
		// seconds, during which another replica could take over while this
		// one still works. This replica releases itself, on shutdown only,
		// after its work has stopped.
		ReleaseOnCancel: false,
		Name:            s.cfg.Lock.Describe(),
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(lctx context.Context) {
				started.Store(true)
				defer close(stopped)
				s.leading.Store(true)
				s.cfg.Log.Info("leading: starting singleton work", "lease", s.cfg.Lock.Describe(), "identity", s.cfg.Lock.Identity())
				if err := s.cfg.Work(lctx); err != nil && lctx.Err() == nil {
					s.cfg.Log.Error("singleton work failed; giving up the lease", "error", err)
				}
				// Whatever ended the work, this term is over.
				cancel()
			},
			OnStoppedLeading: func() {},
		},
	})
	if err != nil {
		return fmt.Errorf("singleton: %w", err)
	}
	le.Run(tctx)
	if started.Load() {
		<-stopped
		s.leading.Store(false)
		if ctx.Err() != nil {
			s.release()
			return nil
		}
		s.lost.Add(1)
		s.cfg.Log.Warn("stopped singleton work: the lease was lost or the work ended; campaigning again", "lease", s.cfg.Lock.Describe())
	}
	return nil
}

// release hands the Lease over at shutdown, once the work has stopped, so
// the next replica need not wait for it to expire (client-go's release,
// with a short bound).
func (s *Singleton) release() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	rec, _, err := s.cfg.Lock.Get(ctx)
	if err != nil || rec.HolderIdentity != s.cfg.Lock.Identity() {
		return
	}
	now := metav1.NewTime(time.Now())
	if err := s.cfg.Lock.Update(ctx, resourcelock.LeaderElectionRecord{
		LeaderTransitions: rec.LeaderTransitions, LeaseDurationSeconds: 1, RenewTime: now, AcquireTime: now,
	}); err != nil {
		s.cfg.Log.Warn("cannot release the lease; the next replica takes over when it expires", "error", err)
	}
}
