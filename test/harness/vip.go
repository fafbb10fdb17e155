package harness

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
)

// VIPConfig describes a virtual IP:port in the root namespace.
type VIPConfig struct {
	// Name is a short label ([a-z0-9_], at most 20 characters); the
	// nftables table is backhaul_vip_<Name>.
	Name string
	// Addr is the virtual IPv4 address. It is added to the root
	// namespace's loopback, so the test process routes to it and member
	// namespaces reach it through their default route to HostIP.
	Addr netip.Addr
	Port int
}

// VIP is a virtual IP:port that the kernel load-balances over backends
// with nftables DNAT, the way kube-proxy's nftables mode implements a
// Service's ClusterIP: a new connection to Addr:Port, from the root
// namespace (output hook) or from a namespace routed through it
// (prerouting hook), jumps to one backend chosen by `numgen random mod
// N`, which DNATs it to the backend's address. Established connections
// keep their backend (conntrack), also after it leaves the map, as with
// kube-proxy. With no backends a connection reaches Addr:Port itself,
// where nothing listens: it is refused.
//
// Backends must be addresses of the root namespace other than loopback
// (a DNAT to 127.0.0.1 from prerouting is a martian), for example a
// member's HostIP.
type VIP struct {
	Name string
	Addr netip.Addr
	Port int

	table    string
	lock     *os.File
	mu       sync.Mutex // guards backends and the table's contents
	backends []netip.AddrPort
	closed   bool
}

// NewVIP installs the address and an empty table, replacing a stale one
// of the same name left by a crashed run (holding its lock means nobody
// else owns it). Close removes both.
func NewVIP(cfg VIPConfig) (_ *VIP, err error) {
	if !validVIPName(cfg.Name) {
		return nil, fmt.Errorf("vip: invalid name %q", cfg.Name)
	}
	if !cfg.Addr.Is4() || cfg.Addr.IsLoopback() || cfg.Port < 1 || cfg.Port > 65535 {
		return nil, fmt.Errorf("vip %s: want a non-loopback IPv4 address and a port, got %v:%d", cfg.Name, cfg.Addr, cfg.Port)
	}
	v := &VIP{Name: cfg.Name, Addr: cfg.Addr, Port: cfg.Port, table: "backhaul_vip_" + cfg.Name}
	if v.lock, err = tryLock("vip-" + cfg.Name); err != nil {
		return nil, fmt.Errorf("vip %s: %w", cfg.Name, err)
	}
	defer func() {
		if err != nil {
			_ = v.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), shellTimeout)
	defer cancel()
	if err := v.removeAddr(ctx); err != nil {
		return nil, err
	}
	if _, err := run(ctx, nil, "ip", "addr", "add", v.Addr.String()+"/32", "dev", "lo"); err != nil {
		return nil, fmt.Errorf("vip %s: %w", v.Name, err)
	}
	if err := v.apply(ctx); err != nil {
		return nil, err
	}
	return v, nil
}

// AddrPort is the virtual address and port.
func (v *VIP) AddrPort() netip.AddrPort { return netip.AddrPortFrom(v.Addr, uint16(v.Port)) }

// String is Addr:Port.
func (v *VIP) String() string { return v.AddrPort().String() }

// Add puts b in the map (a no-op if it is there).
func (v *VIP) Add(b netip.AddrPort) error {
	return v.update(func(bs []netip.AddrPort) []netip.AddrPort {
		if slices.Contains(bs, b) {
			return bs
		}
		return append(bs, b)
	})
}

// Remove takes b out of the map (a no-op if it is not there): new
// connections no longer go to it.
func (v *VIP) Remove(b netip.AddrPort) error {
	return v.update(func(bs []netip.AddrPort) []netip.AddrPort {
		return slices.DeleteFunc(bs, func(x netip.AddrPort) bool { return x == b })
	})
}

// Backends is the current map.
func (v *VIP) Backends() []netip.AddrPort {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.backends)
}

func (v *VIP) update(change func([]netip.AddrPort) []netip.AddrPort) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return fmt.Errorf("vip %s: closed", v.Name)
	}
	before := slices.Clone(v.backends)
	v.backends = change(v.backends)
	ctx, cancel := context.WithTimeout(context.Background(), shellTimeout)
	defer cancel()
	if err := v.apply(ctx); err != nil {
		v.backends = before
		return err
	}
	return nil
}

