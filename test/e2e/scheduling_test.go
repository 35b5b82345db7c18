package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

const schedAntiAffinityDeployment = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: lonely
spec:
  replicas: 4
  selector:
    matchLabels: {app: lonely}
  template:
    metadata:
      labels: {app: lonely}
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - topologyKey: kubernetes.io/hostname
            labelSelector:
              matchLabels: {app: lonely}
      containers:
      - name: c
        image: example.com/lonely:1
`

// TestSchedulingAntiAffinityPending: four replicas that must not share a
// node on three hollow nodes: three run, one per node, and kubectl
// describe of the fourth says why it is Pending.
func TestSchedulingAntiAffinityPending(t *testing.T) {
	s := startServer(t)
	startSim(t, s, 3)
	c := clients(t)[0]
	waitNodesReady(t, s, c, 3)
	if r := s.kubectl(c, schedAntiAffinityDeployment, nil, "apply", "-f", "-"); r.err != nil {
		t.Fatalf("apply: %s", r)
	}
	var pending string
	eventually(t, 60*time.Second, func() error {
		out := s.must(t, c, "get", "pods", "-l", "app=lonely", "-o",
			`jsonpath={range .items[*]}{.metadata.name} {.status.phase} {.spec.nodeName}{"\n"}{end}`)
		nodes, running := map[string]bool{}, 0
		pending = ""
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(l)
			switch {
			case len(f) == 3 && f[1] == "Running":
				running++
				nodes[f[2]] = true
			case len(f) == 2 && f[1] == "Pending":
				pending = f[0]
			}
		}
		if running != 3 || len(nodes) != 3 || pending == "" {
			return fmt.Errorf("want 3 running on 3 nodes and 1 pending:\n%s", out)
		}
		return nil
	})
	eventually(t, 30*time.Second, func() error {
		out := s.must(t, c, "describe", "pod", pending)
		if !strings.Contains(out, "FailedScheduling") || !strings.Contains(out, "3 node(s) didn't match pod anti-affinity rules") {
			return fmt.Errorf("describe pod %s:\n%s", pending, out)
		}
		return nil
	})
}
