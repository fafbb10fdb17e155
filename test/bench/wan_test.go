package main

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The emulator's own tests check what it delivers, never how fast: the
// bench reports the timings.

// startEcho serves connections that echo what they read and half-close
// when the client does; accepted receives each connection.
func startEcho(t *testing.T) (addr string, accepted <-chan net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ch := make(chan net.Conn, 16)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ch <- c
		}
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return ln.Addr().String(), ch
}

func echo(c net.Conn) {
	_, _ = io.Copy(c, c)
	_ = c.(*net.TCPConn).CloseWrite()
}

func TestWANLinkDeliversIntactAndInOrder(t *testing.T) {
	for _, tc := range []struct {
		name string
		rtt  time.Duration
		rate float64
	}{
		{"no delay, no cap", 0, 0},
		{"delay and cap", 10 * time.Millisecond, 8e6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			target, accepted := startEcho(t)
			l, err := newWANLink("127.0.0.1:0", target, tc.rtt, tc.rate)
			require.NoError(t, err)
			defer func() { require.NoError(t, l.Close()) }()
			go func() {
				for c := range accepted {
					go echo(c)
				}
			}()

			c, err := net.Dial("tcp", l.Addr)
			require.NoError(t, err)
			defer c.Close()
			want := make([]byte, 1<<20)
			_, _ = rand.Read(want)
			got := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(c) // until the echo's FIN comes back
				got <- b
			}()
			// Writes of every size, so chunks split and merge on the way.
			for off, n := 0, 1; off < len(want); n = n*3%65521 + 1 {
				end := min(off+n, len(want))
				_, err := c.Write(want[off:end])
				require.NoError(t, err)
				off = end
			}
			require.NoError(t, c.(*net.TCPConn).CloseWrite())
			b := <-got
			require.Len(t, b, len(want))
			assert.True(t, bytes.Equal(want, b), "the echo came back altered or out of order")
		})
	}
}

func TestWANLinkCutIsABlackHole(t *testing.T) {
	target, accepted := startEcho(t)
	l, err := newWANLink("127.0.0.1:0", target, 2*time.Millisecond, 0)
	require.NoError(t, err)
	defer func() { require.NoError(t, l.Close()) }()

	c, err := net.Dial("tcp", l.Addr)
	require.NoError(t, err)
	defer c.Close()
	s := <-accepted
	defer s.Close()
	_, err = c.Write([]byte("hello"))
	require.NoError(t, err)
	buf := make([]byte, 64)
	n, err := io.ReadFull(s, buf[:5])
	require.NoError(t, err)
	require.Equal(t, "hello", string(buf[:n]))

	l.Cut()
	// Neither end hears anything more: no data, no FIN, no reset. Each
	// read waits long enough for a forwarder that still delivered to
	// have done so (many round trips); what is checked is only that the
	// wait ends with the deadline.
	_, err = c.Write([]byte("lost to the target"))
	require.NoError(t, err)
	_, err = s.Write([]byte("lost to the client"))
	require.NoError(t, err)
	for _, end := range []net.Conn{s, c} {
		require.NoError(t, end.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
		n, err := end.Read(buf)
		assert.Zero(t, n)
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded, "a cut link delivered something or closed the connection")
	}
	// The client giving up is not passed on either.
	require.NoError(t, c.Close())
	require.NoError(t, s.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
	_, err = s.Read(buf)
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded, "the client's FIN crossed a cut link")

	// A new connection is accepted by the forwarder, never by the target.
	c2, err := net.Dial("tcp", l.Addr)
	require.NoError(t, err)
	defer c2.Close()
	_, err = c2.Write([]byte("anyone?"))
	require.NoError(t, err)
	require.NoError(t, c2.SetReadDeadline(time.Now().Add(200*time.Millisecond)))
	_, err = c2.Read(buf)
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	select {
	case a := <-accepted:
		_ = a.Close()
		t.Fatal("a connection made through a cut link reached the target")
	default:
	}
}
