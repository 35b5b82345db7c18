package network

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
)

func mustCIDR(t *testing.T, s string) *net.IPNet {
	t.Helper()
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func ipFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if net.ParseIP(e.Name()) != nil {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestIPAMAllocateRelease(t *testing.T) {
	dir := t.TempDir()
	a := newAllocator("net1", dir, mustCIDR(t, "10.42.0.0/24"))
	ip1, fresh, err := a.Allocate("c1", "eth0")
	if err != nil || !fresh {
		t.Fatal(fresh, err)
	}
	if ip1.String() != "10.42.0.2" {
		t.Fatalf("first pod IP %s, want 10.42.0.2 (10.42.0.1 is the gateway)", ip1)
	}
	again, fresh, err := a.Allocate("c1", "eth0")
	if err != nil || !again.Equal(ip1) || fresh {
		t.Fatalf("second ADD of the same attachment gave %s (fresh %v), %v; want %s", again, fresh, err, ip1)
	}
	b, err := os.ReadFile(filepath.Join(dir, "net1", ip1.String()))
	if err != nil || string(b) != "c1\neth0\n" {
		t.Fatalf("allocation file holds %q, %v", b, err)
	}

	// A restart: a new allocator over the same directory, and no round-robin
	// hint, so only the allocation file keeps 10.42.0.2 from being reused.
	if err := os.Remove(filepath.Join(dir, "net1", lastReservedFile)); err != nil {
		t.Fatal(err)
	}
	a2 := newAllocator("net1", dir, mustCIDR(t, "10.42.0.0/24"))
	ip2, _, err := a2.Allocate("c2", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if ip2.Equal(ip1) {
		t.Fatalf("after restart c2 got %s, held by c1", ip2)
	}
	if got, _ := a2.Lookup("c1", "eth0"); !got.Equal(ip1) {
		t.Fatalf("lookup c1 = %s, want %s", got, ip1)
	}

	if err := a2.Release("c1", "eth0"); err != nil {
		t.Fatal(err)
	}
	if err := a2.Release("c1", "eth0"); err != nil {
		t.Fatalf("second release: %v", err)
	}
	if err := a2.Release("unknown", "eth0"); err != nil {
		t.Fatalf("release of unknown container: %v", err)
	}
	if files := ipFiles(t, filepath.Join(dir, "net1")); len(files) != 1 || files[0] != ip2.String() {
		t.Fatalf("allocations after release: %v, want only %s", files, ip2)
	}
	// Round robin: the address just released is not the next one handed out.
	ip3, _, err := a2.Allocate("c3", "eth0")
	if err != nil {
		t.Fatal(err)
	}
	if ip3.Equal(ip1) || ip3.Equal(ip2) {
		t.Fatalf("c3 got %s (c1 had %s, c2 has %s)", ip3, ip1, ip2)
	}
}

func TestIPAMExhausted(t *testing.T) {
	a := newAllocator("small", t.TempDir(), mustCIDR(t, "10.9.9.0/30"))
	if _, _, err := a.Allocate("c1", "eth0"); err != nil {
		t.Fatal(err)
	}
	_, _, err := a.Allocate("c2", "eth0")
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != ErrNoFreeIP || !strings.Contains(cniErr.Msg, "no free IP address in 10.9.9.0/30") {
		t.Fatalf("ADD on a full /30: %v; want CNI error %d naming the subnet", err, ErrNoFreeIP)
	}
	if err := a.Release("c1", "eth0"); err != nil {
		t.Fatal(err)
	}
	if ip, _, err := a.Allocate("c2", "eth0"); err != nil || ip.String() != "10.9.9.2" {
		t.Fatalf("after release: %s, %v", ip, err)
	}
}

func TestIPAMConcurrent(t *testing.T) {
	dir := t.TempDir()
	const n = 40
	ips := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Each its own allocator, as separate plugin processes are.
			a := newAllocator("conc", dir, mustCIDR(t, "10.42.0.0/26"))
			ip, _, err := a.Allocate(fmt.Sprintf("c%d", i), "eth0")
			ips[i], errs[i] = ip.String(), err
		}()
	}
	wg.Wait()
	seen := map[string]int{}
	for i, ip := range ips {
		if errs[i] != nil {
			t.Fatalf("c%d: %v", i, errs[i])
		}
		if j, dup := seen[ip]; dup {
			t.Fatalf("c%d and c%d both got %s", i, j, ip)
		}
		seen[ip] = i
	}
	if files := ipFiles(t, filepath.Join(dir, "conc")); len(files) != n {
		t.Fatalf("%d allocation files, want %d", len(files), n)
	}
}

func TestIPAMGC(t *testing.T) {
	dir := t.TempDir()
	a := newAllocator("gc", dir, mustCIDR(t, "10.42.0.0/24"))
	for _, id := range []string{"keep", "drop1", "drop2"} {
		if _, _, err := a.Allocate(id, "eth0"); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.ReleaseAllExcept(map[string]bool{owner("keep", "eth0"): true}); err != nil {
		t.Fatal(err)
	}
	if files := ipFiles(t, filepath.Join(dir, "gc")); len(files) != 1 {
		t.Fatalf("after GC: %v, want one allocation", files)
	}
	if ip, _ := a.Lookup("keep", "eth0"); ip == nil {
		t.Fatal("GC released the attachment it was told to keep")
	}
}

func TestParseConf(t *testing.T) {
	for _, tc := range []struct {
		conf, wantErr string
	}{
		{`{"cniVersion":"1.0.0","name":"n","type":"navarch-bridge","subnet":"10.42.0.0/24","clusterCIDR":"10.42.0.0/16"}`, ""},
		{`{"cniVersion":"1.0.0","type":"navarch-bridge","subnet":"10.42.0.0/24"}`, "name is required"},
		{`{"cniVersion":"1.0.0","name":"n","type":"navarch-bridge"}`, "subnet is required"},
		{`{"cniVersion":"1.0.0","name":"n","type":"navarch-bridge","subnet":"10.42.0.0/31"}`, "too small"},
		{`{"cniVersion":"1.0.0","name":"n","type":"navarch-bridge","subnet":"fd00::/64"}`, "only IPv4"},
		{`{"cniVersion":"1.0.0","name":"n","type":"navarch-bridge","subnet":"10.42.0.0/24","clusterCIDR":"10.43.0.0/16"}`, "not inside clusterCIDR"},
		{`{"cniVersion":"1.0.0","name":"n","type":"navarch-bridge","subnet":"10.42.0.0/24","bridge":"a-very-long-bridge-name"}`, "longer than 15"},
	} {
		c, err := parseConf([]byte(tc.conf))
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("%s: %v", tc.conf, err)
				continue
			}
			if c.Bridge != DefaultBridge || c.MTU != DefaultMTU || c.DataDir != DefaultDataDir || c.clusterCIDR.String() != "10.42.0.0/16" {
				t.Errorf("%s: defaults %+v", tc.conf, c)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: error %v, want %q", tc.conf, err, tc.wantErr)
		}
	}
}

func TestWriteDefaultConfig(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "net.d")
	path, err := WriteDefaultConfig(dir, "10.42.3.0/24", "10.42.0.0/16")
	if err != nil {
		t.Fatal(err)
	}
	if path != filepath.Join(dir, DefaultConfName) {
		t.Fatalf("wrote %s", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"type": "navarch-bridge"`, `"subnet": "10.42.3.0/24"`, `"clusterCIDR": "10.42.0.0/16"`, `"bridge": "navarch0"`, `"cniVersion": "1.1.0"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("default config lacks %s:\n%s", want, b)
		}
	}
	// A user's configuration sorting first wins and is left alone.
	user := filepath.Join(dir, "05-user.conflist")
	if err := os.WriteFile(user, []byte(`{"cniVersion":"1.0.0","name":"u","plugins":[{"type":"bridge"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if path, err := WriteDefaultConfig(dir, "10.42.3.0/24", ""); err != nil || path != user {
		t.Fatalf("with a user config: %s, %v; want %s", path, err, user)
	}
	if _, err := WriteDefaultConfig(t.TempDir(), "not-a-cidr", ""); err == nil {
		t.Fatal("a bad podCIDR was written")
	}
}
