// Package image runs the hub and agent images from deploy/Dockerfile the way
// they are deployed: a member API server (etcd + kube-apiserver) and the
// agent on an internal "site" network, the agent and the hub on an internal
// "wan" network, and the hub also on a plain bridge with its port published
// on 127.0.0.1 for the test. The hub never shares a network with the API
// server, so the test's requests reach the member only through the tunnel.
//
// It needs root and a Docker Engine (it skips, saying why, without them),
// and builds the images with make image; nothing is pulled.
package image

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"backhaul.io/backhaul/test/harness"
)

// nonroot is the user the images run as (distroless's "nonroot").
const nonroot = "65532:65532"

// readyTimeout bounds the wait for the first request through the tunnel:
// kube-apiserver's start-up and the agent's first connection.
const readyTimeout = 2 * time.Minute

// clusterName is the member the agent serves.
const clusterName = "site1"

func TestImages(t *testing.T) {
	skipUnlessDocker(t)
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bins, err := harness.LocateBinaries()
	if err != nil {
		t.Fatalf("%v\n(make deps kube-bins installs etcd and builds kube-apiserver)", err)
	}

	start := time.Now()
	images := buildImages(t, root)
	t.Logf("make image: %s", time.Since(start).Round(100*time.Millisecond))
	for _, img := range images {
		t.Logf("image %s: %s (base %s)", img.ref, img.size, img.base)
		checkImage(t, img)
	}

	// The fixtures' directory goes after the containers that mount it:
	// cleanups run last registered first.
	tmp := t.TempDir()
	w := newWorld(t)
	f := writeFixtures(t, w, tmp)
	site := w.network("site", true)
	wan := w.network("wan", true)
	public := w.network("public", false)

	rootfs := w.rootfsImage()
	etcdMounts, etcdStatic, err := binaryMounts(bins.Etcd, "/usr/local/bin/etcd")
	if err != nil {
		t.Fatal(err)
	}
	kasMounts, kasStatic, err := binaryMounts(bins.KubeAPIServer, "/usr/local/bin/kube-apiserver")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd %s: static=%v; kube-apiserver %s: static=%v (dynamic ones run with the host's loader and libraries mounted)",
		bins.Etcd, etcdStatic, bins.KubeAPIServer, kasStatic)

	started := time.Now()
	etcd := w.container("etcd", []endpoint{{site, "etcd"}},
		append([]string{"--user", nonroot, "--tmpfs", "/data:rw,mode=1777"}, etcdMounts...),
		rootfs, "/usr/local/bin/etcd",
		"--name=site1", "--data-dir=/data/etcd",
		"--listen-client-urls=http://0.0.0.0:2379", "--advertise-client-urls=http://etcd:2379",
		"--listen-peer-urls=http://127.0.0.1:2380", "--initial-advertise-peer-urls=http://127.0.0.1:2380",
		"--initial-cluster=site1=http://127.0.0.1:2380", "--initial-cluster-state=new",
		"--logger=zap", "--log-outputs=stderr")
	apiserver := w.container("apiserver", []endpoint{{site, "apiserver"}},
		append([]string{"--user", nonroot, "-v", f.memberDir + ":/etc/kubernetes:ro"}, kasMounts...),
		rootfs, "/usr/local/bin/kube-apiserver",
		"--etcd-servers=http://etcd:2379",
		"--secure-port=6443",
		"--service-cluster-ip-range=10.96.0.0/16",
		// The agent impersonates callers: AlwaysAllow lets it, and admits
		// every caller; the member's own RBAC is covered by test/e2e.
		"--authorization-mode=AlwaysAllow",
		"--token-auth-file=/etc/kubernetes/tokens.csv",
		"--tls-cert-file=/etc/kubernetes/apiserver.crt",
		"--tls-private-key-file=/etc/kubernetes/apiserver.key",
		"--service-account-key-file=/etc/kubernetes/sa.key",
		"--service-account-signing-key-file=/etc/kubernetes/sa.key",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--cert-dir=/tmp/apiserver-certs",
		"--enable-priority-and-fairness=false",
		"--watch-cache=false", // Debian's etcd 3.4; see test/harness/member.go
		"--profiling=false")
	hub := w.container("hub", []endpoint{{public, "hub"}, {wan, "hub"}},
		[]string{"--read-only", "-p", "127.0.0.1::8443", "-v", f.hubDir + ":/etc/backhaul:ro"},
		images["hub"].ref,
		"--listen=:8443", "--metrics-listen=:9090",
		"--tls-cert-file=/etc/backhaul/tls.crt", "--tls-key-file=/etc/backhaul/tls.key",
		"--agent-token-file=/etc/backhaul/agent-tokens.csv",
		"--token-auth-file=/etc/backhaul/callers.csv")
	agent := w.container("agent", []endpoint{{site, "agent"}, {wan, "agent"}},
		[]string{"--read-only", "-v", f.agentDir + ":/etc/backhaul:ro"},
		images["agent"].ref,
		"--hub-url=wss://hub:8443", "--hub-ca-file=/etc/backhaul/hub-ca.crt",
		"--cluster="+clusterName, "--token-file=/etc/backhaul/token",
		"--kubeconfig=/etc/backhaul/member.kubeconfig")

	addr, err := publishedPort(hub, "8443/tcp")
	if err != nil {
		t.Fatal(err)
	}
	c := newCaller(t, f, addr)

	// The member's version, through hub → wan → agent → site → apiserver.
	body := c.waitOK(t, "/clusters/"+clusterName+"/version")
	t.Logf("first request through the tunnel %s after the containers started", time.Since(started).Round(100*time.Millisecond))
	var ver struct{ GitVersion string }
	if err := json.Unmarshal(body, &ver); err != nil {
		t.Fatalf("/version: %v: %s", err, body)
	}
	if want := kubeVersion(t, bins.KubeAPIServer); ver.GitVersion != want {
		t.Errorf("member /version says %q, the kube-apiserver binary %q", ver.GitVersion, want)
	}

	// A Namespace object, served with the caller's identity.
	body = c.waitOK(t, "/clusters/"+clusterName+"/api/v1/namespaces/default")
	var ns struct {
		Kind     string
		Metadata struct{ Name string }
	}
	if err := json.Unmarshal(body, &ns); err != nil || ns.Kind != "Namespace" || ns.Metadata.Name != "default" {
		t.Errorf("GET namespaces/default: %v: %s", err, body)
	}

	t.Run("topology", func(t *testing.T) {
		members := func(net string) map[string]bool {
			out, err := docker("network", "inspect", "-f", "{{.Internal}}{{range .Containers}} {{.Name}}{{end}}", net)
			if err != nil {
				t.Fatal(err)
			}
			fields := strings.Fields(out)
			if net != public && fields[0] != "true" {
				t.Errorf("network %s is not internal", net)
			}
			m := map[string]bool{}
			for _, n := range fields[1:] {
				m[n] = true
			}
			return m
		}
		want := map[string]map[string]bool{
			site:   {etcd: true, apiserver: true, agent: true},
			wan:    {hub: true, agent: true},
			public: {hub: true},
		}
		for net, want := range want {
			got := members(net)
			for _, c := range []string{etcd, apiserver, hub, agent} {
				if got[c] != want[c] {
					t.Errorf("network %s: container %s attached=%v, want %v", net, c, got[c], want[c])
				}
			}
		}
	})

	t.Run("nonroot", func(t *testing.T) {
		for c, bin := range map[string]string{hub: "backhaul-hub", agent: "backhaul-agent"} {
			out, err := docker("inspect", "-f", "{{.Config.User}} {{.State.Pid}}", c)
			if err != nil {
				t.Fatal(err)
			}
			user, pid, _ := strings.Cut(out, " ")
			if user != nonroot {
				t.Errorf("%s: Config.User %q, want %q", c, user, nonroot)
			}
			checkProcUID(t, c, bin, pid)
		}
	})
}

