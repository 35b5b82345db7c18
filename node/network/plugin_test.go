package network

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	types040 "github.com/containernetworking/cni/pkg/types/040"
	types100 "github.com/containernetworking/cni/pkg/types/100"
	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

func podLink(t *testing.T, netnsPath, name string) (netlink.Link, *netlink.Handle) {
	t.Helper()
	h, err := netns.GetFromPath(netnsPath)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	ph, err := netlink.NewHandleAt(h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ph.Close)
	l, err := ph.LinkByName(name)
	if err != nil {
		return nil, ph
	}
	return l, ph
}

func TestPluginTwoPods(t *testing.T) {
	requireRoot(t)
	n := newTestNet(t, 24)
	nsA, nsB := newNetns(t), newNetns(t)

	_, resA, err := add(n.args(t, "pod-a", nsA))
	if err != nil {
		t.Fatalf("ADD pod-a: %v", err)
	}
	_, resB, err := add(n.args(t, "pod-b", nsB))
	if err != nil {
		t.Fatalf("ADD pod-b: %v", err)
	}
	ipA, ipB := resA.IPs[0].Address.IP.String(), resB.IPs[0].Address.IP.String()
	gw := gateway(n.subnet).String()
	if ipA == ipB || !n.subnet.Contains(resA.IPs[0].Address.IP) || !n.subnet.Contains(resB.IPs[0].Address.IP) {
		t.Fatalf("pod IPs %s and %s: want distinct addresses in %s", ipA, ipB, n.subnet)
	}
	if ipA == gw || ipB == gw || resA.IPs[0].Gateway.String() != gw {
		t.Fatalf("pod IPs %s, %s, gateway %s in result; want gateway %s kept for the bridge", ipA, ipB, resA.IPs[0].Gateway, gw)
	}

	// The bridge carries the gateway; both host ends are its ports, in hairpin mode.
	br, err := netlink.LinkByName(n.bridge)
	if err != nil {
		t.Fatalf("bridge %s: %v", n.bridge, err)
	}
	addrs, _ := netlink.AddrList(br, netlink.FAMILY_V4)
	if len(addrs) != 1 || addrs[0].IPNet.String() != fmt.Sprintf("%s/24", gw) {
		t.Fatalf("bridge addresses %v, want %s/24", addrs, gw)
	}
	if ports := bridgePorts(t, n.bridge); len(ports) != 2 {
		t.Fatalf("bridge ports %v, want the two host veths", ports)
	}
	host, err := netlink.LinkByName(hostVethName(n.name, "pod-a", "eth0"))
	if err != nil {
		t.Fatal(err)
	}
	if pi, err := netlink.LinkGetProtinfo(host); err != nil || !pi.Hairpin {
		t.Fatalf("hairpin on %s: %+v, %v", host.Attrs().Name, pi, err)
	}
	eth0, ph := podLink(t, nsA, "eth0")
	if eth0 == nil || eth0.Attrs().MTU != 1400 || eth0.Attrs().Flags&net.FlagUp == 0 {
		t.Fatalf("pod eth0 %+v: want up with MTU 1400", eth0)
	}
	routes, _ := ph.RouteList(eth0, netlink.FAMILY_V4)
	hasDefault := false
	for _, r := range routes {
		hasDefault = hasDefault || (r.Dst == nil || r.Dst.String() == "0.0.0.0/0") && r.Gw.String() == gw
	}
	if !hasDefault {
		t.Fatalf("pod routes %v: no default route via %s", routes, gw)
	}

	// Pod to pod keeps its source address (no NAT), and both reach the gateway.
	if seen := peerSeen(t, nsA, ipA, nsB); seen != ipB {
		t.Fatalf("pod-a saw pod-b's connection from %q, want %s (pod-to-pod must not be NATed)", seen, ipB)
	}
	if seen := peerSeen(t, nsB, ipB, nsA); seen != ipA {
		t.Fatalf("pod-b saw pod-a from %q, want %s", seen, ipA)
	}
	ping(t, nsA, ipB)
	ping(t, nsA, gw)
	ping(t, nsB, gw)
	// Localhost works in the pod without a loopback plugin.
	ping(t, nsA, "127.0.0.1")

	// One masquerade rule for the network, however many pods.
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	table := &nftables.Table{Family: nftables.TableFamilyIPv4, Name: masqTable(n.name)}
	rules, err := c.GetRules(table, &nftables.Chain{Name: masqChain, Table: table})
	if err != nil || len(rules) != 1 {
		t.Fatalf("masquerade rules: %d, %v; want 1", len(rules), err)
	}

	// A repeated ADD of a working pod fails and leaves the pod as it was.
	if _, _, err := add(n.args(t, "pod-a", nsA)); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second ADD of pod-a: %v, want an error", err)
	}
	if ip, _ := newAllocator(n.name, n.dataDir, n.subnet).Lookup("pod-a", "eth0"); ip.String() != ipA {
		t.Fatalf("after a failed repeated ADD pod-a holds %v, want %s", ip, ipA)
	}

	// CHECK passes with the result ADD gave.
	prev, _ := json.Marshal(resA)
	var prevMap map[string]any
	_ = json.Unmarshal(prev, &prevMap)
	if err := check(argsWithPrev(n, t, "pod-a", nsA, prevMap)); err != nil {
		t.Fatalf("CHECK pod-a: %v", err)
	}

	// DEL removes the veth and the allocation; repeating it, or deleting an
	// unknown container, succeeds.
	if err := del(n.args(t, "pod-a", nsA)); err != nil {
		t.Fatalf("DEL pod-a: %v", err)
	}
	if _, err := netlink.LinkByName(hostVethName(n.name, "pod-a", "eth0")); err == nil {
		t.Fatal("host veth of pod-a left after DEL")
	}
	if l, _ := podLink(t, nsA, "eth0"); l != nil {
		t.Fatal("eth0 left in pod-a's netns after DEL")
	}
	if files := ipFiles(t, n.ipamDir()); len(files) != 1 || files[0] != ipB {
		t.Fatalf("allocations after DEL pod-a: %v, want only %s", files, ipB)
	}
	if err := del(n.args(t, "pod-a", nsA)); err != nil {
		t.Fatalf("second DEL pod-a: %v", err)
	}
	if err := del(n.args(t, "never-added", "/run/netns/nvt-does-not-exist")); err != nil {
		t.Fatalf("DEL of an unknown container: %v", err)
	}
	if err := check(argsWithPrev(n, t, "pod-a", nsA, prevMap)); err == nil {
		t.Fatal("CHECK after DEL passed")
	}

	if err := del(n.args(t, "pod-b", nsB)); err != nil {
		t.Fatalf("DEL pod-b: %v", err)
	}
	assertNoLeaks(t, n)
}

