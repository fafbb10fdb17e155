package hub

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/hub/enrollment"
	"backhaul.io/backhaul/pkg/testutil"
)

// TestHubCAReloadRotatesWithoutRefusingOldCertificates plays a CA rotation
// on a running hub: the operator puts the new CA and its key in force with
// the old certificate still in the bundle, then drops the old one. Each
// step takes effect without a restart; a broken bundle changes nothing.
func TestHubCAReloadRotatesWithoutRefusingOldCertificates(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	write := func(certPEM, keyPEM []byte) {
		require.NoError(t, os.WriteFile(certFile, certPEM, 0o600))
		require.NoError(t, os.WriteFile(keyFile, keyPEM, 0o600))
	}
	newCA := func(name string) (*enrollment.CA, []byte) {
		ca, err := enrollment.NewCA(name)
		require.NoError(t, err)
		key, err := ca.KeyPEM()
		require.NoError(t, err)
		return ca, key
	}
	oldCA, oldKey := newCA("old")
	nextCA, nextKey := newCA("next")
	write(oldCA.PEM(), oldKey)

	ca, err := enrollment.LoadCAFiles(certFile, keyFile)
	require.NoError(t, err)
	var changed atomic.Int32
	o := &Options{CACertFile: certFile, CAKeyFile: keyFile, certReloadEvery: 20 * time.Millisecond}
	r := o.caReload(&Config{Host: &HostConfig{CA: ca}, caNamesChanged: func() { changed.Add(1) }, Log: testutil.Logger(t)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	issuedByOld := replicaCert(t, ca)
	verifies := func(c *x509.Certificate) bool {
		_, err := c.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		return err == nil
	}
	require.True(t, verifies(issuedByOld))
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		require.Eventually(t, cond, 10*time.Second, 10*time.Millisecond, what)
	}

	// A bundle that holds no certificate of the key is refused whole.
	write(nextCA.PEM(), oldKey)
	time.Sleep(100 * time.Millisecond) // several reload periods; nothing may change
	assert.Equal(t, "old", ca.Cert().Subject.CommonName)
	assert.Zero(t, changed.Load())

	// Step 1: the next CA signs, the old one is still trusted.
	write(append(nextCA.PEM(), oldCA.PEM()...), nextKey)
	waitFor("the next CA signs", func() bool { return ca.Cert().Subject.CommonName == "next" })
	assert.True(t, verifies(issuedByOld), "certificates of the old CA still verify during the overlap")
	issuedByNext := replicaCert(t, ca)
	assert.True(t, verifies(issuedByNext))
	assert.Len(t, ca.Certs(), 2)
	assert.Positive(t, changed.Load(), "the CAs the handshake names follow")

	// Step 2: the old CA goes.
	write(nextCA.PEM(), nextKey)
	waitFor("the old CA is no longer trusted", func() bool { return !verifies(issuedByOld) })
	assert.True(t, verifies(issuedByNext))
}

// replicaCert is a certificate ca signs now.
func replicaCert(t *testing.T, ca *enrollment.CA) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	certPEM, err := ca.SignReplica(&key.PublicKey, "hub-0", time.Hour)
	require.NoError(t, err)
	block, _ := pem.Decode(certPEM)
	require.NotNil(t, block)
	c, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	return c
}
