package auth

import (
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"backhaul.io/backhaul/tunnel"
)

const (
	alphaToken = "alpha-token-0123456789"
	betaToken  = "beta-token-0123456789"
)

func writeFile(t *testing.T, path, content string) string {
	t.Helper()
	require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
	return path
}

// agentRequest is an upgrade request as an agent sends it.
func agentRequest(cluster, authorization string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, tunnel.Path, nil)
	if cluster != "" {
		r.Header.Set(tunnel.HeaderCluster, cluster)
	}
	if authorization != "" {
		r.Header.Set("Authorization", authorization)
	}
	return r
}

func TestAgentTokensFile(t *testing.T) {
	file := writeFile(t, filepath.Join(t.TempDir(), "tokens.csv"),
		"# token,cluster\n"+
			alphaToken+",alpha\n"+
			"\n"+
			"  "+betaToken+", beta\n")
	a, err := NewAgentTokens(file, "")
	require.NoError(t, err)

	assert.True(t, a.Known("alpha"))
	assert.True(t, a.Known("beta"), "leading space before the cluster is trimmed")
	assert.False(t, a.Known("gamma"))

	tests := []struct {
		name          string
		cluster, auth string
		want          string
	}{
		{name: "alpha", cluster: "alpha", auth: "Bearer " + alphaToken, want: "alpha"},
		{name: "beta", cluster: "beta", auth: "Bearer " + betaToken, want: "beta"},
		{name: "lower-case scheme", cluster: "alpha", auth: "bearer " + alphaToken, want: "alpha"},
		{name: "another cluster's token", cluster: "alpha", auth: "Bearer " + betaToken},
		{name: "wrong token", cluster: "alpha", auth: "Bearer alpha-token-0123456780"},
		{name: "unknown cluster", cluster: "gamma", auth: "Bearer " + alphaToken},
		{name: "no cluster", auth: "Bearer " + alphaToken},
		{name: "no token", cluster: "alpha"},
		{name: "basic auth", cluster: "alpha", auth: "Basic " + alphaToken},
		{name: "empty bearer", cluster: "alpha", auth: "Bearer "},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := a.AuthenticateAgent(agentRequest(tc.cluster, tc.auth))
			if tc.want == "" {
				require.ErrorIs(t, err, ErrAgentAuth)
				assert.Empty(t, got)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, got)
		})
	}
}

func TestAgentTokensFileRejects(t *testing.T) {
	tests := []struct {
		name    string
		content string
	}{
		{name: "one field", content: alphaToken + "\n"},
		{name: "three fields", content: alphaToken + ",alpha,extra\n"},
		{name: "short token", content: "short,alpha\n"},
		{name: "fifteen characters", content: "123456789012345,alpha\n"},
		{name: "duplicate cluster", content: alphaToken + ",alpha\n" + betaToken + ",alpha\n"},
		{name: "upper-case cluster", content: alphaToken + ",Alpha\n"},
		{name: "cluster with underscore", content: alphaToken + ",al_pha\n"},
		{name: "cluster with dot", content: alphaToken + ",alpha.example\n"},
		{name: "empty cluster", content: alphaToken + ",\n"},
		{name: "cluster too long", content: alphaToken + "," + strings.Repeat("a", 64) + "\n"},
		{name: "bad quoting", content: "\"" + alphaToken + ",alpha\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := writeFile(t, filepath.Join(t.TempDir(), "tokens.csv"), tc.content)
			a, err := NewAgentTokens(file, "")
			require.Error(t, err)
			assert.Nil(t, a)
		})
	}
}

func TestAgentTokensSources(t *testing.T) {
	t.Run("none", func(t *testing.T) {
		_, err := NewAgentTokens("", "")
		require.Error(t, err)
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := NewAgentTokens(filepath.Join(t.TempDir(), "absent.csv"), "")
		require.ErrorIs(t, err, fs.ErrNotExist)
	})
	t.Run("missing dir", func(t *testing.T) {
		_, err := NewAgentTokens("", filepath.Join(t.TempDir(), "absent"))
		require.ErrorIs(t, err, fs.ErrNotExist)
	})
	t.Run("empty file", func(t *testing.T) {
		a, err := NewAgentTokens(writeFile(t, filepath.Join(t.TempDir(), "tokens.csv"), ""), "")
		require.NoError(t, err)
		assert.False(t, a.Known("alpha"))
	})
}

func TestAgentTokensDir(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "alpha"), alphaToken+"\n") // Secrets often end in a newline
	writeFile(t, filepath.Join(dir, ".hidden"), "not a token")
	require.NoError(t, os.Mkdir(filepath.Join(dir, "subdir"), 0o700))
	writeFile(t, filepath.Join(dir, "subdir", "beta"), betaToken)

	a, err := NewAgentTokens("", dir)
	require.NoError(t, err)
	assert.True(t, a.Known("alpha"))
	assert.False(t, a.Known("beta"), "subdirectories are not read")
	assert.False(t, a.Known(".hidden"))
	got, err := a.AuthenticateAgent(agentRequest("alpha", "Bearer "+alphaToken))
	require.NoError(t, err)
	assert.Equal(t, "alpha", got)

	t.Run("file and dir together", func(t *testing.T) {
		file := writeFile(t, filepath.Join(t.TempDir(), "tokens.csv"), betaToken+",beta\n")
		a, err := NewAgentTokens(file, dir)
		require.NoError(t, err)
		assert.True(t, a.Known("alpha"))
		assert.True(t, a.Known("beta"))
	})
	t.Run("cluster in both", func(t *testing.T) {
		file := writeFile(t, filepath.Join(t.TempDir(), "tokens.csv"), betaToken+",alpha\n")
		_, err := NewAgentTokens(file, dir)
		require.Error(t, err)
	})
	t.Run("bad file name", func(t *testing.T) {
		bad := t.TempDir()
		writeFile(t, filepath.Join(bad, "Not_A_Name"), alphaToken)
		_, err := NewAgentTokens("", bad)
		require.Error(t, err)
	})
	t.Run("short token", func(t *testing.T) {
		bad := t.TempDir()
		writeFile(t, filepath.Join(bad, "alpha"), "short\n")
		_, err := NewAgentTokens("", bad)
		require.Error(t, err)
	})
}

