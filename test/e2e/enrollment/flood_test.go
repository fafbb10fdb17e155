package enrollment

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/pkg/identity"
	"backhaul.io/backhaul/pkg/kubestatus"
	"backhaul.io/backhaul/test/harness"
	"backhaul.io/backhaul/tunnel"
)

// The attacker floods /v1/enroll and /v1/enroll/status with well-formed
// bootstrap tokens that do not exist (each one names a Secret to look
// for), from many source addresses, while an operator onboards a cluster.
// Every guess is checked (401, none rate limited here) against the hub's
// cache of token Secrets, so the host API server, whose own request
// counters the test reads before and after, sees no Secret request at all
// but the one update that spends the legitimate token; the legitimate
// enrollment succeeds, and a replay of its token fails.
func TestEnrollmentFloodLeavesTheHostAPIFlat(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	out, err := e.ctl(ctx, "cluster", "add", "legit")
	require.NoError(t, err, out)
	token := tokenIn(t, out)
	poller, enroller := e.client(t, "127.0.0.1"), e.client(t, "127.0.0.2")
	// As onboard.sh does: poll status with the token until the hub
	// answers for it (its cache has seen the new Secret).
	require.NoError(t, harness.WaitFor(ctx, 30*time.Second, 100*time.Millisecond, func() error {
		if code, body := e.status(ctx, poller, token); code != http.StatusOK {
			return fmt.Errorf("status with the new token: %d %s", code, body)
		}
		return nil
	}))
	before := e.secretRequests(t, ctx)

	const sources, perSource = 150, sourceBurst
	csr := newCSR(t)
	flood := func(from, to int) map[string]int {
		var mu sync.Mutex
		codes := map[string]int{}
		var wg sync.WaitGroup
		next := make(chan int)
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range next {
					c := e.client(t, fmt.Sprintf("127.0.1.%d", i+1))
					for j := range perSource {
						kind, code := "enroll", 0
						guess, err := identity.NewToken()
						if err != nil {
							mu.Lock()
							codes["no token: "+err.Error()]++
							mu.Unlock()
							continue
						}
						if j%3 == 2 {
							kind = "status"
							code, _ = e.status(ctx, c, guess.String())
						} else {
							code, _ = e.enroll(ctx, c, "legit", guess.String(), csr)
						}
						mu.Lock()
						codes[fmt.Sprintf("%s %d", kind, code)]++
						mu.Unlock()
					}
				}
			}()
		}
		for i := from; i < to; i++ {
			next <- i
		}
		close(next)
		wg.Wait()
		return codes
	}

	start := time.Now()
	first := flood(0, sources/2)

	// The operator's agent enrolls in the middle of it. A 403 means the
	// hub's Cluster informer has not seen the new Cluster yet; it does not
	// spend the token, and the agent would retry too.
	var certPEM string
	require.NoError(t, harness.WaitFor(ctx, 30*time.Second, 100*time.Millisecond, func() error {
		code, body := e.enroll(ctx, enroller, "legit", token, csr)
		if code != http.StatusOK {
			return fmt.Errorf("legitimate enrollment: %d %s", code, body)
		}
		var er identity.EnrollResponse
		if err := json.Unmarshal(body, &er); err != nil {
			return err
		}
		certPEM = er.Certificate
		return nil
	}))
	block, _ := pem.Decode([]byte(certPEM))
	require.NotNil(t, block)
	cert, err := x509.ParseCertificate(block.Bytes)
	require.NoError(t, err)
	id, err := identity.AgentIdentityOf(cert)
	require.NoError(t, err)
	assert.Equal(t, "legit", id.Cluster)
	// At once, so the hub's cache may still say "unused": the spend is an
	// optimistic-concurrency update, and the replay loses either way.
	code, body := e.enroll(ctx, enroller, "legit", token, csr)
	assert.Equal(t, http.StatusUnauthorized, code, "the spent token again: %s", body)

	second := flood(sources/2, sources)
	elapsed := time.Since(start)
	after := e.secretRequests(t, ctx)

	codes := map[string]int{}
	for _, m := range []map[string]int{first, second} {
		for k, v := range m {
			codes[k] += v
		}
	}
	enrolls, polls := sources*(perSource-perSource/3), sources*(perSource/3)
	assert.Equal(t, map[string]int{"enroll 401": enrolls, "status 401": polls}, codes,
		"every guess reached the token check and was refused")

	delta := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			delta[k] = d
		}
	}
	t.Logf("%d guessed tokens (%d enroll, %d status) from %d addresses in %s; host API Secret requests meanwhile: %v",
		enrolls+polls, enrolls, polls, sources, elapsed.Round(time.Millisecond), delta)
	spent := delta["PUT 200"]
	conflicts := delta["PUT 409"]
	delete(delta, "PUT 200")
	delete(delta, "PUT 409")
	assert.Equal(t, 1.0, spent, "one update spent the legitimate token")
	assert.LessOrEqual(t, conflicts, 1.0, "at most the replay's update, refused")
	assert.Empty(t, delta, "no other Secret request reached the host API (no GET per guess)")

	used, err := e.hostKubectl(ctx, "-n", ns, "get", "secret", identity.BootstrapSecretPrefix+strings.Split(token, ".")[0], "-o", "jsonpath={.data.used}")
	require.NoError(t, err, used)
	assert.Equal(t, "dHJ1ZQ==", used, "the token Secret says used (base64 of true)")

	if logs, err := os.ReadFile(e.hub.Process().LogPath()); err == nil {
		t.Logf("the hub logged %d refusal lines for %d refusals", bytes.Count(logs, []byte("refused enrollment request")), enrolls+polls+1)
	}
}

