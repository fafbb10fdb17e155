package harness

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// run runs a short-lived helper command (ip, nft, kubectl, ...) and returns
// its stdout. On failure the error names the command and includes its output.
func run(ctx context.Context, stdin io.Reader, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	return runCmd(cmd, stdin)
}

// runCmd runs cmd like run does.
func runCmd(cmd *exec.Cmd, stdin io.Reader) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdin = stdin
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		out := strings.TrimSpace(stderr.String() + "\n" + stdout.String())
		return stdout.String(), fmt.Errorf("%s: %w: %s", strings.Join(cmd.Args, " "), err, out)
	}
	return stdout.String(), nil
}