// expireCheck lets the next lookup re-read the sources without waiting out
// the once-a-second limit.
func expireCheck(a *AgentTokens) {
	a.mu.Lock()
	a.checked = time.Time{}
	a.mu.Unlock()
}

// touch gives path a modification time distinct from any earlier write.
func touch(t *testing.T, path string, n int) {
	t.Helper()
	ts := time.Now().Add(time.Duration(n) * time.Hour)
	require.NoError(t, os.Chtimes(path, ts, ts))
}

func TestAgentTokensReloadFile(t *testing.T) {
	file := writeFile(t, filepath.Join(t.TempDir(), "tokens.csv"), alphaToken+",alpha\n")
	a, err := NewAgentTokens(file, "")
	require.NoError(t, err)

	ok := func(cluster, token string) bool {
		_, err := a.AuthenticateAgent(agentRequest(cluster, "Bearer "+token))
		return err == nil
	}
	require.True(t, ok("alpha", alphaToken))

	t.Run("rotated token", func(t *testing.T) {
		writeFile(t, file, "alpha-rotated-token-0123456789,alpha\n"+betaToken+",beta\n")
		touch(t, file, 1)
		expireCheck(a)
		assert.False(t, ok("alpha", alphaToken), "the old token still works")
		assert.True(t, ok("alpha", "alpha-rotated-token-0123456789"))
		assert.True(t, a.Known("beta"))
	})
	t.Run("broken file keeps the last good set", func(t *testing.T) {
		writeFile(t, file, "garbage\n")
		touch(t, file, 2)
		expireCheck(a)
		assert.True(t, ok("alpha", "alpha-rotated-token-0123456789"))
		assert.Error(t, a.reload(true))
		assert.True(t, ok("alpha", "alpha-rotated-token-0123456789"))
	})
	t.Run("rate limited", func(t *testing.T) {
		writeFile(t, file, alphaToken+",alpha\n")
		touch(t, file, 3)
		// Within a second of the last check the file is not looked at.
		a.mu.Lock()
		a.checked = time.Now()
		a.mu.Unlock()
		assert.False(t, ok("alpha", alphaToken))
		expireCheck(a)
		assert.True(t, ok("alpha", alphaToken))
	})
}

// TestAgentTokensReloadSecretVolume rotates tokens the way the kubelet
// updates a mounted Secret: a new timestamped directory and an atomic swap
// of the ..data symlink.
func TestAgentTokensReloadSecretVolume(t *testing.T) {
	dir := t.TempDir()
	mount := func(n int, token string) {
		ts := filepath.Join(dir, "..ts"+string(rune('0'+n)))
		require.NoError(t, os.Mkdir(ts, 0o700))
		writeFile(t, filepath.Join(ts, "alpha"), token)
		touch(t, ts, n)
		tmp := filepath.Join(dir, "..data_tmp")
		require.NoError(t, os.Symlink(filepath.Base(ts), tmp))
		require.NoError(t, os.Rename(tmp, filepath.Join(dir, "..data")))
	}
	mount(1, alphaToken)
	require.NoError(t, os.Symlink(filepath.Join("..data", "alpha"), filepath.Join(dir, "alpha")))

	a, err := NewAgentTokens("", dir)
	require.NoError(t, err)
	_, err = a.AuthenticateAgent(agentRequest("alpha", "Bearer "+alphaToken))
	require.NoError(t, err)

	mount(2, "alpha-rotated-token-0123456789")
	expireCheck(a)
	_, err = a.AuthenticateAgent(agentRequest("alpha", "Bearer "+alphaToken))
	require.ErrorIs(t, err, ErrAgentAuth)
	got, err := a.AuthenticateAgent(agentRequest("alpha", "Bearer alpha-rotated-token-0123456789"))
	require.NoError(t, err)
	assert.Equal(t, "alpha", got)
}

func TestBearer(t *testing.T) {
	tests := []struct {
		name   string
		header string
		want   string
		ok     bool
	}{
		{name: "plain", header: "Bearer abc", want: "abc", ok: true},
		{name: "lower case", header: "bearer abc", want: "abc", ok: true},
		{name: "upper case", header: "BEARER abc", want: "abc", ok: true},
		{name: "surrounding space", header: "Bearer   abc  ", want: "abc", ok: true},
		{name: "empty", header: ""},
		{name: "scheme only", header: "Bearer"},
		{name: "scheme and space", header: "Bearer "},
		{name: "scheme and spaces", header: "Bearer    "},
		{name: "no space", header: "Bearerabc"},
		{name: "basic", header: "Basic YWxhZGRpbjpvcGVuc2VzYW1l"},
		{name: "token only", header: "abc"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := Bearer(tc.header)
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.want, got)
		})
	}
}
