package tunnel

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestOpenEarlySendsBeforeTheReply: OpenEarly returns while the acceptor
// has not answered yet, and what the opener writes in the meantime reaches
// the acceptor's payload intact, whatever its size against the window.
func TestOpenEarlySendsBeforeTheReply(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr transport) {
		client, server := tr.connect(t, testConfig(t), nil)
		release := make(chan struct{})
		serve(t, server, func(ctx context.Context, in *Incoming) {
			select {
			case <-release:
			case <-ctx.Done():
				return
			}
			echoHandler(ctx, in)
		})
		for _, size := range []int{0, 1, 300, 8 << 20} {
			t.Run(strconv.Itoa(size), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), waitBound)
				defer cancel()
				conn, err := client.OpenEarly(ctx, Request{Kind: KindAPIServer, RequestID: "early"})
				require.NoError(t, err, "OpenEarly must not wait for the acceptor")
				defer conn.Close()
				done := make(chan error, 1)
				go func() { done <- echo(conn, randomBytes(t, size)) }()
				release <- struct{}{}
				select {
				case err := <-done:
					require.NoError(t, err)
				case <-ctx.Done():
					t.Fatal("echo did not finish")
				}
			})
		}
	})
}

// TestOpenEarlyRefused: a refusal reaches the opener on its first Read as
// the same *DialError Open returns, and on Writes after that; the early
// bytes are dropped and the stream released on both sides.
func TestOpenEarlyRefused(t *testing.T) {
	forEachTransport(t, func(t *testing.T, tr transport) {
		client, server := tr.connect(t, testConfig(t), nil)
		serve(t, server, func(_ context.Context, in *Incoming) {
			n, _ := strconv.Atoi(in.Request.RequestID)
			_ = in.Reject(Code(n), "because "+Code(n).String())
		})
		for code := CodeRefused; code <= maxCode; code++ {
			t.Run(code.String(), func(t *testing.T) {
				conn, err := client.OpenEarly(context.Background(), Request{Kind: KindAPIServer, RequestID: strconv.Itoa(int(code))})
				require.NoError(t, err)
				defer conn.Close()
				_, err = conn.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
				require.NoError(t, err, "a write before the reply is buffered")
				_, err = conn.Read(make([]byte, 1))
				var de *DialError
				require.ErrorAs(t, err, &de)
				assert.Equal(t, code, de.Code)
				assert.Equal(t, "because "+code.String(), de.Message)
				_, err = conn.Read(make([]byte, 1))
				require.ErrorAs(t, err, &de, "every Read after a refusal")
				_, err = conn.Write([]byte("more"))
				require.ErrorAs(t, err, &de, "a Write after a refusal")
			})
		}
		assert.Eventually(t, func() bool { return client.NumStreams() == 0 && server.NumStreams() == 0 },
			waitBound, 10*time.Millisecond, "refused streams are not released")
	})
}

// TestOpenEarlySilentPeer: a reply that does not come within the dial
// budget reads as CodeTimeout, as Open's would; a caller's own earlier
// read deadline reads as a plain timeout, not as the peer's fault.
func TestOpenEarlySilentPeer(t *testing.T) {
	cfg := testConfig(t)
	cfg.HeaderTimeout = 200 * time.Millisecond
	client, server := connectPipe(t, cfg, nil)
	serve(t, server, func(ctx context.Context, _ *Incoming) { <-ctx.Done() })

	conn, err := client.OpenEarly(context.Background(), Request{Kind: KindTCP, Address: "10.0.0.1:80", Timeout: 100 * time.Millisecond})
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Read(make([]byte, 1))
	var de *DialError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, CodeTimeout, de.Code)

	conn, err = client.OpenEarly(context.Background(), Request{Kind: KindTCP, Address: "10.0.0.1:80", Timeout: time.Minute})
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(50*time.Millisecond)))
	_, err = conn.Read(make([]byte, 1))
	require.Error(t, err)
	assert.False(t, errors.As(err, &de), "the caller's deadline is not a refusal: %v", err)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout())
}

