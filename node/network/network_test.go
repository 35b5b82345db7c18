package network

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
)

// newTestNetwork writes conflist into a config dir of its own and returns a
// Network over it whose built-in plugin is this test binary.
func newTestNetwork(t testing.TB, conflist any) *Network {
	return newTestNetworkExec(t, conflist, false)
}

func newTestNetworkExec(t testing.TB, conflist any, execBuiltin bool) *Network {
	t.Helper()
	dir := t.TempDir()
	confDir := filepath.Join(dir, "net.d")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(conflist)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(confDir, "10-test.conflist"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	n, err := New(Config{ConfDir: confDir, PluginDir: filepath.Join(dir, "bin"), CacheDir: filepath.Join(dir, "cache"), ExecBuiltin: execBuiltin})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func builtinConflist(n *testNet) map[string]any {
	plugin := map[string]any{}
	for k, v := range n.conf {
		if k != "cniVersion" && k != "name" {
			plugin[k] = v
		}
	}
	return map[string]any{"cniVersion": "1.0.0", "name": n.name, "plugins": []any{plugin}}
}

// setupTwoPods runs Setup for two pods, checks they got distinct addresses
// and talk to each other with their own source addresses, tears them down
// (twice: the second must succeed too) and returns the addresses.
// checkFirst: CHECK the first pod too, after the second joined the bridge
// (Debian's bridge plugin fails that: the bridge takes the lowest MAC of its
// ports, so the MAC in the first pod's result goes stale; ours fixes it).
func setupTwoPods(t *testing.T, nw *Network, checkFirst bool) (string, string) {
	t.Helper()
	ctx := context.Background()
	nsA, nsB := newNetns(t), newNetns(t)
	ipA, err := nw.Setup(ctx, "sandbox-a", nsA, "default", "pod-a")
	if err != nil {
		t.Fatalf("Setup pod-a: %v", err)
	}
	ipB, err := nw.Setup(ctx, "sandbox-b", nsB, "default", "pod-b")
	if err != nil {
		t.Fatalf("Setup pod-b: %v", err)
	}
	if ipA == ipB {
		t.Fatalf("both pods got %s", ipA)
	}
	if seen := peerSeen(t, nsA, ipA, nsB); seen != ipB {
		t.Fatalf("pod-a saw pod-b from %q, want %s", seen, ipB)
	}
	ping(t, nsB, ipA)
	if err := nw.Check(ctx, "sandbox-b", nsB, "default", "pod-b"); err != nil {
		t.Fatalf("Check pod-b: %v", err)
	}
	if checkFirst {
		if err := nw.Check(ctx, "sandbox-a", nsA, "default", "pod-a"); err != nil {
			t.Fatalf("Check pod-a: %v", err)
		}
	}
	for _, p := range []struct{ id, ns, name string }{{"sandbox-a", nsA, "pod-a"}, {"sandbox-b", nsB, "pod-b"}} {
		if err := nw.Teardown(ctx, p.id, p.ns, "default", p.name); err != nil {
			t.Fatalf("Teardown %s: %v", p.name, err)
		}
		if err := nw.Teardown(ctx, p.id, p.ns, "default", p.name); err != nil {
			t.Fatalf("second Teardown %s: %v", p.name, err)
		}
	}
	return ipA, ipB
}

func TestNetworkBuiltinPlugin(t *testing.T) {
	requireRoot(t)
	for _, execBuiltin := range []bool{false, true} {
		t.Run(fmt.Sprintf("exec=%v", execBuiltin), func(t *testing.T) { testNetworkBuiltin(t, execBuiltin) })
	}
}

func testNetworkBuiltin(t *testing.T, execBuiltin bool) {
	n := newTestNet(t, 24)
	nw := newTestNetworkExec(t, builtinConflist(n), execBuiltin)
	if target, err := os.Readlink(filepath.Join(nw.cfg.PluginDir, PluginName)); err != nil || target != nw.cfg.Executable {
		t.Fatalf("plugin link -> %q, %v; want %s", target, err, nw.cfg.Executable)
	}
	if err := nw.Status(context.Background()); err != nil {
		t.Fatalf("Status: %v", err)
	}
	setupTwoPods(t, nw, true)
	assertNoLeaks(t, n)
}

// The same Setup/Teardown with Debian's containernetworking-plugins bridge
// and host-local, as a user swapping in third-party plugins has it.
func TestNetworkDebianBridgePlugin(t *testing.T) {
	requireRoot(t)
	for _, p := range []string{"bridge", "host-local"} {
		if _, err := os.Stat(filepath.Join("/usr/lib/cni", p)); err != nil {
			t.Skipf("Debian's containernetworking-plugins not installed (/usr/lib/cni/%s)", p)
		}
	}
	forwardBefore, _ := os.ReadFile(ipForwardPath)
	id := randHex(3)
	bridge := "nvdbr" + id
	subnet := freeSubnet(t, 24)
	ipamDir := t.TempDir()
	t.Cleanup(func() {
		if l, err := netlink.LinkByName(bridge); err == nil {
			_ = netlink.LinkDel(l)
		}
	})
	nw := newTestNetwork(t, map[string]any{
		"cniVersion": "1.0.0",
		"name":       "nvdeb-" + id,
		"plugins": []any{map[string]any{
			"type":        "bridge",
			"bridge":      bridge,
			"isGateway":   false,
			"ipMasq":      false,
			"hairpinMode": true,
			"ipam": map[string]any{
				"type":    "host-local",
				"ranges":  [][]map[string]any{{{"subnet": subnet.String()}}},
				"dataDir": ipamDir,
			},
		}},
	})
	ipA, ipB := setupTwoPods(t, nw, false)
	for _, ip := range []string{ipA, ipB} {
		if !subnet.Contains(net.ParseIP(ip)) {
			t.Errorf("pod IP %s outside %s", ip, subnet)
		}
	}
	if ports := bridgePorts(t, bridge); len(ports) != 0 {
		t.Errorf("veths left on %s: %v", bridge, ports)
	}
	if files := ipFiles(t, filepath.Join(ipamDir, "nvdeb-"+id)); len(files) != 0 {
		t.Errorf("host-local allocations left: %v", files)
	}
	if after, _ := os.ReadFile(ipForwardPath); string(after) != string(forwardBefore) {
		t.Errorf("ip_forward changed from %q to %q", forwardBefore, after)
	}
}

// BenchmarkAddDel measures a pod's ADD then DEL through libcni, each a
// plugin process as a runtime runs it: the built-in plugin, then Debian's
// bridge + host-local for reference.
func BenchmarkAddDel(b *testing.B) {
	requireRoot(b)
	b.Run("navarch-bridge-libcni-in-process", func(b *testing.B) {
		n := newTestNet(b, 24)
		benchAddDel(b, newTestNetwork(b, builtinConflist(n)))
	})
	b.Run("navarch-bridge-libcni-exec-test-binary", func(b *testing.B) {
		n := newTestNet(b, 24)
		benchAddDel(b, newTestNetworkExec(b, builtinConflist(n), true))
	})
	// NAVARCH_BIN=path/to/navarch measures the real binary as the plugin
	// (its start-up includes the bundled kubectl's package initialisers).
	if bin := os.Getenv("NAVARCH_BIN"); bin != "" {
		b.Run("navarch-bridge-libcni-exec-navarch-binary", func(b *testing.B) {
			n := newTestNet(b, 24)
			nw := newTestNetwork(b, builtinConflist(n))
			nw, err := New(Config{ConfDir: nw.cfg.ConfDir, PluginDir: filepath.Join(b.TempDir(), "bin"), CacheDir: nw.cfg.CacheDir, Executable: bin, ExecBuiltin: true})
			if err != nil {
				b.Fatal(err)
			}
			benchAddDel(b, nw)
		})
	}
	b.Run("navarch-bridge-direct-call", func(b *testing.B) {
		n := newTestNet(b, 24)
		ns := newNetns(b)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, _, err := add(n.args(b, "bench", ns)); err != nil {
				b.Fatal(err)
			}
			if err := del(n.args(b, "bench", ns)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("debian-bridge-libcni-exec", func(b *testing.B) {
		if _, err := os.Stat("/usr/lib/cni/bridge"); err != nil {
			b.Skip("Debian's containernetworking-plugins not installed")
		}
		id := randHex(3)
		bridge := "nvdbr" + id
		b.Cleanup(func() {
			if l, err := netlink.LinkByName(bridge); err == nil {
				_ = netlink.LinkDel(l)
			}
		})
		benchAddDel(b, newTestNetwork(b, map[string]any{
			"cniVersion": "1.0.0",
			"name":       "nvdeb-" + id,
			"plugins": []any{map[string]any{
				"type": "bridge", "bridge": bridge, "isGateway": false, "ipMasq": false,
				"ipam": map[string]any{"type": "host-local", "ranges": [][]map[string]any{{{"subnet": freeSubnet(b, 24).String()}}}, "dataDir": b.TempDir()},
			}},
		}))
	})
}

func benchAddDel(b *testing.B, nw *Network) {
	ctx := context.Background()
	ns := newNetns(b)
	var addTime time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if _, err := nw.Setup(ctx, "bench", ns, "default", "bench"); err != nil {
			b.Fatal(err)
		}
		addTime += time.Since(start)
		if err := nw.Teardown(ctx, "bench", ns, "default", "bench"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(addTime.Seconds()*1000/float64(b.N), "add-ms/op")
}

// The kubelet sets pods up concurrently; the built-in plugin then runs in
// the agent's process, so concurrent in-process ADDs must not collide.
func TestNetworkConcurrentSetupInProcess(t *testing.T) {
	requireRoot(t)
	n := newTestNet(t, 24)
	nw := newTestNetwork(t, builtinConflist(n))
	ctx := context.Background()
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
			ips[i], errs[i] = nw.Setup(ctx, fmt.Sprintf("sandbox-%d", i), nss[i], "default", fmt.Sprintf("pod-%d", i))
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
	if seen := peerSeen(t, nss[0], ips[0], nss[pods-1]); seen != ips[pods-1] {
		t.Fatalf("pod-0 saw pod-%d from %q, want %s", pods-1, seen, ips[pods-1])
	}
	for i := 0; i < pods; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = nw.Teardown(ctx, fmt.Sprintf("sandbox-%d", i), nss[i], "default", fmt.Sprintf("pod-%d", i))
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("Teardown pod-%d: %v", i, err)
		}
	}
	assertNoLeaks(t, n)
}

// GC after a crash: the sandbox the runtime still knows keeps its network,
// the other loses its veth and address.
func TestNetworkGC(t *testing.T) {
	requireRoot(t)
	n := newTestNet(t, 24)
	conf := builtinConflist(n)
	conf["cniVersion"] = "1.1.0"
	nw := newTestNetwork(t, conf)
	ctx := context.Background()
	nsA, nsB := newNetns(t), newNetns(t)
	ipA, err := nw.Setup(ctx, "sandbox-a", nsA, "default", "pod-a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nw.Setup(ctx, "sandbox-b", nsB, "default", "pod-b"); err != nil {
		t.Fatal(err)
	}
	// An allocation libcni's cache does not know (a crash between the
	// plugin's ADD and the cache write): only the plugin's GC can drop it.
	if _, _, err := newAllocator(n.name, n.dataDir, n.subnet).Allocate("ghost", "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := nw.GC(ctx, []string{"sandbox-a"}); err != nil {
		t.Fatalf("GC: %v", err)
	}
	if files := ipFiles(t, n.ipamDir()); len(files) != 1 || files[0] != ipA {
		t.Fatalf("allocations after GC: %v, want only %s", files, ipA)
	}
	if _, err := netlink.LinkByName(hostVethName(n.name, "sandbox-b", "eth0")); err == nil {
		t.Fatal("GC left sandbox-b's veth")
	}
	if err := nw.Check(ctx, "sandbox-a", nsA, "default", "pod-a"); err != nil {
		t.Fatalf("sandbox-a after GC: %v", err)
	}
	if err := nw.Teardown(ctx, "sandbox-a", nsA, "default", "pod-a"); err != nil {
		t.Fatal(err)
	}
	assertNoLeaks(t, n)
}