// argsWithPrev is CHECK's input: the configuration with prevResult.
func argsWithPrev(n *testNet, t *testing.T, id, nsPath string, prev map[string]any) *skel.CmdArgs {
	a := n.args(t, id, nsPath)
	a.StdinData = n.confBytes(t, map[string]any{"prevResult": prev})
	return a
}

// assertNoLeaks checks what DEL must leave behind: no veth on the bridge and
// no allocation file (the netns removal is checked by newNetns's cleanup).
func assertNoLeaks(t *testing.T, n *testNet) {
	t.Helper()
	if ports := bridgePorts(t, n.bridge); len(ports) != 0 {
		t.Errorf("veths left on %s: %v", n.bridge, ports)
	}
	if files := ipFiles(t, n.ipamDir()); len(files) != 0 {
		t.Errorf("allocations left: %v", files)
	}
}

func TestPluginRestartKeepsAllocations(t *testing.T) {
	requireRoot(t)
	n := newTestNet(t, 24)
	nsA, nsB := newNetns(t), newNetns(t)
	// Separate processes, as a restarted agent's are.
	outA, err := execPlugin("ADD", n.confBytes(t, nil), "pod-a", nsA)
	if err != nil {
		t.Fatal(err)
	}
	var resA types100.Result
	if err := json.Unmarshal(outA, &resA); err != nil || len(resA.IPs) != 1 {
		t.Fatalf("ADD result %s: %v", outA, err)
	}
	// Without the round-robin hint only the allocation file protects pod-a.
	if err := removeFile(n.ipamDir(), lastReservedFile); err != nil {
		t.Fatal(err)
	}
	outB, err := execPlugin("ADD", n.confBytes(t, nil), "pod-b", nsB)
	if err != nil {
		t.Fatal(err)
	}
	var resB types100.Result
	if err := json.Unmarshal(outB, &resB); err != nil || len(resB.IPs) != 1 {
		t.Fatalf("ADD result %s: %v", outB, err)
	}
	if resA.IPs[0].Address.IP.Equal(resB.IPs[0].Address.IP) {
		t.Fatalf("pod-b got %s, still held by pod-a", resB.IPs[0].Address.IP)
	}
	for _, id := range []struct{ id, ns string }{{"pod-a", nsA}, {"pod-b", nsB}} {
		if _, err := execPlugin("DEL", n.confBytes(t, nil), id.id, id.ns); err != nil {
			t.Fatal(err)
		}
	}
	assertNoLeaks(t, n)
}

