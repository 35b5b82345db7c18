package nodeipam

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"

	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
)

func TestCIDRSetAllocatesEachSubnetOnce(t *testing.T) {
	s, err := parseRange("10.42.0.0/16", 24)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i := 0; i < 256; i++ {
		c, err := s.allocate()
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		if seen[c] {
			t.Fatalf("%s handed out twice", c)
		}
		seen[c] = true
	}
	if !seen["10.42.0.0/24"] || !seen["10.42.255.0/24"] {
		t.Fatalf("range ends not allocated: %v", seen)
	}
	if _, err := s.allocate(); !errors.Is(err, ErrExhausted) {
		t.Fatalf("exhausted range: %v", err)
	}
	s.release("10.42.7.0/24")
	if c, err := s.allocate(); err != nil || c != "10.42.7.0/24" {
		t.Fatalf("after release: %s %v", c, err)
	}
}

func TestCIDRSetOccupyAndRelease(t *testing.T) {
	s, _ := parseRange("10.42.0.0/16", 24)
	if s.occupy("10.200.0.0/24") {
		t.Error("a subnet outside the range was taken")
	}
	if s.occupy("10.42.1.0/25") {
		t.Error("a subnet of another size was taken")
	}
	if !s.occupy("10.42.0.0/24") || !s.occupy("10.42.1.0/24") {
		t.Fatal("subnets inside the range not taken")
	}
	if c, _ := s.allocate(); c != "10.42.2.0/24" {
		t.Fatalf("allocated %s, want the first free 10.42.2.0/24", c)
	}
	// A released subnet is not handed out again before the others.
	s.release("10.42.0.0/24")
	if c, _ := s.allocate(); c != "10.42.3.0/24" {
		t.Fatalf("allocated %s after a release, want 10.42.3.0/24", c)
	}
}

func TestCIDRSetIPv6(t *testing.T) {
	s, err := parseRange("fd00:42::/56", 64)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := s.allocate()
	b, _ := s.allocate()
	if a != "fd00:42::/64" || b != "fd00:42:0:1::/64" {
		t.Fatalf("allocated %s, %s", a, b)
	}
	if i, ok := s.index(b); !ok || i != 1 {
		t.Fatalf("index of %s: %d %v", b, i, ok)
	}
}

func TestValidateRange(t *testing.T) {
	for _, tc := range []struct {
		cidr string
		mask int
		ok   bool
	}{
		{"10.42.0.0/16", 24, true},
		{"10.42.0.0/16", 16, true},
		{"10.42.0.0/16", 8, false},
		{"10.42.0.0/16", 33, false},
		{"10.0.0.0/8", 28, false}, // 2^20 subnets
		{"not-a-cidr", 24, false},
	} {
		if err := ValidateRange(tc.cidr, tc.mask); (err == nil) != tc.ok {
			t.Errorf("%s /%d: %v", tc.cidr, tc.mask, err)
		}
	}
}

// TestController: nodes without a pod CIDR get distinct ones, skipping the
// subnet a node already had at start; a node with its own CIDR outside the
// range keeps it; a deleted node's subnet is released.
func TestController(t *testing.T) {
	s := apiservertest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	nodes := s.Client.CoreV1().Nodes()
	mk := func(name, cidr string) {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
		if cidr != "" {
			n.Spec.PodCIDR, n.Spec.PodCIDRs = cidr, []string{cidr}
		}
		if _, err := nodes.Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mk("old", "10.42.0.0/24")
	mk("hollow", "10.200.0.0/24")
	c, err := New(s.Client, informers.NewSharedInformerFactory(s.Client, 0), "10.42.0.0/16", 24)
	if err != nil {
		t.Fatal(err)
	}
	go c.Run(ctx)
	for i := 0; i < 3; i++ {
		mk(fmt.Sprintf("n%d", i), "")
	}
	got := map[string]string{}
	apiservertest.Eventually(t, 30*time.Second, "pod CIDRs", func() error {
		list, err := nodes.List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		used := map[string]string{}
		for _, n := range list.Items {
			if n.Spec.PodCIDR == "" || len(n.Spec.PodCIDRs) != 1 || n.Spec.PodCIDRs[0] != n.Spec.PodCIDR {
				return fmt.Errorf("node %s: %q %v", n.Name, n.Spec.PodCIDR, n.Spec.PodCIDRs)
			}
			if other, dup := used[n.Spec.PodCIDR]; dup {
				t.Fatalf("%s given to %s and %s", n.Spec.PodCIDR, other, n.Name)
			}
			used[n.Spec.PodCIDR] = n.Name
			got[n.Name] = n.Spec.PodCIDR
		}
		return nil
	})
	if got["old"] != "10.42.0.0/24" || got["hollow"] != "10.200.0.0/24" {
		t.Fatalf("existing CIDRs changed: %v", got)
	}

	if err := nodes.Delete(ctx, "n0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	freed := got["n0"]
	apiservertest.Eventually(t, 10*time.Second, "release", func() error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if i, _ := c.set.index(freed); c.set.used[i] {
			return fmt.Errorf("%s still used", freed)
		}
		return nil
	})
}
