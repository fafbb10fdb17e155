package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"k8s.io/client-go/util/keyutil"

	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/pkg/kubestatus"
	"backhaul.io/backhaul/tunnel"
)

// Credentials gets the agent a client certificate from the hub with a
// one-use bootstrap token, keeps it in a CredentialStore, and renews it at
// two thirds of its life. Renewal swaps the certificate for future dials;
// the open session and its streams carry on.
type Credentials struct {
	Store   CredentialStore
	Cluster string
	// HubURL is the agent's wss:// URL; enrollment uses it as https://.
	HubURL string
	// TLS verifies the hub. When it has no RootCAs, the hub CA from the
	// store is used (onboard.sh puts it there).
	TLS   *tls.Config
	Proxy func(*http.Request) (*url.URL, error)
	Log   hclog.Logger
	// Retry paces failed attempts; nil means 5 s doubling to 5 min, with
	// full jitter.
	Retry *tunnel.Backoff

	current atomic.Pointer[tls.Certificate]
	// renewAt is when to renew current: two thirds of the way from when
	// it was adopted to its expiry. (Not from NotBefore: the hub
	// back-dates certificates for clock skew.)
	renewAt    atomic.Int64
	clientOnce sync.Once
	client     *http.Client
}

// ErrEnrollRefused is a refusal by the hub that retrying won't fix soon:
// the token is bad, spent or expired, or the cluster was removed.
var ErrEnrollRefused = errors.New("the hub refused enrollment")

// GetClientCertificate is the tls.Config hook that presents the current
// certificate on every new connection to the hub.
func (c *Credentials) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	if cert := c.current.Load(); cert != nil {
		return cert, nil
	}
	return &tls.Certificate{}, nil
}

func (c *Credentials) adopt(cert *tls.Certificate) {
	now := time.Now()
	c.renewAt.Store(now.Add(cert.Leaf.NotAfter.Sub(now) * 2 / 3).UnixNano())
	c.current.Store(cert)
}

// NotAfter is the current certificate's expiry (zero when none).
func (c *Credentials) NotAfter() time.Time {
	if cert := c.current.Load(); cert != nil && cert.Leaf != nil {
		return cert.Leaf.NotAfter
	}
	return time.Time{}
}

// Ensure returns once the agent holds a valid certificate: the stored one,
// or one enrolled for now. It retries until ctx ends.
func (c *Credentials) Ensure(ctx context.Context) error {
	b := c.retry()
	for {
		err := c.ensureOnce(ctx)
		if err == nil {
			b.Reset()
			return nil
		}
		wait := b.Next()
		c.Log.Error("no agent certificate yet", "store", c.Store.String(), "error", err, "retry_in", wait.Round(time.Millisecond))
		if err := b.Sleep(ctx, wait); err != nil {
			return err
		}
	}
}

func (c *Credentials) retry() *tunnel.Backoff {
	if c.Retry == nil {
		c.Retry = &tunnel.Backoff{Base: 5 * time.Second, Max: 5 * time.Minute}
	}
	return c.Retry
}

func (c *Credentials) ensureOnce(ctx context.Context) error {
	st, err := c.Store.Load(ctx)
	if err != nil {
		return err
	}
	if c.TLS.RootCAs == nil && len(st.HubCA) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(st.HubCA) {
			return fmt.Errorf("%s: %s holds no PEM certificate", c.Store, identity.KeyHubCA)
		}
		c.TLS.RootCAs = pool
	}
	if cert, err := c.usable(st.CertPEM, st.KeyPEM); err == nil {
		c.adopt(cert)
		c.Log.Info("using stored agent certificate", "store", c.Store.String(), "not_after", cert.Leaf.NotAfter)
		return nil
	} else if len(st.CertPEM) > 0 {
		c.Log.Warn("stored agent certificate is not usable", "error", err)
	}
	if st.BootstrapToken == "" {
		return fmt.Errorf("%w: %s has neither a usable certificate nor a bootstrap token (issue one with `backhaulctl cluster add %s --reissue-token`)", ErrEnrollRefused, c.Store, c.Cluster)
	}
	err = c.request(ctx, identity.PathEnroll, st.BootstrapToken)
	if errors.Is(err, ErrEnrollRefused) {
		// Another replica sharing the store may have spent the token a
		// moment ago; its certificate serves us too.
		if st2, lerr := c.Store.Load(ctx); lerr == nil {
			if cert, uerr := c.usable(st2.CertPEM, st2.KeyPEM); uerr == nil {
				c.adopt(cert)
				return nil
			}
		}
	}
	return err
}