// builtImage is one image make image produced.
type builtImage struct {
	name, ref, version, size, base string
}

// buildImages runs make image (which rebuilds the binaries only when Go's
// cache says they changed) and returns the images by target, tagged with
// make's VERSION.
func buildImages(t *testing.T, root string) map[string]builtImage {
	t.Helper()
	cmd := exec.Command("make", "--no-print-directory", "-C", root, "image")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	// make image ends by listing "REPO:TAG  SIZE" of the images it tagged.
	images := map[string]builtImage{}
	for _, m := range imageLine.FindAllStringSubmatch(string(out), -1) {
		images[m[2]] = builtImage{name: "backhaul-" + m[2], ref: m[1] + ":" + m[3], version: m[3], size: m[4]}
	}
	for _, name := range []string{"hub", "agent"} {
		img, ok := images[name]
		if !ok {
			t.Fatalf("make image did not list backhaul-%s:\n%s", name, out)
		}
		labels := inspectLabels(t, img.ref)
		img.base = labels["org.opencontainers.image.base.name"]
		images[name] = img
	}
	return images
}

var imageLine = regexp.MustCompile(`(?m)^(\S*backhaul-(hub|agent)):(\S+)\s+(\S+)\s*$`)

func inspectLabels(t *testing.T, ref string) map[string]string {
	t.Helper()
	out, err := docker("image", "inspect", "-f", "{{json .Config.Labels}}", ref)
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{}
	if err := json.Unmarshal([]byte(out), &labels); err != nil {
		t.Fatalf("labels of %s: %v: %s", ref, err, out)
	}
	return labels
}

