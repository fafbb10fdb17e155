package deploy

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"

	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/test/harness"
)

const (
	testToken     = "abcdef.0123456789abcdef"
	reissuedToken = "zyxwvu.9876543210zyxwvu"
	testImage     = "registry.example/backhaul-agent:v1.2.3"
)

// result is one run of onboard.sh.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return "exit " + strconv.Itoa(r.code) + "\n--- stdout\n" + r.stdout + "--- stderr\n" + r.stderr
}

// shell is dash when installed (Debian's /bin/sh), the strictest common
// POSIX shell.
func shell() string {
	if p, err := exec.LookPath("dash"); err == nil {
		return p
	}
	return "sh"
}

// runScript runs onboard.sh with args, through wrap (which may move it into
// a network namespace), with a clean environment whose PATH starts with the
// harness's kubectl.
func runScript(t *testing.T, ctx context.Context, wrap func(ctx context.Context, name string, args ...string) *exec.Cmd, args ...string) result {
	t.Helper()
	return runScriptPath(t, ctx, wrap, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", args...)
}

// runScriptPath is runScript with the system part of PATH given.
func runScriptPath(t *testing.T, ctx context.Context, wrap func(ctx context.Context, name string, args ...string) *exec.Cmd, path string, args ...string) result {
	t.Helper()
	home := t.TempDir()
	cmd := wrap(ctx, shell(), append([]string{repoPath(t, onboardScript)}, args...)...)
	cmd.Env = []string{
		"PATH=" + filepath.Dir(kubectlBinary(t)) + ":" + path,
		"HOME=" + home,
		"TMPDIR=" + home,
		"LANG=C",
	}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		r.code = exit.ExitCode()
	default:
		t.Fatalf("run onboard.sh: %v", err)
	}
	t.Logf("onboard.sh %s (%v, exit %d)\n%s%s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), r.code, r.stdout, r.stderr)
	return r
}

// TestOnboardArgs needs no cluster: bad arguments fail before kubectl runs.
func TestOnboardArgs(t *testing.T) {
	ctx := testContext(t, time.Minute)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"help", []string{"--help"}, 0, []string{"Usage:", "--no-propagation", "backhaul:propagators", "cluster-admin", "--wait-timeout", "--uninstall"}},
		{"no arguments", nil, 2, []string{"--hub-url is required", "--cluster is required", "--token is required", "--hub-ca-data or --hub-ca-file is required"}},
		{"bad values", []string{"--hub-url", "https://hub", "--cluster", "Dep_2", "--token", "not-a-token", "--hub-ca-data", "x",
			"--mode", "statefulset", "--wait-timeout", "soon", "--image", "a b", "--namespace", "Agents"},
			2, []string{"--hub-url 'https://hub': want wss://", "--cluster 'Dep_2'", "want a bootstrap token", "--mode 'statefulset'",
				"--wait-timeout 'soon'", "--image 'a b'", "--namespace 'Agents'"}},
		{"both CAs", []string{"--hub-url=wss://hub:8443", "--cluster=c", "--token=" + testToken, "--hub-ca-data=eA==", "--hub-ca-file=/etc/hostname"},
			2, []string{"not both"}},
		{"unknown option", []string{"--frobnicate"}, 2, []string{"unknown option: --frobnicate"}},
		{"missing value", []string{"--hub-url", "wss://hub", "--cluster"}, 2, []string{"--cluster needs a value"}},
		{"flag with a value", []string{"--uninstall=yes"}, 2, []string{"--uninstall takes no value"}},
		{"positional", []string{"dep2"}, 2, []string{"unexpected argument: dep2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := runScript(t, ctx, exec.CommandContext, tc.args...)
			if r.code != tc.code {
				t.Errorf("exit %d, want %d\n%s", r.code, tc.code, r)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stdout+r.stderr, w) {
					t.Errorf("output lacks %q\n%s", w, r)
				}
			}
			if tc.code != 0 && !strings.Contains(r.stderr, "--help") {
				t.Errorf("an argument error should point at --help\n%s", r)
			}
			if strings.Contains(r.stdout+r.stderr, "not-a-token") {
				t.Errorf("a token must never be echoed\n%s", r)
			}
		})
	}

	t.Run("unreachable cluster", func(t *testing.T) {
		kc := writeFile(t, "kubeconfig", `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`)
		ca := writeFile(t, "ca.crt", "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
		r := runScript(t, ctx, exec.CommandContext, "--hub-url=wss://hub:8443", "--cluster=c", "--token="+testToken,
			"--hub-ca-file="+ca, "--kubeconfig="+kc, "--wait-timeout=0")
		if r.code != 1 || !strings.Contains(r.stderr, "kubectl cannot reach the cluster") {
			t.Errorf("want exit 1 and a message about reaching the cluster\n%s", r)
		}
	})
}

