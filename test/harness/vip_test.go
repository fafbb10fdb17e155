package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const selfTestVIPIndex = 196

// tagServer listens on addr:0 and answers every connection with tag.
func tagServer(t *testing.T, addr netip.Addr, tag string) netip.AddrPort {
	t.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(addr, 0).String())
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte(tag))
			c.Close()
		}
	}()
	return netip.MustParseAddrPort(ln.Addr().String())
}

func dialTag(addr string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	return string(b), err
}

// TestVIP checks the load balancing from the root namespace and from a
// member-like namespace, removal, an empty map, and clean-up. It needs
// root; without it, it fails (a VIP is what it tests).
func TestVIP(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("TestVIP needs root for nftables and addresses (run the e2e suites as root)")
	}
	for _, tool := range []string{"ip", "nft", "bash"} {
		_, err := exec.LookPath(tool)
		require.NoError(t, err, "%s is needed", tool)
	}
	n, err := NewNetns(NetnsPrefix+"selfvip", selfTestVIPIndex)
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, n.Close()) })

	a := tagServer(t, n.HostIP, "a")
	b := tagServer(t, n.HostIP, "b")
	addr := netip.AddrFrom4([4]byte{10, 253, selfTestVIPIndex, 1})
	v, err := NewVIP(VIPConfig{Name: "selftest", Addr: addr, Port: 8443})
	require.NoError(t, err)
	t.Cleanup(func() { assert.NoError(t, v.Close()) })
	_, err = NewVIP(VIPConfig{Name: "selftest", Addr: addr, Port: 8443})
	assert.Error(t, err, "a second VIP of the same name is refused while the first lives")

	require.NoError(t, v.Add(a))
	require.NoError(t, v.Add(b))
	require.NoError(t, v.Add(b), "Add is idempotent")
	assert.Equal(t, []netip.AddrPort{a, b}, v.Backends())

	fromRoot := map[string]int{}
	for range 40 {
		tag, err := dialTag(v.String())
		require.NoError(t, err, v.Ruleset())
		fromRoot[tag]++
	}
	assert.Equal(t, 40, fromRoot["a"]+fromRoot["b"])
	assert.Positive(t, fromRoot["a"], "numgen spreads connections: %v", fromRoot)
	// conntrack names the backend a connection went to.
	c, err := net.Dial("tcp", v.String())
	require.NoError(t, err)
	tag, err := io.ReadAll(c)
	require.NoError(t, err)
	got, ok := v.BackendOf(netip.MustParseAddrPort(c.LocalAddr().String()))
	c.Close()
	require.True(t, ok, "conntrack has the connection")
	assert.Equal(t, map[string]netip.AddrPort{"a": a, "b": b}[string(tag)], got)
	assert.Positive(t, fromRoot["b"], "numgen spreads connections: %v", fromRoot)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	script := fmt.Sprintf(`for i in $(seq 40); do exec 3<>/dev/tcp/%s/%d && cat <&3 && echo && exec 3<&-; done`, addr, v.Port)
	out, err := n.Command(ctx, "bash", "-c", script).CombinedOutput()
	require.NoError(t, err, string(out))
	fromNS := map[string]int{}
	for _, l := range strings.Fields(string(out)) {
		fromNS[l]++
	}
	assert.Equal(t, 40, fromNS["a"]+fromNS["b"], string(out))
	assert.Positive(t, fromNS["a"], "from the namespace: %v", fromNS)
	assert.Positive(t, fromNS["b"], "from the namespace: %v", fromNS)

	require.NoError(t, v.Remove(a))
	for range 10 {
		tag, err := dialTag(v.String())
		require.NoError(t, err)
		assert.Equal(t, "b", tag, "a removed backend gets no new connections")
	}
	require.NoError(t, v.Remove(b))
	require.NoError(t, v.Remove(b), "Remove is idempotent")
	_, err = dialTag(v.String())
	assert.True(t, errors.Is(err, syscall.ECONNREFUSED), "no backends: refused, got %v", err)

	require.NoError(t, v.Close())
	require.NoError(t, v.Close(), "Close is idempotent")
	assert.Error(t, v.Add(a), "a closed VIP takes no backends")
	lctx, lcancel := context.WithTimeout(context.Background(), shellTimeout)
	defer lcancel()
	_, err = run(lctx, nil, "nft", "list", "table", "ip", "backhaul_vip_selftest")
	assert.Error(t, err, "the table is gone")
	out2, err := run(lctx, nil, "ip", "-o", "addr", "show", "dev", "lo", "to", addr.String()+"/32")
	require.NoError(t, err)
	assert.Empty(t, strings.TrimSpace(out2), "the address is gone")
}