// The attacker keeps guessing from one address, and claims a new one in
// X-Forwarded-For each time: past the per-source burst it is answered 429
// with Retry-After and a Status saying why, before any token is checked.
func TestEnrollmentRateLimitedPerSource(t *testing.T) {
	e := requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := e.client(t, "127.0.0.250")
	codes := map[int]int{}
	var last *http.Response
	var lastBody []byte
	for i := range sourceBurst + 5 {
		guess, err := identity.NewToken()
		require.NoError(t, err)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.hub.URL+identity.PathEnrollStatus, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+guess.String())
		req.Header.Set("X-Forwarded-For", fmt.Sprintf("10.9.0.%d", i))
		resp, err := c.Do(req)
		require.NoError(t, err)
		lastBody, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		codes[resp.StatusCode]++
		last = resp
	}
	assert.Equal(t, map[int]int{http.StatusUnauthorized: sourceBurst, http.StatusTooManyRequests: 5}, codes)
	require.Equal(t, http.StatusTooManyRequests, last.StatusCode)
	retry, err := strconv.Atoi(last.Header.Get("Retry-After"))
	require.NoError(t, err, "Retry-After in seconds")
	assert.Positive(t, retry)
	assert.Contains(t, kubestatus.Message(lastBody), "too many enrollment requests from this address")
}

var tokenFlag = regexp.MustCompile(`--token[= ]'?([a-z0-9]{6}\.[a-z0-9]{16})`)

func tokenIn(t *testing.T, out string) string {
	t.Helper()
	m := tokenFlag.FindStringSubmatch(out)
	require.NotNil(t, m, "no --token in backhaulctl's output:\n%s", out)
	return m[1]
}

// client talks to the hub from source address src (any 127/8 address is
// local on Linux), so the hub sees a distinct source per address.
func (e *environment) client(t *testing.T, src string) *http.Client {
	t.Helper()
	tr := &http.Transport{
		DialContext:     (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}).DialContext,
		TLSClientConfig: e.hub.TLSConfig(),
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}
}

func (e *environment) status(ctx context.Context, c *http.Client, token string) (int, []byte) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.hub.URL+identity.PathEnrollStatus, nil)
	if err != nil {
		return 0, []byte(err.Error())
	}
	req.Header.Set("Authorization", "Bearer "+token)
	return do(c, req)
}

func (e *environment) enroll(ctx context.Context, c *http.Client, cluster, token string, csr []byte) (int, []byte) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.hub.URL+identity.PathEnroll, bytes.NewReader(csr))
	if err != nil {
		return 0, []byte(err.Error())
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set(tunnel.HeaderCluster, cluster)
	return do(c, req)
}

// do answers 0 and the error when there was no answer.
func do(c *http.Client, req *http.Request) (int, []byte) {
	resp, err := c.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func newCSR(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	require.NoError(t, err)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// secretRequests reads the host API server's own apiserver_request_total
// for Secrets, by "VERB code".
func (e *environment) secretRequests(t *testing.T, ctx context.Context) map[string]float64 {
	t.Helper()
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(e.host.CAPEM))
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 30 * time.Second}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.host.ExternalURL+"/metrics", nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+e.host.AdminToken)
	resp, err := c.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	f, ok := families["apiserver_request_total"]
	require.True(t, ok, "the host API server exports apiserver_request_total")
	out := map[string]float64{}
	for _, m := range f.GetMetric() {
		l := map[string]string{}
		for _, lp := range m.GetLabel() {
			l[lp.GetName()] = lp.GetValue()
		}
		if l["resource"] != "secrets" || l["group"] != "" {
			continue
		}
		out[l["verb"]+" "+l["code"]] += m.GetCounter().GetValue()
	}
	return out
}