// TestOnboardScriptLint: the script is POSIX sh.
func TestOnboardScriptLint(t *testing.T) {
	script := repoPath(t, onboardScript)
	dash, err := exec.LookPath("dash")
	if err != nil {
		harness.Skip(t, "dash not installed")
	}
	if out, err := exec.CommandContext(t.Context(), dash, "-n", script).CombinedOutput(); err != nil {
		t.Errorf("dash -n: %v\n%s", err, out)
	}
	sc, err := exec.LookPath("shellcheck")
	if err != nil {
		harness.Skip(t, "shellcheck not installed (make deps installs it)")
	}
	if out, err := exec.CommandContext(t.Context(), sc, "-s", "sh", script).CombinedOutput(); err != nil {
		t.Errorf("shellcheck -s sh: %v\n%s", err, out)
	}
}

// statusServer stands in for the hub's /v1/enroll/status, on the member
// namespace's host address, which processes inside the namespace reach.
type statusServer struct {
	srv    *httptest.Server
	hubURL string // wss://HostIP:port
	caFile string

	mu     sync.Mutex
	answer func(poll int) (int, identity.EnrollStatus)
	polls  int
}

func startStatusServer(t *testing.T, m *harness.Member) *statusServer {
	t.Helper()
	ca, err := harness.NewCA(t.TempDir(), "hub-ca")
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile, err := ca.Serving("hub", []string{m.Netns.HostIP.String()})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(m.Netns.HostIP.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	s := &statusServer{caFile: ca.CertFile}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.Listener.Close()
	s.srv.Listener = ln
	s.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	s.hubURL = "wss://" + ln.Addr().String()
	s.set(func(int) (int, identity.EnrollStatus) {
		return http.StatusOK, identity.EnrollStatus{Cluster: onboardMember}
	})
	return s
}

// set installs how the server answers and resets the poll count.
func (s *statusServer) set(answer func(poll int) (int, identity.EnrollStatus)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answer, s.polls = answer, 0
}

func (s *statusServer) pollCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.polls
}

