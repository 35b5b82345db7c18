package e2e

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

const dsManifest = `apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: node-agent
spec:
  selector:
    matchLabels:
      app: node-agent
  template:
    metadata:
      labels:
        app: node-agent
    spec:
      containers:
      - name: agent
        image: example.com/agent:1
`

// TestDaemonSetOnHollowNodes drives a DaemonSet with kubectl on simulated
// nodes: it covers every node, follows a node that joins, rolls out a new
// image node by node, and kubectl's rollout and get commands read it right.
func TestDaemonSetOnHollowNodes(t *testing.T) {
	s := startServer(t)
	startSim(t, s, 3)
	c := clients(t)[0]
	waitNodesReady(t, s, c, 3)

	if r := s.kubectl(c, dsManifest, nil, "apply", "-f", "-"); r.err != nil {
		t.Fatalf("apply: %s", r)
	}
	// covered waits for one Running pod with image on each of nodes.
	covered := func(image string, nodes ...string) {
		t.Helper()
		sort.Strings(nodes)
		want := strings.Join(nodes, " ")
		eventually(t, 60*time.Second, func() error {
			out := s.must(t, c, "get", "pods", "-l", "app=node-agent", "-o",
				`jsonpath={range .items[*]}{.spec.nodeName} {.status.phase} {.spec.containers[0].image}{"\n"}{end}`)
			var on []string
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				f := strings.Fields(l)
				if len(f) != 3 || f[1] != "Running" || f[2] != image {
					return fmt.Errorf("pods:\n%s", out)
				}
				on = append(on, f[0])
			}
			sort.Strings(on)
			if got := strings.Join(on, " "); got != want {
				return fmt.Errorf("pods on %q, want %q:\n%s", got, want, out)
			}
			return nil
		})
	}
	rollout := func() {
		t.Helper()
		out := s.must(t, c, "rollout", "status", "daemonset/node-agent", "--timeout=60s")
		if !strings.Contains(out, `daemon set "node-agent" successfully rolled out`) {
			t.Fatalf("rollout status: %s", out)
		}
	}
	// columns checks kubectl get ds: NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE NODE SELECTOR AGE.
	columns := func(n int) {
		t.Helper()
		want := fmt.Sprintf("node-agent %d %d %d %d %d <none>", n, n, n, n, n)
		eventually(t, 30*time.Second, func() error {
			out := s.must(t, c, "get", "ds", "node-agent", "--no-headers")
			if got := strings.Join(strings.Fields(out), " "); !strings.HasPrefix(got, want+" ") {
				return fmt.Errorf("get ds: %q, want %q...", got, want)
			}
			return nil
		})
	}
	covered("example.com/agent:1", "sim-0", "sim-1", "sim-2")
	rollout()
	columns(3)
	if hdr := s.must(t, c, "get", "ds"); !strings.Contains(strings.Join(strings.Fields(hdr), " "), "NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE NODE SELECTOR AGE") {
		t.Errorf("get ds header:\n%s", hdr)
	}

	// Each pod names its node by affinity (the scheduler bound it there) and
	// tolerates a not-ready node for good: the admission's default seconds
	// do not apply to daemon pods.
	out := s.must(t, c, "get", "pods", "-l", "app=node-agent", "-o", `jsonpath={range .items[*]}{.spec.nodeName}=`+
		`{.spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchFields[0].values[0]} `+
		`{.spec.tolerations[?(@.key=="node.kubernetes.io/not-ready")].effect}/`+
		`{.spec.tolerations[?(@.key=="node.kubernetes.io/not-ready")].tolerationSeconds}{"\n"}{end}`)
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := append(strings.Fields(l), "", "")
		if node, target, _ := strings.Cut(f[0], "="); node == "" || node != target || f[1] != "NoExecute/" || f[2] != "" {
			t.Errorf("daemon pod's node, affinity and not-ready toleration: %q", l)
		}
	}
	eventually(t, 30*time.Second, func() error {
		if out := s.must(t, c, "describe", "ds", "node-agent"); !strings.Contains(out, "SuccessfulCreate") || !strings.Contains(out, "Created pod: node-agent-") {
			return fmt.Errorf("describe ds:\n%s", out)
		}
		return nil
	})

	// Another set of hollow nodes joins: the DaemonSet follows.
	startSim(t, s, 1, "--prefix", "extra-")
	covered("example.com/agent:1", "extra-0", "sim-0", "sim-1", "sim-2")
	columns(4)

	// A new image rolls out node by node; rollout status waits for it.
	s.must(t, c, "set", "image", "daemonset/node-agent", "agent=example.com/agent:2")
	rollout()
	covered("example.com/agent:2", "extra-0", "sim-0", "sim-1", "sim-2")
	columns(4)

	// History has both templates, and undo goes back to the first.
	hist := s.must(t, c, "rollout", "history", "daemonset/node-agent")
	if !strings.Contains(hist, "\n1 ") || !strings.Contains(hist, "\n2 ") {
		t.Errorf("rollout history:\n%s", hist)
	}
	if out := s.must(t, c, "rollout", "history", "daemonset/node-agent", "--revision=1"); !strings.Contains(out, "example.com/agent:1") {
		t.Errorf("rollout history --revision=1:\n%s", out)
	}
	s.must(t, c, "rollout", "undo", "daemonset/node-agent")
	rollout()
	covered("example.com/agent:1", "extra-0", "sim-0", "sim-1", "sim-2")
	columns(4)
	if out := s.must(t, c, "get", "controllerrevisions", "-l", "app=node-agent", "--no-headers"); strings.Count(strings.TrimSpace(out), "\n") != 1 ||
		!strings.Contains(out, "daemonset.apps/node-agent") {
		t.Errorf("controller revisions after undo:\n%s", out)
	}

	// Deleting the DaemonSet takes its pods and revisions with it.
	s.must(t, c, "delete", "daemonset", "node-agent")
	eventually(t, 30*time.Second, func() error {
		if out := s.must(t, c, "get", "pods,controllerrevisions", "-l", "app=node-agent", "-o", "name"); strings.TrimSpace(out) != "" {
			return fmt.Errorf("left after deleting the daemonset: %s", out)
		}
		return nil
	})
}