// checkImage checks an image's metadata and that its binary reports the
// version the image is tagged with.
func checkImage(t *testing.T, img builtImage) {
	t.Helper()
	labels := inspectLabels(t, img.ref)
	for k, want := range map[string]string{
		"org.opencontainers.image.title":   img.name,
		"org.opencontainers.image.version": img.version,
	} {
		if labels[k] != want {
			t.Errorf("%s: label %s=%q, want %q", img.ref, k, labels[k], want)
		}
	}
	if labels["org.opencontainers.image.revision"] == "" {
		t.Errorf("%s: no org.opencontainers.image.revision label", img.ref)
	}
	out, err := docker("image", "inspect", "-f", "{{.Config.User}}|{{json .Config.Entrypoint}}", img.ref)
	if err != nil {
		t.Fatal(err)
	}
	if want := nonroot + `|["/` + img.name + `"]`; out != want {
		t.Errorf("%s: user|entrypoint %s, want %s", img.ref, out, want)
	}
	out, err = docker("run", "--rm", "--network", "none", img.ref, "--version")
	if err != nil {
		t.Fatal(err)
	}
	if want := img.name + " " + img.version; out != want {
		t.Errorf("%s --version: %q, want %q", img.ref, out, want)
	}
}

// checkProcUID reads the container's main process from the host's /proc,
// when the daemon shares its pid namespace, and checks it runs as 65532.
func checkProcUID(t *testing.T, container, bin, pid string) {
	t.Helper()
	comm, err := os.ReadFile("/proc/" + pid + "/comm")
	if err != nil || strings.TrimSpace(string(comm)) != bin {
		t.Logf("%s: process %s is not %s here (%v, %q): another pid namespace; Config.User checked only", container, pid, bin, err, comm)
		return
	}
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		t.Logf("%s: %v", container, err)
		return
	}
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) == 5 && f[0] == "Uid:" {
			t.Logf("%s: pid %s (%s) uids %v", container, pid, bin, f[1:])
			for _, id := range f[1:] {
				if id != "65532" {
					t.Errorf("%s: process %s runs with uid %s, want 65532: %s", container, pid, id, sc.Text())
				}
			}
			return
		}
	}
	t.Errorf("%s: no Uid line in /proc/%s/status", container, pid)
}

// kubeVersion is what the kube-apiserver binary says it is ("v1.36.3").
func kubeVersion(t *testing.T, bin string) string {
	t.Helper()
	out, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatalf("%s --version: %v", bin, err)
	}
	f := strings.Fields(string(out)) // "Kubernetes v1.36.3"
	return f[len(f)-1]
}

