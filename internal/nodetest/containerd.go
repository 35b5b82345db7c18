package nodetest

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
)

// Containerd is a containerd confined to a directory of its own (root,
// state, sockets, runc roots, CNI configuration and IPAM state), with a
// CNI bridge network the caller names.
type Containerd struct {
	Dir  string
	Sock string
	// Exited receives containerd's exit once; a caller that only looks
	// puts the value back.
	Exited chan error
	cmd    *exec.Cmd
	// What the host had before, so that RestoreHost removes only what
	// this containerd made.
	runDirErr, cniCacheErr error
	cgroups                map[string]bool
}

// NewContainerd records what of containerd's host-wide state exists now
// (see RestoreHost); Start runs it.
func NewContainerd(dir string) *Containerd {
	c := &Containerd{Dir: dir, Sock: filepath.Join(dir, "containerd.sock"), Exited: make(chan error, 1), cgroups: map[string]bool{}}
	_, c.runDirErr = os.Stat("/run/containerd")
	// containerd's CNI library caches results in /var/lib/cni whatever
	// its configuration says (removed on DEL, the directories remain).
	_, c.cniCacheErr = os.Stat("/var/lib/cni")
	hs, _ := filepath.Glob("/sys/fs/cgroup/*/k8s.io")
	for _, h := range hs {
		c.cgroups[h] = true
	}
	return c
}

// Start makes the bridge with the gateway .1 of subnet, writes a CNI
// network of that name onto it (host-local IPAM in Dir/ipam) and the
// configuration, runs containerd and waits up to 30s for its socket. The
// caller removes the bridge, also when Start fails.
func (c *Containerd) Start(bridge, network string, subnet *net.IPNet, sandboxImage string) error {
	cni := filepath.Join(c.Dir, "cni")
	if err := os.MkdirAll(cni, 0o755); err != nil {
		return err
	}
	// The bridge, with the gateway address the host reaches pods by, is
	// made here rather than by the bridge plugin: with isGateway the
	// plugin would also turn on net.ipv4.ip_forward, a host-wide setting
	// that other tests running at the same time read and restore.
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridge}}
	if err := netlink.LinkAdd(br); err != nil {
		return fmt.Errorf("bridge %s: %w", bridge, err)
	}
	gw := &net.IPNet{IP: append(net.IP(nil), subnet.IP.To4()...), Mask: subnet.Mask}
	gw.IP[3] = 1
	if err := netlink.AddrAdd(br, &netlink.Addr{IPNet: gw}); err != nil {
		return fmt.Errorf("bridge %s: address %s: %w", bridge, gw, err)
	}
	if err := netlink.LinkSetUp(br); err != nil {
		return fmt.Errorf("bridge %s: up: %w", bridge, err)
	}
	conflist, _ := json.Marshal(map[string]any{
		"cniVersion": "0.4.0", "name": network,
		"plugins": []any{map[string]any{
			"type": "bridge", "bridge": bridge, "isGateway": false, "ipMasq": false, "hairpinMode": true,
			"ipam": map[string]any{"type": "host-local", "dataDir": filepath.Join(c.Dir, "ipam"),
				"ranges": [][]map[string]string{{{"subnet": subnet.String(), "gateway": gw.IP.String()}}},
				"routes": []map[string]string{{"dst": "0.0.0.0/0", "gw": gw.IP.String()}}},
		}},
	})
	if err := os.WriteFile(filepath.Join(cni, "10-"+network+".conflist"), conflist, 0o644); err != nil {
		return err
	}
	cfg := filepath.Join(c.Dir, "config.toml")
	if err := os.WriteFile(cfg, []byte(ContainerdConfig(c.Dir, c.Sock, sandboxImage, cni)), 0o644); err != nil {
		return err
	}
	logf, err := os.Create(filepath.Join(c.Dir, "containerd.log"))
	if err != nil {
		return err
	}
	c.cmd = exec.Command("containerd", "--config", cfg, "--log-level", "info")
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	// Its own process group, so that a signal to the test's group does
	// not reach it before the cleanup has asked it to remove the pods.
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		logf.Close()
		c.cmd = nil
		return fmt.Errorf("start containerd: %w", err)
	}
	go func() { c.Exited <- c.cmd.Wait(); logf.Close() }()
	for deadline := time.Now().Add(30 * time.Second); ; {
		select {
		case err := <-c.Exited:
			c.Exited <- err
			return fmt.Errorf("containerd exited: %v\n%s", err, c.Log())
		case <-time.After(50 * time.Millisecond):
		}
		if _, err := os.Stat(c.Sock); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("containerd socket after 30s: %w\n%s", err, c.Log())
		}
	}
}

// Running says whether Start ran containerd and Stop has not stopped it.
func (c *Containerd) Running() bool { return c.cmd != nil }

// Log is what containerd logged so far.
func (c *Containerd) Log() string {
	b, _ := os.ReadFile(filepath.Join(c.Dir, "containerd.log"))
	return string(b)
}

// Stop stops containerd (SIGTERM, then SIGKILL after 15s), kills the
// shims it left (found by their -address, this containerd's socket) and
// unmounts what remains under Dir (overlay rootfs, shm, netns), deepest
// first. It returns what it had to clean up or could not.
func (c *Containerd) Stop() []error {
	if c.cmd == nil {
		return nil
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.Exited:
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.Exited
	}
	c.cmd = nil
	var errs []error
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(b), "\x00")
		if strings.HasPrefix(filepath.Base(args[0]), "containerd-shim") && strings.Contains(string(b), "\x00"+c.Sock+"\x00") {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
				errs = append(errs, fmt.Errorf("containerd left shim %d running; killing it", pid))
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	return append(errs, Unmount(c.Dir)...)
}

// RestoreHost removes what containerd made outside Dir and was not there
// before NewContainerd, once empty: it puts containers' cgroups under
// /k8s.io when the kubelet gives no parent, shim sockets in
// /run/containerd/s whatever its state directory, and CNI results in
// /var/lib/cni.
func (c *Containerd) RestoreHost() {
	hs, _ := filepath.Glob("/sys/fs/cgroup/*/k8s.io")
	for _, h := range hs {
		if !c.cgroups[h] {
			_ = os.Remove(h)
		}
	}
	if os.IsNotExist(c.runDirErr) {
		_ = os.Remove("/run/containerd/s")
		_ = os.Remove("/run/containerd")
	}
	if os.IsNotExist(c.cniCacheErr) {
		_ = os.Remove("/var/lib/cni/results")
		_ = os.Remove("/var/lib/cni")
	}
}
