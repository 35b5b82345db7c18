package network

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// TestMasqueradeOnlyOutsideCluster runs a whole node inside namespaces the
// test creates, so that forwarding and NAT can be exercised without touching
// the host: a "node" netns holding the bridge, the nftables table and
// ip_forward (all per namespace), a pod netns, and an "outside" netns linked
// to the node that answers both for a pod of another node (inside the
// cluster CIDR, routed to it) and for an address outside the cluster.
func TestMasqueradeOnlyOutsideCluster(t *testing.T) {
	requireRoot(t)
	forwardBefore, _ := os.ReadFile(ipForwardPath)
	nodeNS, podNS, extNS := newNetns(t), newNetns(t), newNetns(t)
	const (
		podCIDR     = "10.244.1.0/24"
		clusterCIDR = "10.244.0.0/16"
		remotePod   = "10.244.2.5" // a pod of another node
		nodeUplink  = "172.31.255.1"
		outside     = "172.31.255.2"
	)

	// node <-> outside link, and its routes.
	nodeFd, extFd := openNS(t, nodeNS), openNS(t, extNS)
	la := netlink.NewLinkAttrs()
	la.Name = "nvup" + randHex(3)
	la.Namespace = netlink.NsFd(int(nodeFd))
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "ext0", PeerNamespace: netlink.NsFd(int(extFd))}); err != nil {
		t.Fatal(err)
	}
	nh, eh := handleAt(t, nodeFd), handleAt(t, extFd)
	configure(t, nh, la.Name, nodeUplink+"/30")
	configure(t, eh, "ext0", outside+"/30")
	configure(t, eh, "lo", remotePod+"/32")
	mustRoute(t, nh, &netlink.Route{Dst: cidr(t, "10.244.2.0/24"), Gw: net.ParseIP(outside)})
	ext0, _ := eh.LinkByName("ext0")
	mustRoute(t, eh, &netlink.Route{LinkIndex: ext0.Attrs().Index, Gw: net.ParseIP(nodeUplink)})

	// The plugin runs inside the node netns, as navarch-bridge.
	conf, _ := json.Marshal(map[string]any{
		"cniVersion": "1.0.0", "name": "nvmasq", "type": PluginName,
		"bridge": "navarch0", "subnet": podCIDR, "clusterCIDR": clusterCIDR,
		"dataDir": t.TempDir(),
	})
	out, err := execPluginIn(t, nodeNS, "ADD", conf, "pod-m", podNS)
	if err != nil {
		t.Fatal(err)
	}
	var res types100.Result
	if err := json.Unmarshal(out, &res); err != nil || len(res.IPs) != 1 {
		t.Fatalf("ADD result %s: %v", out, err)
	}
	podIP := res.IPs[0].Address.IP.String()
	// A second ADD converges on the same single rule.
	if _, err := execPluginIn(t, nodeNS, "ADD", conf, "pod-m2", newNetns(t)); err != nil {
		t.Fatal(err)
	}

	if seen := peerSeenAt(t, extNS, "", remotePod, podNS); seen != podIP {
		t.Errorf("a pod of another node saw %q, want the pod's own %s (inside the cluster CIDR: no NAT)", seen, podIP)
	}
	if seen := peerSeenAt(t, extNS, "", outside, podNS); seen != nodeUplink {
		t.Errorf("outside the cluster saw %q, want the node's %s (masqueraded)", seen, nodeUplink)
	}
	if b, err := exec.Command("ip", "netns", "exec", filepath.Base(nodeNS), "nft", "list", "table", "ip", masqTable("nvmasq")).CombinedOutput(); err == nil {
		if n := strings.Count(string(b), "masquerade"); n != 1 {
			t.Errorf("%d masquerade rules after two ADDs, want 1:\n%s", n, b)
		}
		t.Logf("node's rules:\n%s", b)
	}
	if _, err := execPluginIn(t, nodeNS, "DEL", conf, "pod-m", podNS); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadFile(ipForwardPath); !bytes.Equal(after, forwardBefore) {
		t.Errorf("the host's ip_forward changed from %q to %q", forwardBefore, after)
	}
}

func openNS(t *testing.T, path string) netns.NsHandle {
	t.Helper()
	h, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

func handleAt(t *testing.T, h netns.NsHandle) *netlink.Handle {
	t.Helper()
	nh, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nh.Close)
	return nh
}

func cidr(t *testing.T, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func configure(t *testing.T, h *netlink.Handle, name, addr string) {
	t.Helper()
	l, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	a, err := netlink.ParseAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.AddrAdd(l, a); err != nil {
		t.Fatalf("address %s on %s: %v", addr, name, err)
	}
	if err := h.LinkSetUp(l); err != nil {
		t.Fatalf("set %s up: %v", name, err)
	}
}

func mustRoute(t *testing.T, h *netlink.Handle, r *netlink.Route) {
	t.Helper()
	if err := h.RouteAdd(r); err != nil {
		t.Fatalf("route %v: %v", r, err)
	}
}

// execPluginIn runs the plugin (this test binary through a navarch-bridge
// symlink) inside the netns at nsPath with `ip netns exec`.
func execPluginIn(t *testing.T, nsPath, command string, stdin []byte, containerID, podNS string) ([]byte, error) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(t.TempDir(), PluginName)
	if err := os.Symlink(exe, link); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("ip", "netns", "exec", filepath.Base(nsPath), link)
	cmd.Env = append(os.Environ(), "CNI_COMMAND="+command, "CNI_CONTAINERID="+containerID,
		"CNI_NETNS="+podNS, "CNI_IFNAME=eth0", "CNI_PATH=/nonexistent")
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s in %s: %v: %s%s", PluginName, command, nsPath, err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}