// apply replaces the table with one for the current backends, in one
// nftables transaction: a connection sees either the old map or the new.
// Callers hold mu (or own v exclusively).
func (v *VIP) apply(ctx context.Context) error {
	if _, err := run(ctx, strings.NewReader(v.ruleset()), "nft", "-f", "-"); err != nil {
		return fmt.Errorf("vip %s: %w", v.Name, err)
	}
	return nil
}

// ruleset is the table for the current backends, preceded by what makes
// the file replace an existing table.
func (v *VIP) ruleset() string {
	var b strings.Builder
	fmt.Fprintf(&b, "table ip %[1]s {}\ndelete table ip %[1]s\ntable ip %[1]s {\n", v.table)
	// The output hook does not take the symbolic dstnat priority in every
	// nft version; -100 is its value.
	for _, hook := range []string{"prerouting", "output"} {
		fmt.Fprintf(&b, "\tchain %[1]s {\n\t\ttype nat hook %[1]s priority -100; policy accept;\n\t\tip daddr %[2]s tcp dport %[3]d goto service\n\t}\n",
			hook, v.Addr, v.Port)
	}
	b.WriteString("\tchain service {\n")
	if n := len(v.backends); n > 0 {
		arms := make([]string, n)
		for i := range v.backends {
			arms[i] = fmt.Sprintf("%d : goto backend_%d", i, i)
		}
		fmt.Fprintf(&b, "\t\tnumgen random mod %d vmap { %s }\n", n, strings.Join(arms, ", "))
	}
	b.WriteString("\t}\n")
	for i, be := range v.backends {
		fmt.Fprintf(&b, "\tchain backend_%d {\n\t\tmeta l4proto tcp dnat to %s\n\t}\n", i, be)
	}
	b.WriteString("}\n")
	return b.String()
}

// BackendOf is the backend the kernel picked for the connection from
// local (the client's address and port) to the VIP, read from the
// conntrack table; ok is false when no entry names it (gone, or
// /proc/net/nf_conntrack is not available). Entries outlive a closed
// connection for a while (TIME_WAIT, CLOSE), so a failed call can be
// attributed shortly after it ended.
func (v *VIP) BackendOf(local netip.AddrPort) (backend netip.AddrPort, ok bool) {
	f, err := os.Open("/proc/net/nf_conntrack")
	if err != nil {
		return netip.AddrPort{}, false
	}
	defer f.Close()
	orig := fmt.Sprintf("src=%s dst=%s sport=%d dport=%d ", local.Addr().Unmap(), v.Addr, local.Port(), v.Port)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		i := strings.Index(line, orig)
		if i < 0 {
			continue
		}
		// The reply direction follows: its source is the backend.
		var src, dst string
		var sport, dport int
		if _, err := fmt.Sscanf(line[i+len(orig):], "src=%s dst=%s sport=%d dport=%d", &src, &dst, &sport, &dport); err != nil {
			return netip.AddrPort{}, false
		}
		a, err := netip.ParseAddr(src)
		if err != nil {
			return netip.AddrPort{}, false
		}
		return netip.AddrPortFrom(a, uint16(sport)), true
	}
	return netip.AddrPort{}, false
}

// Ruleset lists the installed table, for failure messages.
func (v *VIP) Ruleset() string {
	ctx, cancel := context.WithTimeout(context.Background(), shellTimeout)
	defer cancel()
	out, err := run(ctx, nil, "nft", "list", "table", "ip", v.table)
	if err != nil {
		return err.Error()
	}
	return out
}

// Close deletes the table and the address and releases the name. It is
// idempotent.
func (v *VIP) Close() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return nil
	}
	v.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), shellTimeout)
	defer cancel()
	var errs []error
	if _, err := run(ctx, nil, "nft", "list", "table", "ip", v.table); err == nil {
		if _, err := run(ctx, nil, "nft", "delete", "table", "ip", v.table); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, v.removeAddr(ctx))
	if v.lock != nil {
		v.lock.Close()
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("vip %s: close: %w", v.Name, err)
	}
	return nil
}

// removeAddr deletes Addr from loopback if it is there.
func (v *VIP) removeAddr(ctx context.Context) error {
	out, err := run(ctx, nil, "ip", "-o", "addr", "show", "dev", "lo", "to", v.Addr.String()+"/32")
	if err != nil {
		return fmt.Errorf("vip %s: %w", v.Name, err)
	}
	if strings.TrimSpace(out) == "" {
		return nil
	}
	if _, err := run(ctx, nil, "ip", "addr", "del", v.Addr.String()+"/32", "dev", "lo"); err != nil {
		return fmt.Errorf("vip %s: %w", v.Name, err)
	}
	return nil
}

func validVIPName(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	for _, c := range s {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}