func TestPluginConcurrentAdds(t *testing.T) {
	requireRoot(t)
	n := newTestNet(t, 24)
	const pods = 20
	nss := make([]string, pods)
	for i := range nss {
		nss[i] = newNetns(t)
	}
	ips := make([]string, pods)
	errs := make([]error, pods)
	var wg sync.WaitGroup
	for i := 0; i < pods; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := execPlugin("ADD", n.confBytes(t, nil), fmt.Sprintf("pod-%d", i), nss[i])
			if err != nil {
				errs[i] = err
				return
			}
			var res types100.Result
			if err := json.Unmarshal(out, &res); err != nil || len(res.IPs) != 1 {
				errs[i] = fmt.Errorf("result %s: %v", out, err)
				return
			}
			ips[i] = res.IPs[0].Address.IP.String()
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for i := range ips {
		if errs[i] != nil {
			t.Fatalf("pod-%d: %v", i, errs[i])
		}
		if j, dup := seen[ips[i]]; dup {
			t.Fatalf("pod-%d and pod-%d both got %s", i, j, ips[i])
		}
		seen[ips[i]] = i
	}
	if ports := bridgePorts(t, n.bridge); len(ports) != pods {
		t.Fatalf("%d bridge ports, want %d", len(ports), pods)
	}
	for i := 0; i < pods; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = execPlugin("DEL", n.confBytes(t, nil), fmt.Sprintf("pod-%d", i), nss[i])
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("DEL pod-%d: %v", i, err)
		}
	}
	assertNoLeaks(t, n)
}

func TestPluginExhausted(t *testing.T) {
	requireRoot(t)
	n := newTestNet(t, 30)
	nsA, nsB := newNetns(t), newNetns(t)
	if _, _, err := add(n.args(t, "pod-a", nsA)); err != nil {
		t.Fatal(err)
	}
	out, err := execPlugin("ADD", n.confBytes(t, nil), "pod-b", nsB)
	if err == nil {
		t.Fatal("second ADD on a /30 succeeded")
	}
	var cniErr types.Error
	if jerr := json.Unmarshal(out, &cniErr); jerr != nil || cniErr.Code != ErrNoFreeIP || !strings.Contains(cniErr.Msg, "no free IP address in "+n.subnet.String()) {
		t.Fatalf("error output %s (%v): want CNI error %d naming %s", out, jerr, ErrNoFreeIP, n.subnet)
	}
	// The failed ADD left nothing.
	if l, _ := podLink(t, nsB, "eth0"); l != nil {
		t.Fatal("failed ADD left eth0 in the pod netns")
	}
	if _, err := netlink.LinkByName(hostVethName(n.name, "pod-b", "eth0")); err == nil {
		t.Fatal("failed ADD left its host veth")
	}
	if err := del(n.args(t, "pod-a", nsA)); err != nil {
		t.Fatal(err)
	}
	assertNoLeaks(t, n)
}

// A 0.4.0 configuration gets a 0.4.0 result, and VERSION lists what the
// plugin speaks.
func TestPluginOldVersionAndVersion(t *testing.T) {
	requireRoot(t)
	n := newTestNet(t, 24)
	ns := newNetns(t)
	conf := n.confBytes(t, map[string]any{"cniVersion": "0.4.0"})
	out, err := execPlugin("ADD", conf, "pod-old", ns)
	if err != nil {
		t.Fatal(err)
	}
	var res types040.Result
	if err := json.Unmarshal(out, &res); err != nil || res.CNIVersion != "0.4.0" || len(res.IPs) != 1 || res.IPs[0].Address.IP == nil {
		t.Fatalf("0.4.0 result %s: %v", out, err)
	}
	if _, err := execPlugin("DEL", conf, "pod-old", ns); err != nil {
		t.Fatal(err)
	}
	out, err = execPlugin("VERSION", []byte(`{"cniVersion":"1.0.0"}`), "", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"0.4.0", "1.0.0", "1.1.0"} {
		if !strings.Contains(string(out), `"`+v+`"`) {
			t.Errorf("VERSION %s lacks %s", out, v)
		}
	}
	if _, err := execPlugin("STATUS", n.confBytes(t, map[string]any{"cniVersion": "1.1.0"}), "", ""); err != nil {
		t.Fatalf("STATUS: %v", err)
	}
	assertNoLeaks(t, n)
}

func removeFile(dir, name string) error {
	err := os.Remove(filepath.Join(dir, name))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
