package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

const priorityClassYAML = `apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata:
  name: high
value: 1000
description: for pods that may push others out
`

// priorityPodYAML is a pod asking for cpu, of the given class ("" for none).
func priorityPodYAML(name, class, cpu string) string {
	y := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
spec:
  containers:
  - name: c
    image: busybox
    resources:
      requests:
        cpu: "%s"
`, name, cpu)
	if class != "" {
		y += "  priorityClassName: " + class + "\n"
	}
	return y
}

// TestPriorityPreemptionOnHollowNodes drives priority classes and
// preemption with kubectl: classes are listed with the built-in ones, an
// unknown class is refused at admission, and on one 2-cpu hollow node a
// high-priority pod pushes out the low-priority pod filling it and runs.
func TestPriorityPreemptionOnHollowNodes(t *testing.T) {
	s := startServer(t)
	startSim(t, s, 1, "--cpu", "2")
	cs := clients(t)
	c := cs[0]

	if r := s.kubectl(c, priorityClassYAML, nil, "apply", "-f", "-"); r.err != nil || !strings.Contains(r.stdout, "priorityclass.scheduling.k8s.io/high created") {
		t.Fatalf("apply priorityclass: %s", r)
	}
	for _, k := range cs {
		out := s.must(t, k, "get", "pc")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if got := strings.Join(strings.Fields(lines[0]), " "); got != "NAME VALUE GLOBAL-DEFAULT AGE PREEMPTIONPOLICY" {
			t.Fatalf("%s: get pc header %q", k.name, got)
		}
		rows := map[string]string{}
		for _, l := range lines[1:] {
			f := strings.Fields(l)
			if len(f) == 5 {
				rows[f[0]] = f[1] + " " + f[2] + " " + f[4]
			}
		}
		want := map[string]string{
			"high":                    "1000 false PreemptLowerPriority",
			"system-cluster-critical": "2000000000 false PreemptLowerPriority",
			"system-node-critical":    "2000001000 false PreemptLowerPriority",
		}
		for name, w := range want {
			if rows[name] != w {
				t.Fatalf("%s: get pc row %s = %q, want %q\n%s", k.name, name, rows[name], w, out)
			}
		}
	}
	found := false
	for _, l := range strings.Split(s.must(t, c, "api-resources", "--api-group=scheduling.k8s.io"), "\n") {
		if strings.Join(strings.Fields(l), " ") == "priorityclasses pc scheduling.k8s.io/v1 false PriorityClass" {
			found = true
		}
	}
	if !found {
		t.Fatalf("api-resources lists no priorityclasses")
	}
	if r := s.kubectl(c, strings.Replace(priorityClassYAML, "name: high", "name: system-mine", 1), nil, "apply", "-f", "-"); r.err == nil ||
		!strings.Contains(r.stderr, "priority class names with 'system-' prefix are reserved for system use only") {
		t.Fatalf("a system- class of a user: %s", r)
	}

	r := s.kubectl(c, priorityPodYAML("bad", "foo", "100m"), nil, "apply", "-f", "-")
	if r.err == nil || !strings.Contains(r.stderr, `pods "bad" is forbidden: no PriorityClass with name foo was found`) {
		t.Fatalf("pod of an unknown class: %s", r)
	}

	waitNodesReady(t, s, c, 1)
	phase := func(name string) string {
		return s.kubectl(c, "", nil, "get", "pod", name, "-o", "jsonpath={.status.phase}").stdout
	}
	if r := s.kubectl(c, priorityPodYAML("low", "", "2"), nil, "apply", "-f", "-"); r.err != nil {
		t.Fatalf("apply low: %s", r)
	}
	eventually(t, 30*time.Second, func() error {
		if p := phase("low"); p != "Running" {
			return fmt.Errorf("low is %q", p)
		}
		return nil
	})
	if r := s.kubectl(c, priorityPodYAML("high", "high", "2"), nil, "apply", "-f", "-"); r.err != nil {
		t.Fatalf("apply high: %s", r)
	}
	if p := s.must(t, c, "get", "pod", "high", "-o", "jsonpath={.spec.priority} {.spec.preemptionPolicy}"); p != "1000 PreemptLowerPriority" {
		t.Fatalf("high admitted with %q", p)
	}
	eventually(t, 30*time.Second, func() error {
		if r := s.kubectl(c, "", nil, "get", "pod", "low"); r.err == nil || !strings.Contains(r.stderr, "NotFound") {
			return fmt.Errorf("low still there: %s", r)
		}
		if p := phase("high"); p != "Running" {
			return fmt.Errorf("high is %q", p)
		}
		return nil
	})
	if out := s.must(t, c, "get", "events", "--field-selector", "reason=Preempted", "-o", "jsonpath={.items[*].involvedObject.name}"); out != "low" {
		t.Fatalf("Preempted events for %q, want low", out)
	}
}
