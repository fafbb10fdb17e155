package image

import (
	"archive/tar"
	"bytes"
	"context"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"backhaul.io/backhaul/test/harness"
)

// ownerLabel marks every container, network and image a run creates with
// the pid of the test process, so a later run can remove what a killed one
// left behind.
const ownerLabel = "backhaul.io/e2e-image"

// dockerTimeout bounds one docker command; none of ours should take long.
const dockerTimeout = 2 * time.Minute

// docker runs the docker CLI and returns its trimmed standard output; the
// error carries standard error.
func docker(args ...string) (string, error) {
	return dockerIn(nil, args...)
}

func dockerIn(stdin []byte, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "docker", args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("docker %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// skipUnlessDocker skips the test, saying why, unless it runs as root and a
// Docker Engine answers.
func skipUnlessDocker(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		harness.Skip(t, "skipping: needs root (mounted files are handed to uid 65532, the images' user)")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		harness.Skip(t, "skipping: no docker CLI on $PATH")
	}
	if _, err := docker("info", "--format", "{{.ServerVersion}}"); err != nil {
		harness.Skip(t, "skipping: docker info failed, no Docker Engine to run the images: %v", err)
	}
}

// world is what one run creates in Docker; cleanup removes all of it.
type world struct {
	t          *testing.T
	suffix     string
	containers []string
	networks   []string
	images     []string
}

func newWorld(t *testing.T) *world {
	w := &world{t: t, suffix: strconv.Itoa(os.Getpid())}
	sweepStale(t)
	t.Cleanup(w.cleanup)
	return w
}

// name makes a Docker object name unique to this run.
func (w *world) name(base string) string { return "bh-e2e-" + base + "-" + w.suffix }

func (w *world) label() string { return ownerLabel + "=" + w.suffix }

// network creates a bridge network; internal ones have no route out of
// their subnet, so their members reach only each other.
func (w *world) network(base string, internal bool) string {
	w.t.Helper()
	name := w.name(base)
	args := []string{"network", "create", "--driver", "bridge", "--label", w.label()}
	if internal {
		args = append(args, "--internal")
	}
	if _, err := docker(append(args, name)...); err != nil {
		w.t.Fatal(err)
	}
	w.networks = append(w.networks, name)
	return name
}

// endpoint is one network a container joins, with the alias it has there.
type endpoint struct{ network, alias string }

// container creates a container attached to every network in nets (the
// first one carries published ports) and starts it. opts go to docker
// create before the image; args after it.
func (w *world) container(base string, nets []endpoint, opts []string, image string, args ...string) string {
	w.t.Helper()
	name := w.name(base)
	create := []string{"create", "--name", name, "--label", w.label(),
		"--network", nets[0].network, "--network-alias", nets[0].alias}
	create = append(create, opts...)
	create = append(create, image)
	if _, err := docker(append(create, args...)...); err != nil {
		w.t.Fatal(err)
	}
	w.containers = append(w.containers, name)
	for _, n := range nets[1:] {
		if _, err := docker("network", "connect", "--alias", n.alias, n.network, name); err != nil {
			w.t.Fatal(err)
		}
	}
	if _, err := docker("start", name); err != nil {
		w.t.Fatal(err)
	}
	return name
}

// logTails puts the last lines of every container's output in the test log.
func (w *world) logTails(lines int) {
	for _, c := range w.containers {
		out, err := exec.Command("docker", "logs", "--tail", strconv.Itoa(lines), c).CombinedOutput()
		if err != nil {
			w.t.Logf("docker logs %s: %v", c, err)
		}
		state, _ := docker("inspect", "-f", "{{.State.Status}} exit={{.State.ExitCode}} {{.State.Error}}", c)
		w.t.Logf("---- %s (%s), last %d lines:\n%s", c, state, lines, out)
	}
}

func (w *world) cleanup() {
	if w.t.Failed() {
		w.logTails(40)
	}
	if len(w.containers) > 0 {
		if _, err := docker(append([]string{"rm", "-f", "-v"}, w.containers...)...); err != nil {
			w.t.Logf("cleanup: %v", err)
		}
	}
	for _, n := range w.networks {
		if _, err := docker("network", "rm", n); err != nil {
			w.t.Logf("cleanup: %v", err)
		}
	}
	for _, i := range w.images {
		if _, err := docker("image", "rm", i); err != nil {
			w.t.Logf("cleanup: %v", err)
		}
	}
}

// sweepStale removes containers, networks and images labelled by earlier
// runs whose process is gone (killed before its cleanup ran).
func sweepStale(t *testing.T) {
	// Images have no .Label in docker's format; their name ends in the pid.
	kinds := []struct {
		what, format string
		list, rm     []string
	}{
		{"container", `{{.ID}} {{.Label "` + ownerLabel + `"}}`, []string{"ps", "-a"}, []string{"rm", "-f", "-v"}},
		{"network", `{{.ID}} {{.Label "` + ownerLabel + `"}}`, []string{"network", "ls"}, []string{"network", "rm"}},
		{"image", `{{.Repository}}:{{.Tag}} {{.Repository}}`, []string{"image", "ls"}, []string{"image", "rm"}},
	}
	for _, k := range kinds {
		args := append(append([]string{}, k.list...), "--filter", "label="+ownerLabel, "--format", k.format)
		out, err := docker(args...)
		if err != nil {
			t.Logf("sweep: %v", err)
			continue
		}
		for _, line := range strings.Split(out, "\n") {
			id, owner, ok := strings.Cut(strings.TrimSpace(line), " ")
			if !ok {
				continue
			}
			pid, err := strconv.Atoi(owner[strings.LastIndex(owner, "-")+1:])
			if err == nil && (pid == os.Getpid() || syscall.Kill(pid, 0) == nil) {
				continue // this run's, or a live run's
			}
			if _, err := docker(append(append([]string{}, k.rm...), id)...); err != nil {
				t.Logf("sweep: %v", err)
			} else {
				t.Logf("sweep: removed %s %s left by an earlier run", k.what, id)
			}
		}
	}
}

// rootfsImage imports an almost empty image (only /tmp and /data, both
// world-writable) to run host binaries in, mounted read-only. No registry
// is reachable, so nothing can be pulled to run etcd and kube-apiserver in.
func (w *world) rootfsImage() string {
	w.t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, d := range []string{"tmp/", "data/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d, Mode: 0o1777, ModTime: time.Unix(0, 0)}); err != nil {
			w.t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		w.t.Fatal(err)
	}
	ref := w.name("rootfs") + ":latest"
	if _, err := dockerIn(b.Bytes(), "import", "--change", "LABEL "+w.label(), "-", ref); err != nil {
		w.t.Fatal(err)
	}
	w.images = append(w.images, ref)
	return ref
}

// binaryMounts returns docker create options that mount the host binary at
// path read-only at target in a container, together with its ELF
// interpreter and shared libraries when it is not static, and whether it is
// static.
func binaryMounts(path, target string) (opts []string, static bool, err error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, false, err
	}
	interp := ""
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b := make([]byte, p.Filesz)
			if _, err := p.ReadAt(b, 0); err != nil {
				f.Close()
				return nil, false, fmt.Errorf("%s: read interpreter: %w", path, err)
			}
			interp = strings.TrimRight(string(b), "\x00")
		}
	}
	f.Close()
	host, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil, false, err
	}
	opts = []string{"-v", host + ":" + target + ":ro"}
	if interp == "" {
		return opts, true, nil
	}
	// Dynamic: mount the loader and every library ldd resolves at the paths
	// the binary looks for them. The pure-Go resolver avoids glibc's NSS
	// modules, which the container lacks.
	libs := map[string]string{interp: interp}
	out, err := exec.Command("ldd", path).Output()
	if err != nil {
		return nil, false, fmt.Errorf("ldd %s: %w", path, err)
	}
	for _, m := range lddPath.FindAllStringSubmatch(string(out), -1) {
		libs[m[1]] = m[1]
	}
	for inContainer := range libs {
		host, err := filepath.EvalSymlinks(inContainer)
		if err != nil {
			return nil, false, err
		}
		opts = append(opts, "-v", host+":"+inContainer+":ro")
	}
	return append(opts, "-e", "GODEBUG=netdns=go"), false, nil
}

// lddPath matches the resolved path of one library in ldd's output.
var lddPath = regexp.MustCompile(`=>\s+(/\S+)\s+\(0x`)

// publishedPort returns the host address docker published port on.
func publishedPort(container, port string) (string, error) {
	out, err := docker("port", container, port)
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "127.0.0.1:") {
			return l, nil
		}
	}
	return "", errors.New("no 127.0.0.1 binding in: " + out)
}
