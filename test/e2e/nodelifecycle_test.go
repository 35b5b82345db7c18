package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// nlPod is one line of nlPods.
type nlPod struct{ name, node, phase string }

// nlPods lists the app=web pods that are not being deleted.
func nlPods(t *testing.T, s *server, c client) []nlPod {
	t.Helper()
	out := s.must(t, c, "get", "pods", "-l", "app=web", "-o",
		`jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName} {.status.phase} {.metadata.deletionTimestamp}{"\n"}{end}`)
	var pods []nlPod
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if f := strings.Fields(l); len(f) == 3 {
			pods = append(pods, nlPod{f[0], f[1], f[2]})
		}
	}
	return pods
}

// TestNodeFailureOnHollowNodes kills the process of one hollow node: the
// node shows NotReady with the unreachable taint, and the Deployment's pod
// on it is evicted when the default unreachable toleration (2 s here) runs
// out and replaced on the nodes that are left.
func TestNodeFailureOnHollowNodes(t *testing.T) {
	s := startServer(t, "--node-monitor-grace-period=5s", "--node-monitor-period=500ms", "--default-unreachable-toleration-seconds=2")
	startSim(t, s, 2, "--prefix", "a-", "--lease-duration", "2s")
	killB := startSim(t, s, 1, "--prefix", "b-", "--lease-duration", "2s")
	c := clients(t)[0]
	waitNodesReady(t, s, c, 3)

	s.must(t, c, "create", "deployment", "web", "--image=example.com/web:1", "--replicas=3")
	if out := s.must(t, c, "rollout", "status", "deployment/web", "--timeout=60s"); !strings.Contains(out, "successfully rolled out") {
		t.Fatalf("rollout status: %s", out)
	}
	var onB string
	for _, p := range nlPods(t, s, c) {
		if p.node == "b-0" {
			onB = p.name
		}
	}
	if onB == "" {
		t.Fatalf("no pod on b-0, so its failure tests nothing: %v", nlPods(t, s, c))
	}
	tol := s.must(t, c, "get", "pod", onB, "-o", `jsonpath={.spec.tolerations[?(@.key=="node.kubernetes.io/unreachable")].tolerationSeconds}`)
	if tol != "2" {
		t.Fatalf("unreachable toleration of %s: %q seconds, want the server's default 2", onB, tol)
	}

	killB()
	eventually(t, 60*time.Second, func() error {
		out := s.must(t, c, "get", "node", "b-0", "--no-headers")
		if f := strings.Fields(out); len(f) < 2 || f[1] != "NotReady" {
			return fmt.Errorf("node b-0: %s", out)
		}
		return nil
	})
	if taints := s.must(t, c, "get", "node", "b-0", "-o", `jsonpath={range .spec.taints[*]}{.key}:{.effect} {end}`); !strings.Contains(taints, "node.kubernetes.io/unreachable:NoExecute") ||
		!strings.Contains(taints, "node.kubernetes.io/unreachable:NoSchedule") {
		t.Fatalf("taints of b-0: %s", taints)
	}
	if out := s.must(t, c, "get", "nodes", "a-0", "a-1", "--no-headers"); strings.Count(out, " Ready ") != 2 {
		t.Fatalf("the live nodes: %s", out)
	}

	eventually(t, 60*time.Second, func() error {
		pods := nlPods(t, s, c)
		n := 0
		for _, p := range pods {
			if strings.HasPrefix(p.node, "a-") && p.phase == "Running" {
				n++
			}
		}
		if n != 3 || len(pods) != 3 {
			return fmt.Errorf("pods not being deleted: %v", pods)
		}
		return nil
	})
	if out := s.must(t, c, "get", "events"); !strings.Contains(out, "TaintManagerEviction") || !strings.Contains(out, onB) {
		t.Errorf("no TaintManagerEviction event for %s:\n%s", onB, out)
	}

	// A node that brings no pod CIDR gets one from --cluster-cidr; the
	// hollow nodes keep their own.
	node := `{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "plain"}}`
	if r := s.kubectl(c, node, nil, "create", "-f", "-"); r.err != nil {
		t.Fatalf("create node: %s", r)
	}
	eventually(t, 30*time.Second, func() error {
		cidr := s.must(t, c, "get", "node", "plain", "-o", "jsonpath={.spec.podCIDR}")
		if !strings.HasPrefix(cidr, "10.42.") || !strings.HasSuffix(cidr, ".0/24") {
			return fmt.Errorf("pod CIDR of node plain: %q", cidr)
		}
		return nil
	})
	if cidr := s.must(t, c, "get", "node", "a-0", "-o", "jsonpath={.spec.podCIDR}"); strings.HasPrefix(cidr, "10.42.") {
		t.Errorf("hollow node's pod CIDR replaced: %s", cidr)
	}
}
