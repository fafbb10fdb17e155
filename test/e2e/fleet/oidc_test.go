package fleet

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"backhaul.io/backhaul/test/harness"
)

// oidcIssuer is a minimal OpenID Connect issuer: discovery, a JWKS and
// RS256 tokens. The host kube-apiserver trusts it through
// --authentication-config, so its tokens reach the hub as any caller's do
// and the hub accepts them by TokenReview.
type oidcIssuer struct {
	url  string
	key  *rsa.PrivateKey
	srv  *http.Server
	auth string // path of the AuthenticationConfiguration file
}

const oidcAudience = "backhaul"

// startOIDC serves on the root namespace's end of the host cluster's veth
// (10.251.<index>.1), which exists once the host's namespace does; it
// listens on all addresses so it can start first.
func startOIDC(dir string, hostIndex int) (*oidcIssuer, error) {
	ca, err := harness.NewCA(dir, "oidc-ca")
	if err != nil {
		return nil, err
	}
	ip := fmt.Sprintf("10.251.%d.1", hostIndex)
	certFile, keyFile, err := ca.Serving("oidc", []string{ip})
	if err != nil {
		return nil, err
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", ":0")
	if err != nil {
		return nil, err
	}
	o := &oidcIssuer{key: key, url: fmt.Sprintf("https://%s:%d", ip, ln.Addr().(*net.TCPAddr).Port)}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{
			"issuer": o.url, "jwks_uri": o.url + "/jwks",
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{{
			"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "k1",
			"n": b64(key.N.Bytes()), "e": b64(big.NewInt(int64(key.E)).Bytes()),
		}}})
	})
	o.srv = &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = o.srv.ServeTLS(ln, "", "") }()

	caJSON, _ := json.Marshal(string(ca.CertPEM))
	o.auth = filepath.Join(dir, "authentication.yaml")
	cfg := fmt.Sprintf(`apiVersion: apiserver.config.k8s.io/v1
kind: AuthenticationConfiguration
jwt:
- issuer:
    url: %s
    audiences: [%s]
    certificateAuthority: %s
  claimMappings:
    username: {claim: sub, prefix: "oidc:"}
    groups: {claim: groups, prefix: "oidc:"}
`, o.url, oidcAudience, caJSON)
	if err := os.WriteFile(o.auth, []byte(cfg), 0o600); err != nil {
		o.srv.Close()
		return nil, err
	}
	return o, nil
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// token issues an RS256 ID token for sub in groups, valid for an hour.
func (o *oidcIssuer) token(sub string, groups ...string) (string, error) {
	now := time.Now()
	head, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": "k1"})
	claims, _ := json.Marshal(map[string]any{
		"iss": o.url, "aud": oidcAudience, "sub": sub, "groups": groups,
		"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Hour).Unix(),
	})
	signing := b64(head) + "." + b64(claims)
	sum := sha256.Sum256([]byte(signing))
	sig, err := rsa.SignPKCS1v15(rand.Reader, o.key, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return signing + "." + b64(sig), nil
}

// TestOIDCCaller: a token from an OIDC issuer the host cluster trusts
// authenticates at the hub (TokenReview), is authorized by host RBAC on
// its OIDC group, and reaches the member as the OIDC user.
func TestOIDCCaller(t *testing.T) {
	e := requireEnv(t)
	tok, err := e.oidc.token("carol", "fleet-ops")
	if err != nil {
		t.Fatal(err)
	}
	user, groups := e.whoami(t, "f1", tok, nil)
	assert.Equal(t, "oidc:carol", user)
	assert.Contains(t, groups, "oidc:fleet-ops")
	// The host grants oidc:fleet-ops f1 only.
	code, body := e.gatewayDo(t, http.MethodGet, "/clusters/f2/version", tok, nil, "")
	assert.Equal(t, http.StatusForbidden, code, body)
	// A token the issuer did not sign is refused.
	forged := tok[:len(tok)-8] + "AAAAAAAA"
	code, body = e.gatewayDo(t, http.MethodGet, "/clusters/f1/version", forged, nil, "")
	assert.Equal(t, http.StatusUnauthorized, code, body)
}
