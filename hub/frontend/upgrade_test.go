package frontend

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/coder/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"backhaul.io/backhaul/hub/internal/hubtest"
)

// execSession is a member that accepts a websocket exec, sends one stdout
// message and then does what end says; the caller dials it through a
// reverse proxy that wraps responses as the gateway does.
func execSession(t *testing.T, protocol string, end func(ctx context.Context, c *websocket.Conn, w http.ResponseWriter)) (*watches, *websocket.Conn) {
	t.Helper()
	member := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{protocol}})
		if err != nil {
			return
		}
		msg := append([]byte{1}, "hi"...)
		if strings.Contains(protocol, "base64") {
			msg = append([]byte{'1'}, base64.StdEncoding.EncodeToString([]byte("hi"))...)
		}
		typ := websocket.MessageBinary
		if strings.Contains(protocol, "base64") {
			typ = websocket.MessageText
		}
		if err := c.Write(r.Context(), typ, msg); err != nil {
			return
		}
		end(r.Context(), c, w)
	}))
	t.Cleanup(member.Close)
	target, err := url.Parse(member.URL)
	require.NoError(t, err)
	ws := &watches{}
	proxy := &httputil.ReverseProxy{
		Rewrite:        func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		ModifyResponse: func(resp *http.Response) error { ws.wrap(resp.Request, resp); return nil },
	}
	front := httptest.NewServer(proxy)
	t.Cleanup(front.Close)
	ctx, cancel := context.WithTimeout(t.Context(), hubtest.WaitBound)
	t.Cleanup(cancel)
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(front.URL, "http")+"/exec", &websocket.DialOptions{Subprotocols: []string{protocol}})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.CloseNow() })
	_, b, err := c.Read(ctx)
	require.NoError(t, err)
	require.Equal(t, byte('1'), b[0]|0x30, "stdout first")
	return ws, c
}

// readStatus reads the error channel's Status and then the close frame.
func readStatus(t *testing.T, c *websocket.Conn, base64Protocol bool) (metav1.Status, websocket.CloseError) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), hubtest.WaitBound)
	defer cancel()
	_, b, err := c.Read(ctx)
	require.NoError(t, err, "a Status on the error channel before the close")
	if base64Protocol {
		require.Equal(t, byte('3'), b[0])
		b, err = base64.StdEncoding.DecodeString(string(b[1:]))
		require.NoError(t, err)
	} else {
		require.Equal(t, byte(errorChannel), b[0])
		b = b[1:]
	}
	var st metav1.Status
	require.NoError(t, json.Unmarshal(b, &st))
	_, _, err = c.Read(ctx)
	var ce websocket.CloseError
	require.ErrorAs(t, err, &ce, "then a close frame, not a dropped connection")
	return st, ce
}

// readUntilClosed is a member session that waits for the proxy to close
// it.
func readUntilClosed(_ context.Context, c *websocket.Conn, _ http.ResponseWriter) {
	defer c.CloseNow()
	for {
		if _, _, err := c.Read(context.Background()); err != nil {
			return
		}
	}
}

// A draining replica ends an idle exec with a Status saying why and a
// normal close, so kubectl prints the reason instead of "close 1006
// (abnormal closure)".
func TestExecEndsWithStatusOnDrain(t *testing.T) {
	for _, protocol := range []string{"v5.channel.k8s.io", "v4.channel.k8s.io", "v4.base64.channel.k8s.io"} {
		t.Run(protocol, func(t *testing.T) {
			ws, c := execSession(t, protocol, readUntilClosed)
			ws.drain()
			st, ce := readStatus(t, c, strings.Contains(protocol, "base64"))
			assert.Equal(t, metav1.StatusFailure, st.Status)
			assert.Equal(t, whyDraining, st.Message)
			assert.Equal(t, websocket.StatusNormalClosure, ce.Code)
		})
	}
}

// A member connection that breaks between two frames (its agent or the
// replica carrying it went away) ends the same way, with the other reason.
func TestExecEndsWithStatusWhenUpstreamBreaks(t *testing.T) {
	_, c := execSession(t, "v5.channel.k8s.io", func(_ context.Context, c *websocket.Conn, _ http.ResponseWriter) {
		_ = c.CloseNow() // the connection drops, no close frame
	})
	st, ce := readStatus(t, c, false)
	assert.Equal(t, whyBroken, st.Message)
	assert.Equal(t, websocket.StatusNormalClosure, ce.Code)
}

// A session the member closes itself passes through untouched.
func TestExecClosedByMemberPassesThrough(t *testing.T) {
	_, c := execSession(t, "v5.channel.k8s.io", func(_ context.Context, c *websocket.Conn, _ http.ResponseWriter) {
		_ = c.Close(websocket.StatusGoingAway, "member says bye")
	})
	ctx, cancel := context.WithTimeout(t.Context(), hubtest.WaitBound)
	defer cancel()
	_, _, err := c.Read(ctx)
	var ce websocket.CloseError
	require.ErrorAs(t, err, &ce)
	assert.Equal(t, websocket.StatusGoingAway, ce.Code)
	assert.Equal(t, "member says bye", ce.Reason)
}

// Frame tracking across every split of a stream: 16- and 64-bit lengths, a
// masked frame, a fragmented message with a control frame inside it.
func TestWebsocketFramesAcrossSplits(t *testing.T) {
	var stream []byte
	stream = wsFrame(stream, wsBinary, append([]byte{1}, make([]byte, 300)...))
	stream = wsFrame(stream, wsBinary, append([]byte{2}, make([]byte, 70000)...))
	stream = append(stream, 0x82, 0x80|3, 1, 2, 3, 4, 0, 2, 3) // masked with 1 2 3 4: channel 1, then 0 0
	stream = append(stream, 0x02, 2, 1, 'a')                   // fragment 1 of 2
	stream = wsFrame(stream, 0x9, []byte("ping"))
	fragmented := len(stream)
	stream = append(stream, 0x80, 1, 'b') // the last fragment
	for _, step := range []int{1, 2, 7, 4096, len(stream)} {
		s := &wsState{statusOnClose: true}
		for i := 0; i < len(stream); i += step {
			end := min(i+step, len(stream))
			s.track(stream[i:end])
			if end == fragmented {
				assert.True(t, s.inMessage, "step %d: inside the fragmented message", step)
			}
		}
		assert.True(t, s.atBoundary(), "step %d", step)
		assert.False(t, s.inMessage || s.errored || s.closed, "step %d: %+v", step, s)
	}
	s := &wsState{statusOnClose: true}
	s.track(wsFrame(nil, wsBinary, []byte{3, '{', '}'}))
	assert.True(t, s.errored, "the member sent on the error channel")
	assert.Len(t, s.farewell("x"), 2+2+1, "then only a close frame is added")
}

// Once the replica drains, its agents let go of it: a session broken then
// ends with the drain's reason.
func TestExecBrokenWhileLeavingSaysShuttingDown(t *testing.T) {
	stop := make(chan struct{})
	ws, c := execSession(t, "v5.channel.k8s.io", func(_ context.Context, c *websocket.Conn, _ http.ResponseWriter) {
		<-stop
		_ = c.CloseNow()
	})
	ws.leaving.Store(true)
	close(stop)
	st, ce := readStatus(t, c, false)
	assert.Equal(t, whyDraining, st.Message)
	assert.Equal(t, websocket.StatusNormalClosure, ce.Code)
}