func (s *statusServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != identity.PathEnrollStatus || r.Method != http.MethodGet {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+testToken {
		http.Error(w, "unknown token", http.StatusUnauthorized)
		return
	}
	s.mu.Lock()
	s.polls++
	code, st := s.answer(s.polls)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(st)
}

// TestOnboard runs onboard.sh inside a member's namespace, as an operator
// would at an edge site, through its whole life: install, rerun, switch to
// the DaemonSet, propagation on and off, the wait for the hub, uninstall.
func TestOnboard(t *testing.T) {
	e := requireEnv(t)
	m := e.members[onboardMember]
	ctx := testContext(t, 5*time.Minute)
	hub := startStatusServer(t, m)
	caPEM, err := os.ReadFile(hub.caFile)
	if err != nil {
		t.Fatal(err)
	}
	caData := base64.StdEncoding.EncodeToString(caPEM)
	run := func(args ...string) result {
		t.Helper()
		return runScript(t, ctx, m.Netns.Command, append([]string{"--kubeconfig", m.AdminKubeconfig}, args...)...)
	}
	install := func(extra ...string) result {
		t.Helper()
		return run(append([]string{"--hub-url", hub.hubURL, "--cluster", onboardMember, "--token", testToken,
			"--hub-ca-file", hub.caFile, "--image", testImage}, extra...)...)
	}
	mustSucceed := func(t *testing.T, r result) {
		t.Helper()
		if r.code != 0 {
			t.Fatalf("onboard.sh failed:\n%s", r)
		}
	}
	secretData := func(t *testing.T) map[string]string {
		t.Helper()
		var s corev1.Secret
		getJSON(t, ctx, m, &s, "-n", agentNamespace, "get", "secret", agentName)
		d := map[string]string{}
		for k, v := range s.Data {
			d[k] = string(v)
		}
		return d
	}

	ok := t.Run("a CA without a certificate writes nothing", func(t *testing.T) {
		bad := writeFile(t, "not-a-ca.pem", "hello\n")
		r := run("--hub-url", hub.hubURL, "--cluster", onboardMember, "--token", testToken, "--hub-ca-file", bad, "--wait-timeout", "0")
		if r.code != 1 || !strings.Contains(r.stderr, "holds no PEM certificate") {
			t.Errorf("want exit 1 and a message about the CA\n%s", r)
		}
		if exists(t, ctx, m, "namespace", agentNamespace) {
			t.Errorf("namespace %s was created before the arguments were checked", agentNamespace)
		}
	})

	ok = ok && t.Run("install", func(t *testing.T) {
		r := run("--hub-url", hub.hubURL, "--cluster", onboardMember, "--token", testToken,
			"--hub-ca-data", caData, "--image", testImage, "--wait-timeout", "0")
		mustSucceed(t, r)
		if !strings.Contains(r.stdout, "==> ") {
			t.Errorf("no progress lines\n%s", r)
		}
		checkInstalled(t, ctx, m, agentNamespace, "Deployment")
		if got := secretData(t); got["bootstrap-token"] != testToken || got["hub-ca.crt"] != string(caPEM) {
			t.Errorf("Secret data %v: want bootstrap-token and hub-ca.crt", got)
		}
		var cm corev1.ConfigMap
		getJSON(t, ctx, m, &cm, "-n", agentNamespace, "get", "configmap", agentName)
		if cm.Data["hub-url"] != hub.hubURL || cm.Data["cluster"] != onboardMember {
			t.Errorf("ConfigMap data %v", cm.Data)
		}
		var crb rbacv1.ClusterRoleBinding
		getJSON(t, ctx, m, &crb, "get", "clusterrolebinding", propagatorsBinding)
		if crb.RoleRef.Kind != "ClusterRole" || crb.RoleRef.Name != "cluster-admin" ||
			!slices.Equal(crb.Subjects, []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "Group", Name: propagatorsBinding}}) {
			t.Errorf("ClusterRoleBinding %s: roleRef %+v subjects %+v", propagatorsBinding, crb.RoleRef, crb.Subjects)
		}

		// The whole chain the hub uses to push: the agent's account,
		// impersonating backhaul:hub in backhaul:propagators.
		token := strings.TrimSpace(kubectl(t, ctx, m, "-n", agentNamespace, "create", "token", agentName, "--duration=10m"))
		if _, _, err := m.KubectlAs(ctx, token, "--as=backhaul:hub", "--as-group="+propagatorsBinding,
			"-n", "default", "create", "configmap", "pushed-by-hub", "--from-literal=k=v"); err != nil {
			t.Errorf("the hub cannot push through the agent: %v", err)
		}
		if _, _, err := m.KubectlAs(ctx, token, "--as=backhaul:hub", "-n", "default", "get", "configmap", "pushed-by-hub"); err == nil {
			t.Errorf("backhaul:hub without the propagators group should have no rights")
		}
	})

	ok = ok && t.Run("rerun keeps the agent's certificate", func(t *testing.T) {
		// What the agent does after enrolling, with its own credentials.
		token := strings.TrimSpace(kubectl(t, ctx, m, "-n", agentNamespace, "create", "token", agentName, "--duration=10m"))
		if _, _, err := m.KubectlAs(ctx, token, "-n", agentNamespace, "patch", "secret", agentName, "--type=merge",
			"-p", `{"data":{"tls.crt":"`+base64.StdEncoding.EncodeToString([]byte("agent cert"))+
				`","tls.key":"`+base64.StdEncoding.EncodeToString([]byte("agent key"))+`"}}`); err != nil {
			t.Fatal(err)
		}
		objects := []string{"namespace/" + agentNamespace, "clusterrole/" + agentName, "clusterrolebinding/" + agentName,
			"clusterrolebinding/" + propagatorsBinding}
		namespaced := []string{"deployment/" + agentName, "serviceaccount/" + agentName, "role/" + agentName,
			"rolebinding/" + agentName, "secret/" + agentName, "configmap/" + agentName}
		versions := func() string {
			return kubectl(t, ctx, m, append([]string{"get", "-o", "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.metadata.resourceVersion} {end}"}, objects...)...) +
				kubectl(t, ctx, m, append([]string{"-n", agentNamespace, "get", "-o", "jsonpath={range .items[*]}{.kind}/{.metadata.name}={.metadata.resourceVersion} {end}"}, namespaced...)...)
		}
		before := versions()
		mustSucceed(t, install("--wait-timeout", "0"))
		if after := versions(); after != before {
			t.Errorf("a rerun with the same arguments changed objects:\nbefore %s\nafter  %s", before, after)
		}
		got := secretData(t)
		if got["tls.crt"] != "agent cert" || got["tls.key"] != "agent key" || got["bootstrap-token"] != testToken {
			t.Errorf("after a rerun the Secret holds %v", got)
		}

		// A reissued token replaces the old one, and only that.
		mustSucceed(t, install("--token", reissuedToken, "--wait-timeout", "0"))
		got = secretData(t)
		if got["tls.crt"] != "agent cert" || got["tls.key"] != "agent key" || got["bootstrap-token"] != reissuedToken ||
			got["hub-ca.crt"] != string(caPEM) {
			t.Errorf("after a rerun with a new token the Secret holds %v", got)
		}
		mustSucceed(t, install("--wait-timeout", "0"))
	})

	ok = ok && t.Run("daemonset", func(t *testing.T) {
		r := install("--mode", "daemonset", "--wait-timeout", "0")
		mustSucceed(t, r)
		checkInstalled(t, ctx, m, agentNamespace, "DaemonSet")
		if exists(t, ctx, m, "-n", agentNamespace, "deployment", agentName) {
			t.Errorf("the Deployment is still there after switching to --mode daemonset")
		}
		if got := secretData(t); got["tls.crt"] != "agent cert" {
			t.Errorf("switching modes lost the agent's certificate: %v", got)
		}
		// Idempotent in this mode too.
		mustSucceed(t, install("--mode", "daemonset", "--wait-timeout", "0"))
	})

	ok = ok && t.Run("propagation binding", func(t *testing.T) {
		mustSucceed(t, install("--no-propagation", "--wait-timeout", "0"))
		if exists(t, ctx, m, "clusterrolebinding", propagatorsBinding) {
			t.Errorf("--no-propagation left the binding an earlier run made")
		}
		// An operator's narrower binding of the same name is theirs.
		kubectl(t, ctx, m, "create", "clusterrolebinding", propagatorsBinding, "--clusterrole=view", "--group="+propagatorsBinding)
		r := install("--wait-timeout", "0")
		mustSucceed(t, r)
		var crb rbacv1.ClusterRoleBinding
		getJSON(t, ctx, m, &crb, "get", "clusterrolebinding", propagatorsBinding)
		if crb.RoleRef.Name != "view" || !strings.Contains(r.stdout, "left as is") {
			t.Errorf("the operator's binding was replaced (roleRef %s)\n%s", crb.RoleRef.Name, r)
		}
		mustSucceed(t, install("--no-propagation", "--wait-timeout", "0"))
		if !exists(t, ctx, m, "clusterrolebinding", propagatorsBinding) {
			t.Errorf("--no-propagation removed a binding the operator made")
		}
		kubectl(t, ctx, m, "delete", "clusterrolebinding", propagatorsBinding)
		mustSucceed(t, install("--wait-timeout", "0"))
		if !exists(t, ctx, m, "clusterrolebinding", propagatorsBinding) {
			t.Errorf("the default run did not bind %s again", propagatorsBinding)
		}
	})

	ok = ok && t.Run("wait until connected", func(t *testing.T) {
		hub.set(func(poll int) (int, identity.EnrollStatus) {
			st := identity.EnrollStatus{Cluster: onboardMember}
			if poll >= 3 {
				st.Connected, st.Agents, st.AgentVersion = true, 2, "v9.9.9"
			}
			return http.StatusOK, st
		})
		r := install("--wait-timeout", "60")
		mustSucceed(t, r)
		if n := hub.pollCount(); n != 3 {
			t.Errorf("%d polls of the status endpoint, want 3", n)
		}
		if !strings.Contains(r.stdout, "is connected") || !strings.Contains(r.stdout, "agents: 2") {
			t.Errorf("no line saying the cluster is connected\n%s", r)
		}
	})

	ok = ok && t.Run("wait with wget", func(t *testing.T) {
		// Where curl is missing the script falls back to wget.
		if _, err := exec.LookPath("wget"); err != nil {
			harness.Skip(t, "wget not installed")
		}
		hub.set(func(poll int) (int, identity.EnrollStatus) {
			return http.StatusOK, identity.EnrollStatus{Cluster: onboardMember, Connected: poll >= 2, Agents: 1}
		})
		r := runScriptPath(t, ctx, m.Netns.Command, pathWithout(t, "curl"), "--kubeconfig", m.AdminKubeconfig,
			"--hub-url", hub.hubURL, "--cluster", onboardMember, "--token", testToken,
			"--hub-ca-file", hub.caFile, "--image", testImage, "--wait-timeout", "60")
		mustSucceed(t, r)
		if n := hub.pollCount(); n != 2 || !strings.Contains(r.stdout, "is connected") {
			t.Errorf("%d polls, want 2 and a line saying the cluster is connected\n%s", n, r)
		}
	})

	ok = ok && t.Run("wait times out", func(t *testing.T) {
		hub.set(func(int) (int, identity.EnrollStatus) {
			return http.StatusOK, identity.EnrollStatus{Cluster: onboardMember}
		})
		r := install("--wait-timeout", "3")
		if r.code == 0 {
			t.Fatalf("want a failure when the cluster never connects\n%s", r)
		}
		if hub.pollCount() < 1 {
			t.Errorf("the status endpoint was never polled")
		}
		for _, want := range []string{
			"did not connect within 3s",
			"kubectl -n backhaul-system logs deploy/backhaul-agent",
			"HTTPS_PROXY",
			hub.hubURL,
			"backhaulctl cluster add dep2 --reissue-token",
			"tls.crt",
			"the Secret has tls.crt",
		} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("the hints lack %q\n%s", want, r)
			}
		}
	})

	ok = ok && t.Run("expired token", func(t *testing.T) {
		hub.set(func(int) (int, identity.EnrollStatus) { return http.StatusUnauthorized, identity.EnrollStatus{} })
		r := install("--wait-timeout", "60")
		if r.code != 1 || !strings.Contains(r.stderr, "expired") || !strings.Contains(r.stderr, "--reissue-token") {
			t.Errorf("want exit 1 with the token hint at the first 401\n%s", r)
		}
		if n := hub.pollCount(); n != 1 {
			t.Errorf("%d polls after a 401, want 1", n)
		}
	})

	ok = ok && t.Run("uninstall", func(t *testing.T) {
		for range 2 { // idempotent
			mustSucceed(t, run("--uninstall"))
			for _, obj := range [][]string{
				{"-n", agentNamespace, "deployment", agentName},
				{"-n", agentNamespace, "daemonset", agentName},
				{"-n", agentNamespace, "secret", agentName},
				{"-n", agentNamespace, "configmap", agentName},
				{"-n", agentNamespace, "serviceaccount", agentName},
				{"-n", agentNamespace, "role", agentName},
				{"-n", agentNamespace, "rolebinding", agentName},
				{"clusterrole", agentName},
				{"clusterrolebinding", agentName},
				{"clusterrolebinding", propagatorsBinding},
			} {
				if exists(t, ctx, m, obj...) {
					t.Errorf("after --uninstall %s remains", strings.Join(obj, " "))
				}
			}
			// No namespace controller runs here: a deleted namespace stays
			// Terminating.
			if out := kubectl(t, ctx, m, "get", "namespace", agentNamespace, "--ignore-not-found",
				"-o", "jsonpath={.metadata.name} {.metadata.deletionTimestamp}"); strings.TrimSpace(out) != "" &&
				len(strings.Fields(out)) != 2 {
				t.Errorf("namespace %s not deleted: %q", agentNamespace, out)
			}
		}
	})

	_ = ok && t.Run("another namespace, shared", func(t *testing.T) {
		const ns = "edge-agent"
		mustSucceed(t, install("--namespace", ns, "--wait-timeout", "0"))
		checkInstalled(t, ctx, m, ns, "Deployment")
		// Something else lives there (a hub, say): uninstall keeps it.
		kubectl(t, ctx, m, "-n", ns, "create", "configmap", "not-the-agents", "--from-literal=k=v")
		r := run("--uninstall", "--namespace", ns)
		mustSucceed(t, r)
		if !strings.Contains(r.stdout, "Keeping namespace "+ns) || !exists(t, ctx, m, "-n", ns, "configmap", "not-the-agents") {
			t.Errorf("uninstall should keep a namespace that holds other objects\n%s", r)
		}
		if exists(t, ctx, m, "-n", ns, "deployment", agentName) || exists(t, ctx, m, "clusterrole", agentName) {
			t.Errorf("uninstall --namespace %s left the agent behind", ns)
		}
	})
}