// usable parses a stored pair and checks it is for this cluster and not
// about to expire.
func (c *Credentials) usable(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	if len(certPEM) == 0 || len(keyPEM) == 0 {
		return nil, errors.New("no certificate stored")
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	id, err := identity.AgentIdentityOf(cert.Leaf)
	if err != nil {
		return nil, err
	}
	if id.Cluster != c.Cluster {
		return nil, fmt.Errorf("stored certificate is for cluster %q, not %q", id.Cluster, c.Cluster)
	}
	// A certificate with any life left is still good for renewing
	// itself (Run renews at once when little is left); only an expired
	// one needs a new bootstrap token.
	if !time.Now().Before(cert.Leaf.NotAfter) {
		return nil, fmt.Errorf("stored certificate expired at %s", cert.Leaf.NotAfter)
	}
	return &cert, nil
}

// Run renews the certificate before it expires, until ctx ends. It also
// adopts a newer certificate another replica stored.
func (c *Credentials) Run(ctx context.Context) {
	b := c.retry()
	wait := time.Until(time.Unix(0, c.renewAt.Load()))
	for {
		if b.Sleep(ctx, max(wait, 0)) != nil {
			return
		}
		if err := c.renew(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			wait = b.Next()
			c.Log.Warn("certificate renewal failed", "error", err, "not_after", c.NotAfter(), "retry_in", wait.Round(time.Millisecond))
			continue
		}
		b.Reset()
		wait = time.Until(time.Unix(0, c.renewAt.Load()))
	}
}

func (c *Credentials) renew(ctx context.Context) error {
	if st, err := c.Store.Load(ctx); err == nil {
		// Another agent sharing the store renewed a moment ago: adopt its
		// certificate if it is fresh (most of its life left).
		if cert, err := c.usable(st.CertPEM, st.KeyPEM); err == nil && cert.Leaf.NotAfter.After(c.NotAfter()) &&
			time.Until(cert.Leaf.NotAfter) > cert.Leaf.NotAfter.Sub(cert.Leaf.NotBefore)/2 {
			c.adopt(cert)
			c.Log.Info("adopted a newer stored certificate", "not_after", cert.Leaf.NotAfter)
			return nil
		}
	}
	return c.request(ctx, identity.PathRenew, "")
}

// request sends a fresh CSR to path, authenticated by token (enroll) or
// the current certificate (renew), and stores what comes back.
func (c *Credentials) request(ctx context.Context, path, token string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: identity.AgentCNPrefix + c.Cluster},
	}, key)
	if err != nil {
		return err
	}
	u, err := url.Parse(c.HubURL)
	if err != nil {
		return err
	}
	u.Scheme, u.Path = "https", path
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(),
		bytes.NewReader(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-pem-file")
	req.Header.Set(tunnel.HeaderCluster, c.Cluster)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.httpClient().Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		msg := kubestatus.Message(body)
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			return fmt.Errorf("%w: %s: %d %s", ErrEnrollRefused, path, resp.StatusCode, msg)
		}
		return fmt.Errorf("%s: %d %s", path, resp.StatusCode, msg)
	}
	var er identity.EnrollResponse
	if err := json.Unmarshal(body, &er); err != nil {
		return fmt.Errorf("%s: bad answer: %w", path, err)
	}
	keyPEM, err := keyutil.MarshalPrivateKeyToPEM(key)
	if err != nil {
		return err
	}
	cert, err := c.usable([]byte(er.Certificate), keyPEM)
	if err != nil {
		return fmt.Errorf("%s: the hub's certificate: %w", path, err)
	}
	if err := c.Store.SaveCert(ctx, []byte(er.Certificate), keyPEM); err != nil {
		return err
	}
	c.adopt(cert)
	c.Log.Info("agent certificate stored", "via", path, "store", c.Store.String(), "not_after", cert.Leaf.NotAfter)
	return nil
}

func (c *Credentials) httpClient() *http.Client {
	c.clientOnce.Do(func() {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = c.TLS
		// A connection opened for enrollment (no certificate yet) must
		// not be reused to renew: each request gets a fresh handshake
		// presenting the current certificate.
		tr.DisableKeepAlives = true
		tr.Proxy = c.Proxy
		if tr.Proxy == nil {
			tr.Proxy = http.ProxyFromEnvironment
		}
		c.client = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	})
	return c.client
}
