package e2e

import (
	"context"
	"os/exec"
)

func execCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(cmd.Environ(), "KUBECACHEDIR=/tmp/backhaul-e2e-kubecache")
	return cmd
}
