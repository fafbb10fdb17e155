package harness

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestConnect: the request names the target and carries the credentials;
// bytes that came with the 200 are read first; a refusal is an error with
// the proxy's reason.
func TestConnect(t *testing.T) {
	for _, tc := range []struct {
		name, answer, wantErr string
	}{
		{"ok, target spoke first", "HTTP/1.1 200 Connection established\r\n\r\nhello", ""},
		{"refused", "HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nnot yours", "403 Forbidden: not yours"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, proxy := net.Pipe()
			got := make(chan *http.Request, 1)
			go func() {
				defer proxy.Close()
				r, err := http.ReadRequest(bufio.NewReader(proxy))
				if err != nil {
					close(got)
					return
				}
				got <- r
				_, _ = io.WriteString(proxy, tc.answer)
			}()
			c, err := Connect(context.Background(), client, "m1.cluster.backhaul:443", "Bearer t0ken")
			r := <-got
			require.NotNil(t, r)
			assert.Equal(t, http.MethodConnect, r.Method)
			assert.Equal(t, "m1.cluster.backhaul:443", r.Host)
			assert.Equal(t, "Bearer t0ken", r.Header.Get("Proxy-Authorization"))
			if tc.wantErr != "" {
				require.ErrorContains(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			defer c.Close()
			b, err := io.ReadAll(c)
			require.NoError(t, err)
			assert.Equal(t, "hello", string(b))
		})
	}
}
