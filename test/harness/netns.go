package harness

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// netnsDir is where iproute2 keeps named network namespaces.
	netnsDir = "/run/netns"
	// nftTable is the nftables table installed inside every namespace.
	nftTable = "backhaul_e2e"
	// shellTimeout bounds each ip/nft invocation.
	shellTimeout = 30 * time.Second
)

// Netns is a named network namespace joined to the root namespace by a veth
// pair on 10.251.<Index>.0/30, with a firewall that drops inbound NEW
// connections. Processes inside can dial out (to HostIP, for example); nothing
// outside can open a connection in.
type Netns struct {
	Name   string     // namespace name, as shown by `ip netns list`
	Index  int        // picks the 10.251.<Index>.0/30 subnet
	HostIP netip.Addr // root-namespace end of the veth, 10.251.<Index>.1
	NSIP   netip.Addr // namespace end of the veth, 10.251.<Index>.2
	HostIf string     // root-namespace veth name, bh<Index>h
	NSIf   string     // namespace veth name, bh<Index>n

	locks     []*os.File
	closeOnce sync.Once
	closeErr  error
}

// NewNetns creates the network namespace name on subnet 10.251.<index>.0/30
// (index 1..254), first removing a stale namespace or veth of the same name
// left by a crashed run. It fails if a live process holds the name or index.
func NewNetns(name string, index int) (*Netns, error) {
	if name == "" || strings.ContainsAny(name, "/ \t\n") || len(name) > 64 {
		return nil, fmt.Errorf("netns: invalid name %q", name)
	}
	if index < 1 || index > 254 {
		return nil, fmt.Errorf("netns %s: index %d out of range 1..254", name, index)
	}
	n := &Netns{
		Name:   name,
		Index:  index,
		HostIP: netip.AddrFrom4([4]byte{10, 251, byte(index), 1}),
		NSIP:   netip.AddrFrom4([4]byte{10, 251, byte(index), 2}),
		HostIf: fmt.Sprintf("bh%dh", index),
		NSIf:   fmt.Sprintf("bh%dn", index),
	}
	for _, l := range []string{"netns-" + name, "index-" + strconv.Itoa(index)} {
		f, err := tryLock(l)
		if err != nil {
			n.releaseLocks()
			return nil, fmt.Errorf("netns %s: %w", name, err)
		}
		n.locks = append(n.locks, f)
	}
	if err := n.setup(); err != nil {
		_ = n.Close()
		return nil, fmt.Errorf("netns %s: %w", name, err)
	}
	return n, nil
}

func (n *Netns) setup() error {
	ctx, cancel := context.WithTimeout(context.Background(), shellTimeout)
	defer cancel()

	// Holding both locks means anything left with our name or veth is stale.
	if err := removeNetns(ctx, n.Name); err != nil {
		return err
	}
	if err := removeLink(ctx, n.HostIf); err != nil {
		return err
	}

	hostCIDR := n.HostIP.String() + "/30"
	nsCIDR := n.NSIP.String() + "/30"
	steps := [][]string{
		{"ip", "netns", "add", n.Name},
		{"ip", "link", "add", n.HostIf, "type", "veth", "peer", "name", n.NSIf, "netns", n.Name},
		{"ip", "addr", "add", hostCIDR, "dev", n.HostIf},
		{"ip", "link", "set", n.HostIf, "up"},
		{"ip", "-n", n.Name, "link", "set", "lo", "up"},
		{"ip", "-n", n.Name, "addr", "add", nsCIDR, "dev", n.NSIf},
		{"ip", "-n", n.Name, "link", "set", n.NSIf, "up"},
		{"ip", "-n", n.Name, "route", "add", "default", "via", n.HostIP.String()},
	}
	for _, s := range steps {
		if _, err := run(ctx, nil, s[0], s[1:]...); err != nil {
			return err
		}
	}

	rules := fmt.Sprintf(`table inet %s {
	chain input {
		type filter hook input priority filter; policy accept;
		iif lo accept
		ct state established,related accept
		ct state new drop
	}
}
`, nftTable)
	if _, err := run(ctx, strings.NewReader(rules), "ip", "netns", "exec", n.Name, "nft", "-f", "-"); err != nil {
		return fmt.Errorf("install firewall: %w", err)
	}
	return nil
}

// Command returns a command that runs name with args inside the namespace
// (via `ip netns exec`, which execs in place, so the command's PID is that of
// name itself).
func (n *Netns) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", n.Name, name}, args...)...)
}

// NetCommand is like [Netns.Command] but enters only the network
// namespace (nsenter --net), keeping the machine's mount namespace: `ip
// netns exec` gives its command a private one with a fresh /sys, where the
// cgroup hierarchies are missing and mounts made (a container's root file
// system) are invisible to everyone else. A real node's containerd,
// kubelet and kube-proxy need the machine's.
func (n *Netns) NetCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	return exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + netnsDir + "/" + n.Name, "--", name}, args...)...)
}

