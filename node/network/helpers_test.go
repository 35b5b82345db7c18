package network

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/vishvananda/netlink"
)

// TestMain lets the test binary act as the plugin, as the navarch binary
// does: invoked as navarch-bridge (a symlink, or argv[0] set by exec), it
// runs the plugin instead of the tests.
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == PluginName {
		os.Exit(PluginMain("navarch-bridge (test binary)"))
	}
	os.Exit(m.Run())
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: creates network namespaces, bridges and veths")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs the ip command (iproute2) to create network namespaces")
	}
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// newNetns creates a named network namespace (/run/netns/<name>) that the
// test deletes when it ends.
func newNetns(t testing.TB) string {
	t.Helper()
	name := "nvt-" + randHex(4)
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("netns %s not removable: %v: %s", name, err, out)
		}
	})
	return "/run/netns/" + name
}

// freeSubnet picks a 10.2xx.y.0/<ones> subnet that overlaps no route or
// address of the host, so the test bridge's address disturbs nothing.
func freeSubnet(t testing.TB, ones int) *net.IPNet {
	t.Helper()
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	for try := 0; try < 100; try++ {
		r := make([]byte, 2)
		_, _ = rand.Read(r)
		cand := &net.IPNet{IP: net.IPv4(10, 200+r[0]%50, r[1], 0).To4(), Mask: net.CIDRMask(ones, 32)}
		clash := false
		for _, rt := range routes {
			if rt.Dst == nil {
				continue
			}
			if ones, _ := rt.Dst.Mask.Size(); ones > 0 && (rt.Dst.Contains(cand.IP) || cand.Contains(rt.Dst.IP)) {
				clash = true
			}
		}
		for _, a := range addrs {
			if cand.Contains(a.IP) {
				clash = true
			}
		}
		if !clash {
			return cand
		}
	}
	t.Fatal("no free test subnet in 10.200.0.0/13")
	return nil
}

// testNet is a network of the built-in plugin private to one test: its own
// bridge, subnet, IPAM dir and masquerade table, all removed at the end.
type testNet struct {
	name, bridge, dataDir string
	subnet                *net.IPNet
	conf                  map[string]any
}

func newTestNet(t testing.TB, ones int) *testNet {
	t.Helper()
	id := randHex(3)
	n := &testNet{
		name:    "nvtest-" + id,
		bridge:  "nvtbr" + id,
		dataDir: t.TempDir(),
		subnet:  freeSubnet(t, ones),
	}
	n.conf = map[string]any{
		"cniVersion": "1.0.0",
		"name":       n.name,
		"type":       PluginName,
		"bridge":     n.bridge,
		"subnet":     n.subnet.String(),
		// Wider than the subnet, as a cluster's pod range is.
		"clusterCIDR": (&net.IPNet{IP: n.subnet.IP.Mask(net.CIDRMask(16, 32)), Mask: net.CIDRMask(16, 32)}).String(),
		"mtu":         1400,
		"dataDir":     n.dataDir,
		// The host's forwarding setting is not the test's to change.
		"ipForward": false,
	}
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(n.bridge); err == nil {
			if err := netlink.LinkDel(l); err != nil {
				t.Errorf("delete test bridge %s: %v", n.bridge, err)
			}
		}
		if err := removeMasquerade(n.name); err != nil {
			t.Errorf("delete masquerade table of %s: %v", n.name, err)
		}
	})
	return n
}

func (n *testNet) confBytes(t testing.TB, overrides map[string]any) []byte {
	t.Helper()
	m := map[string]any{}
	for k, v := range n.conf {
		m[k] = v
	}
	for k, v := range overrides {
		m[k] = v
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (n *testNet) args(t testing.TB, containerID, netnsPath string) *skel.CmdArgs {
	return &skel.CmdArgs{ContainerID: containerID, Netns: netnsPath, IfName: "eth0", StdinData: n.confBytes(t, nil)}
}

func (n *testNet) ipamDir() string { return filepath.Join(n.dataDir, n.name) }

// execPlugin runs the test binary as the plugin, in a separate process as a
// runtime would, and returns its stdout.
func execPlugin(command string, stdin []byte, containerID, netnsPath string) ([]byte, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := &exec.Cmd{Path: exe, Args: []string{PluginName}}
	cmd.Env = append(os.Environ(),
		"CNI_COMMAND="+command,
		"CNI_CONTAINERID="+containerID,
		"CNI_NETNS="+netnsPath,
		"CNI_IFNAME=eth0",
		"CNI_PATH=/nonexistent",
	)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %v: %s%s", PluginName, command, err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}

// bridgePorts lists the links attached to the bridge.
func bridgePorts(t testing.TB, bridge string) []string {
	t.Helper()
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return nil
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}

// peerSeen starts a TCP server in serverNS on ip and dials it from
// clientNS; it returns the source address the server saw.
func peerSeen(t testing.TB, serverNS, ip, clientNS string) string {
	t.Helper()
	return peerSeenAt(t, serverNS, ip, ip, clientNS)
}

// peerSeenAt is peerSeen with a server listening on listenIP ("" for all
// addresses) and dialled at dialIP.
func peerSeenAt(t testing.TB, serverNS, listenIP, dialIP, clientNS string) string {
	t.Helper()
	var ln net.Listener
	if err := inNetns(serverNS, func() (err error) {
		ln, err = net.Listen("tcp4", net.JoinHostPort(listenIP, "0"))
		return err
	}); err != nil {
		t.Fatalf("listen in %s: %v", serverNS, err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		_, _ = io.WriteString(c, host)
	}()
	var seen []byte
	if err := inNetns(clientNS, func() error {
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		c, err := net.DialTimeout("tcp4", net.JoinHostPort(dialIP, port), 5*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		seen, err = io.ReadAll(c)
		return err
	}); err != nil {
		t.Fatalf("dial %s from %s: %v", ln.Addr(), clientNS, err)
	}
	return string(seen)
}

// ping sends one ICMP echo from the namespace with busybox (skipped when
// busybox is not installed; the TCP checks still run).
func ping(t testing.TB, netnsPath, ip string) {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		t.Logf("busybox not installed: ping to %s skipped", ip)
		return
	}
	name := strings.TrimPrefix(netnsPath, "/run/netns/")
	if out, err := exec.Command("ip", "netns", "exec", name, bb, "ping", "-c", "1", "-W", "3", ip).CombinedOutput(); err != nil {
		t.Fatalf("ping %s from %s: %v: %s", ip, name, err, out)
	}
}
