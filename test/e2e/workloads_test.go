package e2e

import (
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// startSim runs `navarch sim --nodes N` against s, with extra flags (a
// --prefix of its own, --lease-duration, --cpu), until the test ends; kill
// ends it at once with SIGKILL, as a node that just dies.
func startSim(t *testing.T, s *server, nodes int, flags ...string) (kill func()) {
	t.Helper()
	cmd := exec.Command(navarchBin, append([]string{"sim", "--nodes", fmt.Sprint(nodes), "--kubeconfig", s.kubeconfig}, flags...)...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	kill = func() {
		once.Do(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
	t.Cleanup(kill)
	return kill
}

// waitNodesReady waits until kubectl lists n Ready nodes.
func waitNodesReady(t *testing.T, s *server, c client, n int) {
	t.Helper()
	eventually(t, 30*time.Second, func() error {
		out := s.kubectl(c, "", nil, "get", "nodes", "--no-headers")
		if strings.Count(out.stdout, " Ready ") != n {
			return fmt.Errorf("want %d Ready nodes: %s", n, out)
		}
		return nil
	})
}

// TestDeploymentLifecycleOnHollowNodes drives a Deployment with kubectl on
// simulated nodes: rollout, update, history, undo, scale; and a pod that
// fits nowhere says why.
func TestDeploymentLifecycleOnHollowNodes(t *testing.T) {
	s := startServer(t)
	startSim(t, s, 3)
	c := clients(t)[0]
	waitNodesReady(t, s, c, 3)

	s.must(t, c, "create", "deployment", "web", "--image=example.com/web:1", "--replicas=3")
	rollout := func() {
		t.Helper()
		out := s.must(t, c, "rollout", "status", "deployment/web", "--timeout=60s")
		if !strings.Contains(out, `deployment "web" successfully rolled out`) {
			t.Fatalf("rollout status: %s", out)
		}
	}
	rollout()
	running := func(want int, image string) {
		t.Helper()
		eventually(t, 30*time.Second, func() error {
			out := s.must(t, c, "get", "pods", "-l", "app=web", "-o", "jsonpath={range .items[*]}{.status.phase} {.spec.containers[0].image} {.status.podIP}{\"\\n\"}{end}")
			n := 0
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				f := strings.Fields(l)
				if len(f) == 3 && f[0] == "Running" && f[1] == image && strings.HasPrefix(f[2], "10.") {
					n++
				}
			}
			if n != want || strings.Count(strings.TrimSpace(out), "\n")+1 != want {
				return fmt.Errorf("pods:\n%s", out)
			}
			return nil
		})
	}
	running(3, "example.com/web:1")

	s.must(t, c, "set", "image", "deployment/web", "web=example.com/web:2")
	rollout()
	running(3, "example.com/web:2")
	out := s.must(t, c, "rollout", "history", "deployment/web")
	if !strings.Contains(out, "1 ") || !strings.Contains(out, "2 ") {
		t.Errorf("rollout history: %s", out)
	}
	s.must(t, c, "rollout", "undo", "deployment/web")
	rollout()
	running(3, "example.com/web:1")
	if rev := s.must(t, c, "get", "deployment", "web", "-o", `jsonpath={.metadata.annotations.deployment\.kubernetes\.io/revision}`); rev != "3" {
		t.Errorf("revision after undo: %q, want 3", rev)
	}

	s.must(t, c, "scale", "deployment/web", "--replicas=5")
	rollout()
	running(5, "example.com/web:1")
	s.must(t, c, "scale", "deployment/web", "--replicas=2")
	rollout()
	running(2, "example.com/web:1")

	// Deleting the deployment takes its replica sets and pods with it.
	s.must(t, c, "delete", "deployment", "web")
	eventually(t, 30*time.Second, func() error {
		if out := s.must(t, c, "get", "replicasets,pods", "-l", "app=web", "-o", "name"); strings.TrimSpace(out) != "" {
			return fmt.Errorf("left after deleting the deployment: %s", out)
		}
		return nil
	})

	// A pod that fits nowhere stays Pending and says why.
	s.must(t, c, "run", "picky", "--image=busybox", `--overrides={"spec":{"nodeSelector":{"disk":"ssd"}}}`)
	eventually(t, 30*time.Second, func() error {
		out := s.must(t, c, "describe", "pod", "picky")
		if !strings.Contains(out, "FailedScheduling") || !strings.Contains(out, "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector.") {
			return fmt.Errorf("describe pod:\n%s", out)
		}
		return nil
	})
	if phase := s.must(t, c, "get", "pod", "picky", "-o", "jsonpath={.status.phase}"); phase != "Pending" {
		t.Errorf("picky pod phase %q", phase)
	}
}