// fixtures are the files each container mounts, one directory each.
type fixtures struct {
	hubDir, agentDir, memberDir string
	hubCA                       []byte
	callerToken                 string
}

func writeFixtures(t *testing.T, w *world, tmp string) fixtures {
	t.Helper()
	f := fixtures{
		hubDir:      filepath.Join(tmp, "hub"),
		agentDir:    filepath.Join(tmp, "agent"),
		memberDir:   filepath.Join(tmp, "member"),
		callerToken: token(t),
	}
	for _, d := range []string{f.hubDir, f.agentDir, f.memberDir} {
		if err := os.Mkdir(d, 0o750); err != nil {
			t.Fatal(err)
		}
	}
	hubCA, err := harness.NewCA(filepath.Join(tmp, "hub-pki"), "hub-ca")
	if err != nil {
		t.Fatal(err)
	}
	f.hubCA = hubCA.CertPEM
	crt, key, err := hubCA.Serving("hub", []string{"hub", w.name("hub"), "localhost", "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, crt, filepath.Join(f.hubDir, "tls.crt"))
	copyFile(t, key, filepath.Join(f.hubDir, "tls.key"))
	copyFile(t, hubCA.CertFile, filepath.Join(f.agentDir, "hub-ca.crt"))

	memberCA, err := harness.NewCA(filepath.Join(tmp, "member-pki"), "member-ca")
	if err != nil {
		t.Fatal(err)
	}
	crt, key, err = memberCA.Serving("apiserver", []string{"apiserver", w.name("apiserver"), "localhost", "127.0.0.1",
		"10.96.0.1", "kubernetes", "kubernetes.default", "kubernetes.default.svc"})
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, crt, filepath.Join(f.memberDir, "apiserver.crt"))
	copyFile(t, key, filepath.Join(f.memberDir, "apiserver.key"))
	if err := harness.WriteKey(filepath.Join(f.memberDir, "sa.key")); err != nil {
		t.Fatal(err)
	}

	agentHubToken, agentMemberToken := token(t), token(t)
	write(t, filepath.Join(f.memberDir, "tokens.csv"), agentMemberToken+",backhaul-agent,backhaul-agent\n")
	if err := harness.WriteKubeconfig(filepath.Join(f.agentDir, "member.kubeconfig"),
		"https://apiserver:6443", memberCA.CertPEM, agentMemberToken); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(f.agentDir, "token"), agentHubToken+"\n")
	write(t, filepath.Join(f.hubDir, "agent-tokens.csv"), agentHubToken+","+clusterName+"\n")
	write(t, filepath.Join(f.hubDir, "callers.csv"), f.callerToken+",alice,alice,\"team-a\"\n")

	// The containers run as 65532 and read their keys and tokens.
	for _, d := range []string{f.hubDir, f.agentDir, f.memberDir} {
		if err := filepath.Walk(d, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, 65532, 65532)
		}); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func token(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	write(t, to, string(b))
}

// caller is the test process calling the hub on its published port.
type caller struct {
	base, token string
	client      *http.Client
}

func newCaller(t *testing.T, f fixtures, addr string) *caller {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(f.hubCA) {
		t.Fatal("hub CA: no certificate")
	}
	return &caller{
		base:  "https://" + addr,
		token: f.callerToken,
		client: &http.Client{
			Timeout:   10 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
		},
	}
}

func (c *caller) get(path string) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, c.base+path, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, body, err
}

// waitOK polls path until it answers 200 (while the API server starts and
// the agent connects) and returns the body; it fails after readyTimeout
// with the last answer.
func (c *caller) waitOK(t *testing.T, path string) []byte {
	t.Helper()
	deadline := time.Now().Add(readyTimeout)
	last := ""
	for {
		code, body, err := c.get(path)
		if err == nil && code == http.StatusOK {
			return body
		}
		if err != nil {
			last = err.Error()
		} else {
			last = fmt.Sprintf("%d %s", code, bytes.TrimSpace(body))
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: no 200 within %s; last answer: %s", path, readyTimeout, last)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
