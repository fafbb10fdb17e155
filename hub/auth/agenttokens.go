package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/util/validation"

	"backhaul.io/backhaul/hub/session"
	"backhaul.io/backhaul/tunnel"
)

var (
	// ErrAgentAuth: the agent's credentials are wrong or missing.
	// (Credentials that are right for another cluster wrap
	// session.ErrAgentForbidden instead.)
	ErrAgentAuth = errors.New("agent authentication failed")
	// errNoAgentCredentials: the request carries nothing this
	// authenticator understands; the next in an AgentAuthChain may.
	errNoAgentCredentials = fmt.Errorf("%w: no credentials", ErrAgentAuth)
)

// AgentAuthChain tries authenticators in order; the first that recognises
// the request's credentials decides.
type AgentAuthChain []session.AgentAuthenticator

var _ session.AgentAuthenticator = AgentAuthChain(nil)

// AuthenticateAgent implements session.AgentAuthenticator.
func (c AgentAuthChain) AuthenticateAgent(r *http.Request) (string, error) {
	// An out-of-date certificate of ours is no credential, but it says
	// which cluster's agent was turned away: keep that for the answer.
	var refusal error
	for _, a := range c {
		cluster, err := a.AuthenticateAgent(r)
		if !errors.Is(err, errNoAgentCredentials) {
			return cluster, err
		}
		if ar := (*session.AgentRefusal)(nil); refusal == nil && errors.As(err, &ar) {
			refusal = err
		}
	}
	if refusal != nil {
		return "", refusal
	}
	return "", fmt.Errorf("%w: present a client certificate or a bearer token", errNoAgentCredentials)
}

// AgentTokens authenticates agents by a per-cluster bearer token read from a
// CSV file ("token,cluster" per line) and/or a directory holding one file
// per cluster whose content is the token (a Kubernetes Secret mounted as a
// volume). Both are re-read when they change, so tokens rotate without a
// restart. Only SHA-256 digests are kept in memory.
type AgentTokens struct {
	file, dir string

	mu      sync.Mutex
	checked time.Time
	stamp   string
	byName  map[string][32]byte
}

// NewAgentTokens loads the sources once and fails on a malformed file.
func NewAgentTokens(file, dir string) (*AgentTokens, error) {
	if file == "" && dir == "" {
		return nil, errors.New("no agent token source: set --agent-token-file or --agent-token-dir")
	}
	a := &AgentTokens{file: file, dir: dir}
	if err := a.reload(true); err != nil {
		return nil, err
	}
	return a, nil
}

var (
	_ session.AgentAuthenticator = (*AgentTokens)(nil)
	_ Clusters                   = (*AgentTokens)(nil)
)

// AuthenticateAgent checks the bearer token against the named cluster's.
func (a *AgentTokens) AuthenticateAgent(r *http.Request) (string, error) {
	cluster := r.Header.Get(tunnel.HeaderCluster)
	token, ok := Bearer(r.Header.Get("Authorization"))
	if !ok {
		return "", errNoAgentCredentials
	}
	if cluster == "" {
		return "", fmt.Errorf("%w: no cluster name", ErrAgentAuth)
	}
	_ = a.reload(false)
	a.mu.Lock()
	want, known := a.byName[cluster]
	a.mu.Unlock()
	got := sha256.Sum256([]byte(token))
	// Compare even for unknown clusters so timing does not reveal names.
	if subtle.ConstantTimeCompare(got[:], want[:]) != 1 || !known {
		return "", fmt.Errorf("%w: invalid token for cluster %q", ErrAgentAuth, cluster)
	}
	return cluster, nil
}

// Known reports whether cluster has a token.
func (a *AgentTokens) Known(cluster string) bool {
	_ = a.reload(false)
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.byName[cluster]
	return ok
}

// Names lists the clusters that have a token (the per-cluster CONNECT
// sockets follow them).
func (a *AgentTokens) Names() []string {
	_ = a.reload(false)
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]string, 0, len(a.byName))
	for n := range a.byName {
		out = append(out, n)
	}
	return out
}

// reload re-reads the sources when their modification stamp changed, at most
// once a second unless forced. A broken file keeps the last good set.
func (a *AgentTokens) reload(force bool) error {
	a.mu.Lock()
	if !force && time.Since(a.checked) < time.Second {
		a.mu.Unlock()
		return nil
	}
	a.checked = time.Now()
	a.mu.Unlock()

	stamp, err := a.stampNow()
	if err != nil {
		return err
	}
	a.mu.Lock()
	same := stamp == a.stamp && a.byName != nil
	a.mu.Unlock()
	if same {
		return nil
	}
	m := map[string][32]byte{}
	if a.file != "" {
		if err := readTokenCSV(a.file, m); err != nil {
			return err
		}
	}
	if a.dir != "" {
		if err := readTokenDir(a.dir, m); err != nil {
			return err
		}
	}
	a.mu.Lock()
	a.byName, a.stamp = m, stamp
	a.mu.Unlock()
	return nil
}

func (a *AgentTokens) stampNow() (string, error) {
	var b strings.Builder
	for _, p := range []string{a.file, a.dir} {
		if p == "" {
			continue
		}
		// A mounted Secret swaps a ..data symlink; stat through it.
		for _, q := range []string{p, filepath.Join(p, "..data")} {
			if fi, err := os.Stat(q); err == nil {
				fmt.Fprintf(&b, "%s:%d:%d;", q, fi.ModTime().UnixNano(), fi.Size())
			} else if q == p {
				return "", fmt.Errorf("agent tokens: %w", err)
			}
		}
	}
	return b.String(), nil
}

func readTokenCSV(path string, into map[string][32]byte) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("agent token file: %w", err)
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	r.Comment = '#'
	r.TrimLeadingSpace = true
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("agent token file %s: %w", path, err)
		}
		line, _ := r.FieldPos(0)
		if len(rec) != 2 {
			return fmt.Errorf("agent token file %s:%d: want token,cluster", path, line)
		}
		if err := addToken(into, rec[1], rec[0]); err != nil {
			return fmt.Errorf("agent token file %s:%d: %w", path, line, err)
		}
	}
}

func readTokenDir(dir string, into map[string][32]byte) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("agent token dir: %w", err)
	}
	for _, e := range entries {
		name := e.Name()
		if strings.HasPrefix(name, ".") || e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return fmt.Errorf("agent token dir: %w", err)
		}
		if err := addToken(into, name, strings.TrimSpace(string(b))); err != nil {
			return fmt.Errorf("agent token dir %s: %w", dir, err)
		}
	}
	return nil
}

func addToken(into map[string][32]byte, cluster, token string) error {
	if errs := validation.IsDNS1123Label(cluster); len(errs) > 0 {
		return fmt.Errorf("cluster name %q: %s", cluster, strings.Join(errs, "; "))
	}
	if len(token) < 16 {
		return fmt.Errorf("token for cluster %q is shorter than 16 characters", cluster)
	}
	if _, dup := into[cluster]; dup {
		return fmt.Errorf("cluster %q has two tokens", cluster)
	}
	into[cluster] = sha256.Sum256([]byte(token))
	return nil
}