// checkInstalled asserts what one onboard.sh run leaves in namespace ns,
// with kind (Deployment or DaemonSet) as the agent's workload.
func checkInstalled(t *testing.T, ctx context.Context, m *harness.Member, ns, kind string) {
	t.Helper()
	for _, obj := range [][]string{
		{"namespace", ns},
		{"-n", ns, "serviceaccount", agentName},
		{"-n", ns, "role", agentName},
		{"-n", ns, "rolebinding", agentName},
		{"-n", ns, "secret", agentName},
		{"-n", ns, "configmap", agentName},
		{"clusterrole", agentName},
		{"clusterrolebinding", agentName},
	} {
		if !exists(t, ctx, m, obj...) {
			t.Errorf("%s missing after onboard.sh", strings.Join(obj, " "))
		}
	}
	sa := rbacv1.Subject{Kind: "ServiceAccount", Name: agentName, Namespace: ns}
	var crb rbacv1.ClusterRoleBinding
	getJSON(t, ctx, m, &crb, "get", "clusterrolebinding", agentName)
	if !slices.Equal(crb.Subjects, []rbacv1.Subject{sa}) {
		t.Errorf("ClusterRoleBinding %s subjects %+v, want %+v", agentName, crb.Subjects, sa)
	}
	var rb rbacv1.RoleBinding
	getJSON(t, ctx, m, &rb, "-n", ns, "get", "rolebinding", agentName)
	if !slices.Equal(rb.Subjects, []rbacv1.Subject{sa}) {
		t.Errorf("RoleBinding %s subjects %+v, want %+v", agentName, rb.Subjects, sa)
	}
	var spec corev1.PodSpec
	switch kind {
	case "Deployment":
		var d appsv1.Deployment
		getJSON(t, ctx, m, &d, "-n", ns, "get", "deployment", agentName)
		spec = d.Spec.Template.Spec
	case "DaemonSet":
		var d appsv1.DaemonSet
		getJSON(t, ctx, m, &d, "-n", ns, "get", "daemonset", agentName)
		spec = d.Spec.Template.Spec
		if !spec.HostNetwork {
			t.Errorf("DaemonSet not on the host network")
		}
	}
	if len(spec.Containers) != 1 || spec.Containers[0].Image != testImage {
		t.Errorf("%s containers %+v: want one with image %s", kind, spec.Containers, testImage)
	}
}

// getJSON runs kubectl get ... -o json as admin and decodes into v.
func getJSON(t *testing.T, ctx context.Context, m *harness.Member, v any, args ...string) {
	t.Helper()
	decodeJSON(t, kubectl(t, ctx, m, append(args, "-o", "json")...), v)
}

// pathWithout is a PATH directory holding links to every program in
// /usr/bin and /bin except those named.
func pathWithout(t *testing.T, names ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, src := range []string{"/usr/bin", "/bin"} {
		entries, err := os.ReadDir(src)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if slices.Contains(names, e.Name()) {
				continue
			}
			link := filepath.Join(dir, e.Name())
			if _, err := os.Lstat(link); err == nil {
				continue
			}
			if err := os.Symlink(filepath.Join(src, e.Name()), link); err != nil {
				t.Fatal(err)
			}
		}
	}
	return dir
}
