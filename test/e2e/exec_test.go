package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os/exec"
)

func execCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(cmd.Environ(), "KUBECACHEDIR=/tmp/backhaul-e2e-kubecache")
	return cmd
}

func memberTLS(t interface{ Fatal(...any) }, caPEM []byte) *tls.Config {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("member CA has no certificates")
	}
	return &tls.Config{RootCAs: pool, ServerName: "kubernetes.default.svc", MinVersion: tls.VersionTLS12}
}
