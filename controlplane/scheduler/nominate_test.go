package scheduler

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/navarch/navarch/controlplane/scheduler/framework"
)

// A pod nominated to a node keeps its room there against pods of lower
// priority, not against pods of equal or higher priority, nor against itself.
func TestNominatedPodsKeepTheirRoom(t *testing.T) {
	s := New(nil)
	s.nodes["a"] = framework.NewNodeInfo(node("a", "2", "4Gi", nil))
	prio := func(p *corev1.Pod, v int32) *corev1.Pod { p.Spec.Priority = &v; return p }
	preemptor := prio(pod("preemptor", "2"), 100)
	s.nominate(preemptor, "a", false)

	if _, err := framework.Schedule(prio(pod("low", "1"), 10), s.snapshotFor(prio(pod("low", "1"), 10)), s.plugins); err == nil {
		t.Fatal("a lower-priority pod took the room of a nominated pod")
	}
	higher := prio(pod("higher", "1"), 200)
	if n, err := framework.Schedule(higher, s.snapshotFor(higher), s.plugins); err != nil || n != "a" {
		t.Fatalf("a higher-priority pod is kept out by a nomination: %v", err)
	}
	if n, err := framework.Schedule(preemptor, s.snapshotFor(preemptor), s.plugins); err != nil || n != "a" {
		t.Fatalf("the nominated pod is kept out by its own nomination: %v", err)
	}
	if len(s.nodes["a"].Pods) != 0 {
		t.Fatal("snapshotFor changed the scheduler's node")
	}
}