// TestOpenEarlySessionEnds: a session that ends before the reply reads as
// ErrSessionClosed, so callers can tell it from a refusal.
func TestOpenEarlySessionEnds(t *testing.T) {
	client, server := connectPipe(t, testConfig(t), nil)
	held := make(chan struct{})
	serve(t, server, func(ctx context.Context, _ *Incoming) {
		close(held)
		<-ctx.Done()
	})
	conn, err := client.OpenEarly(context.Background(), Request{Kind: KindAPIServer})
	require.NoError(t, err)
	defer conn.Close()
	waitClosed(t, held, "the acceptor to hold the stream")
	require.NoError(t, server.Close())
	_, err = io.ReadAll(conn)
	require.ErrorIs(t, err, ErrSessionClosed)
}

// TestOpenEarlyAfterClose: a closed session fails OpenEarly at once.
func TestOpenEarlyAfterClose(t *testing.T) {
	client, _ := connectPipe(t, testConfig(t), nil)
	require.NoError(t, client.Close())
	_, err := client.OpenEarly(context.Background(), Request{Kind: KindAPIServer})
	require.ErrorIs(t, err, ErrSessionClosed)
	_, err = client.OpenEarly(context.Background(), Request{Kind: KindTCP, Address: "no-port"})
	require.ErrorIs(t, err, ErrMalformed)
}

// TestRelay: a relay between an opener and an acceptor on two sessions
// (a hub replica forwarding to its agent) passes the opener's early bytes
// on, and the acceptor's answer back: its payload, its refusal as it is,
// and its session's end as CodeUnavailable (the cluster is not here now).
func TestRelay(t *testing.T) {
	// opener → (relaySide | relay) → (farSide | acceptor)
	opener, relaySide := connectPipe(t, testConfig(t), nil)
	farSide, acceptor := connectPipe(t, testConfig(t), nil)
	relaying := make(chan struct{}, 1) // the relay has its stream to the acceptor
	serve(t, acceptor, func(ctx context.Context, in *Incoming) {
		switch in.Request.RequestID {
		case "echo":
			echoHandler(ctx, in)
		case "drop":
			// Once the relay is passing bytes on (before that, it
			// rightly answers CodeUnavailable: nothing went on).
			select {
			case <-relaying:
			case <-ctx.Done():
			}
			_ = acceptor.Close()
		default:
			_ = in.Reject(CodeNotAllowed, "not "+in.Request.RequestID)
		}
	})
	serve(t, relaySide, func(ctx context.Context, in *Incoming) {
		out, err := farSide.OpenEarly(ctx, in.Request)
		if err != nil {
			_ = in.Reject(CodeUnavailable, err.Error())
			return
		}
		if in.Request.RequestID == "drop" {
			relaying <- struct{}{}
		}
		in.Relay(ctx, out)
	})
	open := func(id string) net.Conn {
		conn, err := opener.OpenEarly(context.Background(), Request{Kind: KindAPIServer, RequestID: id})
		require.NoError(t, err)
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}

	t.Run("accepted", func(t *testing.T) {
		require.NoError(t, echo(open("echo"), randomBytes(t, 1<<20)))
	})
	t.Run("refused", func(t *testing.T) {
		conn := open("secret")
		_, err := conn.Write([]byte("sent early"))
		require.NoError(t, err)
		_, err = conn.Read(make([]byte, 1))
		var de *DialError
		require.ErrorAs(t, err, &de)
		assert.Equal(t, CodeNotAllowed, de.Code)
		assert.Equal(t, "not secret", de.Message)
	})
	t.Run("far session ends", func(t *testing.T) {
		conn := open("drop")
		_, err := conn.Write([]byte("sent early"))
		require.NoError(t, err)
		_, err = conn.Read(make([]byte, 1))
		var de *DialError
		require.ErrorAs(t, err, &de)
		assert.Equal(t, CodeUnavailable, de.Code, "the opener tries elsewhere")
	})
	assert.Eventually(t, func() bool { return opener.NumStreams() == 0 && relaySide.NumStreams() == 0 },
		waitBound, 10*time.Millisecond, "relayed streams are released")
}
