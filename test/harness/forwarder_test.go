package harness

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

// echo writes msg on c and reads it back.
func echo(c net.Conn, msg string) error {
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return err
	}
	if string(got) != msg {
		return io.ErrUnexpectedEOF
	}
	return nil
}

func TestForwarderCutAndRestore(t *testing.T) {
	f, err := NewForwarder(echoServer(t))
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, f.Close()) })

	live, err := net.Dial("tcp", f.Addr)
	require.NoError(t, err)
	defer live.Close()
	require.NoError(t, echo(live, "before"))

	f.Cut()
	assert.True(t, f.IsCut())
	assert.Error(t, echo(live, "cut"), "a live connection is dropped")
	// The port stays taken (never "connection refused") and a new
	// connection is dropped at once: its reset may already reach the dial
	// (ECONNRESET), else the first exchange.
	refused, err := net.Dial("tcp", f.Addr)
	if err == nil {
		assert.Error(t, echo(refused, "refused"), "a new connection is dropped at once")
		refused.Close()
	} else {
		assert.NotErrorIs(t, err, syscall.ECONNREFUSED, "the port stays taken")
		assert.ErrorIs(t, err, syscall.ECONNRESET)
	}

	f.Restore()
	again, err := net.Dial("tcp", f.Addr)
	require.NoError(t, err)
	defer again.Close()
	assert.NoError(t, echo(again, "after"))

	require.NoError(t, f.Close())
	assert.NoError(t, f.Close(), "Close is idempotent")
	assert.Error(t, echo(again, "closed"), "Close drops live connections")
}