// Close kills any processes still running inside the namespace (all started
// by the harness), deletes the namespace and the root-side veth, and releases
// the name and index locks. It is idempotent and returns the first error.
func (n *Netns) Close() error {
	n.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), shellTimeout)
		defer cancel()
		err := removeNetns(ctx, n.Name)
		n.closeErr = errors.Join(err, removeLink(ctx, n.HostIf))
		n.releaseLocks()
	})
	return n.closeErr
}

func (n *Netns) releaseLocks() {
	for _, f := range n.locks {
		f.Close()
	}
	n.locks = nil
}

// CleanupStale deletes network namespaces whose names start with prefix and
// that no live process owns (see [LockDir]), killing any processes left
// inside them. Use it at the start of a suite to clear debris from crashed
// runs. It returns the names removed.
func CleanupStale(prefix string) ([]string, error) {
	if prefix == "" {
		return nil, errors.New("cleanup stale netns: empty prefix")
	}
	entries, err := os.ReadDir(netnsDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("cleanup stale netns: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), shellTimeout)
	defer cancel()
	var removed []string
	var errs []error
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, prefix) {
			continue
		}
		lock, err := tryLock("netns-" + name)
		if errors.Is(err, errLocked) {
			continue // owned by a live run
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := removeNetns(ctx, name); err != nil {
			errs = append(errs, err)
		} else {
			removed = append(removed, name)
		}
		lock.Close()
	}
	return removed, errors.Join(errs...)
}

// removeNetns SIGKILLs every process inside the named namespace and deletes
// it. A missing namespace is not an error.
func removeNetns(ctx context.Context, name string) error {
	if _, err := os.Stat(netnsDir + "/" + name); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	out, err := run(ctx, nil, "ip", "netns", "pids", name)
	if err != nil {
		return err
	}
	var pids []int
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			pids = append(pids, pid)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// The namespace only disappears once its last process is gone.
	for deadline := time.Now().Add(5 * time.Second); len(pids) > 0 && time.Now().Before(deadline); {
		pids = alive(pids)
		if len(pids) > 0 {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if _, err := run(ctx, nil, "ip", "netns", "del", name); err != nil {
		return err
	}
	return nil
}

// alive returns the PIDs that still exist and are not zombies (signal 0
// succeeds on a zombie until its parent reaps it).
func alive(pids []int) []int {
	var out []int
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil && !isZombie(pid) {
			out = append(out, pid)
		}
	}
	return out
}

func isZombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true
	}
	// Format: pid (comm) state ...; comm may contain spaces or parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// removeLink deletes the root-namespace link name if it exists and waits for
// the name to be free. Deleting a namespace destroys its veth pairs
// asynchronously, so the link may vanish on its own while we look at it.
func removeLink(ctx context.Context, name string) error {
	deadline := time.Now().Add(5 * time.Second)
	for linkExists(name) {
		_, err := run(ctx, nil, "ip", "link", "del", name)
		if err != nil && !strings.Contains(err.Error(), "Cannot find device") {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("link %s still exists after deleting it", name)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

func linkExists(name string) bool {
	_, err := os.Stat("/sys/class/net/" + name)
	return err == nil
}

// AllowInbound opens tcp port to new connections from outside the
// namespace: for a "host cluster" whose API the hub, in the root namespace,
// must reach directly. Members never call it.
func (n *Netns) AllowInbound(port int) error {
	ctx, cancel := context.WithTimeout(context.Background(), shellTimeout)
	defer cancel()
	_, err := run(ctx, nil, "ip", "netns", "exec", n.Name, "nft", "insert", "rule", "inet", nftTable, "input",
		"tcp", "dport", strconv.Itoa(port), "accept")
	if err != nil {
		return fmt.Errorf("netns %s: allow inbound tcp/%d: %w", n.Name, port, err)
	}
	return nil
}

// AllowInboundFrom opens the namespace to new connections from addresses
// in prefix: a node's Pods, whose packets reach the node's own addresses
// (an API server behind the kubernetes Service, a hostNetwork Pod) from
// the node's bridge rather than from outside.
func (n *Netns) AllowInboundFrom(prefix netip.Prefix) error {
	ctx, cancel := context.WithTimeout(context.Background(), shellTimeout)
	defer cancel()
	_, err := run(ctx, nil, "ip", "netns", "exec", n.Name, "nft", "insert", "rule", "inet", nftTable, "input",
		"ip", "saddr", prefix.String(), "accept")
	if err != nil {
		return fmt.Errorf("netns %s: allow inbound from %s: %w", n.Name, prefix, err)
	}
	return nil
}
