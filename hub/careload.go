package hub

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/go-hclog"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"backhaul.io/backhaul/hub/enrollment"
)

// caReload reads the hub CA again (its files, or its Secret) while the hub
// runs, and puts a changed one in force (enrollment.CA.Replace): agents'
// and replicas' certificates are verified against the new bundle from
// their next handshake, new certificates are signed by its key, and the
// handshake names its CAs. Sessions and connections already up stay: they
// were verified when they began. A bundle or key that does not parse, or
// that holds no certificate of the key, is logged and the CA in force
// stays.
type caReload struct {
	ca      *enrollment.CA
	read    func(ctx context.Context) (certPEM, keyPEM []byte, err error)
	source  string
	every   time.Duration
	changed func()
	log     hclog.Logger
}

var _ Reloader = (*caReload)(nil)

// caReload is the reloader of cfg.Host.CA, from the files or the Secret
// it was read from.
func (o *Options) caReload(cfg *Config) *caReload {
	r := &caReload{ca: cfg.Host.CA, every: o.reloadEvery(), changed: cfg.caNamesChanged, log: cfg.Log.Named("certs")}
	if o.CACertFile != "" {
		r.source = o.CACertFile
		r.read = func(context.Context) ([]byte, []byte, error) {
			c, err := os.ReadFile(o.CACertFile)
			if err != nil {
				return nil, nil, err
			}
			k, err := os.ReadFile(o.CAKeyFile)
			return c, k, err
		}
		return r
	}
	c, name := cfg.Host.Direct, types.NamespacedName{Namespace: o.Namespace, Name: enrollment.CASecretName}
	r.source = "secret " + name.String()
	r.read = func(ctx context.Context) ([]byte, []byte, error) { return secretCA(ctx, c, name) }
	return r
}

func secretCA(ctx context.Context, c client.Client, name types.NamespacedName) ([]byte, []byte, error) {
	var s corev1.Secret
	if err := c.Get(ctx, name, &s); err != nil {
		return nil, nil, err
	}
	return s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey], nil
}

// Start reads the CA every r.every until ctx ends.
func (r *caReload) Start(ctx context.Context) error {
	// The CA in force came from this source at start.
	var last []byte
	if c, k, err := r.read(ctx); err == nil {
		last = sum(c, k)
	}
	tick := time.NewTicker(r.every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		rctx, cancel := context.WithTimeout(ctx, r.every)
		certPEM, keyPEM, err := r.read(rctx)
		cancel()
		if err != nil {
			r.log.Warn("cannot read the hub CA; keeping the CA in force", "source", r.source, "error", err)
			continue
		}
		// The key is part of the version: a re-keyed CA under the same
		// certificate bytes cannot happen, but a bundle reordered around
		// the same key is a new version too.
		if s := sum(certPEM, keyPEM); !bytes.Equal(s, last) {
			last = s
			if err := r.ca.Replace(certPEM, keyPEM); err != nil {
				r.log.Error("hub CA does not load; keeping the CA in force", "source", r.source, "error", err)
				continue
			}
			if r.changed != nil {
				r.changed()
			}
			r.log.Info("hub CA reloaded", "source", r.source, "cas", len(r.ca.Certs()), "signer", fmt.Sprint(r.ca.Cert().Subject))
		}
	}
}

func sum(parts ...[]byte) []byte {
	h := sha256.New()
	for _, p := range parts {
		h.Write(p)
	}
	return h.Sum(nil)
}
