package podgc

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	clocktesting "k8s.io/utils/clock/testing"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func mkPod(name, node string, phase corev1.PodPhase, age time.Duration) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", CreationTimestamp: metav1.NewTime(t0.Add(-age))},
		Spec: corev1.PodSpec{NodeName: node}, Status: corev1.PodStatus{Phase: phase}}
}

func names(vs []victim) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.pod.Name)
	}
	return out
}

func TestTerminatedOverThreshold(t *testing.T) {
	pods := []*corev1.Pod{
		mkPod("new-done", "n", corev1.PodSucceeded, time.Minute),
		mkPod("old-failed", "n", corev1.PodFailed, time.Hour),
		mkPod("running", "n", corev1.PodRunning, 2*time.Hour),
		mkPod("mid-done", "n", corev1.PodSucceeded, 30*time.Minute),
	}
	if got := fmt.Sprint(names(terminatedOverThreshold(pods, 1))); got != "[old-failed mid-done]" {
		t.Errorf("threshold 1: %s", got)
	}
	if got := terminatedOverThreshold(pods, 3); len(got) != 0 {
		t.Errorf("threshold 3: %v", names(got))
	}
	if got := terminatedOverThreshold(pods, 0); len(got) != 0 {
		t.Errorf("threshold 0 (disabled): %v", names(got))
	}
}

func TestUnscheduledTerminatingAndOutOfService(t *testing.T) {
	now := metav1.NewTime(t0)
	gone := mkPod("deleting-unscheduled", "", corev1.PodPending, 0)
	gone.DeletionTimestamp = &now
	bound := mkPod("deleting-bound", "down", corev1.PodRunning, 0)
	bound.DeletionTimestamp = &now
	pods := []*corev1.Pod{gone, bound, mkPod("pending", "", corev1.PodPending, 0)}
	if got := fmt.Sprint(names(unscheduledTerminating(pods))); got != "[deleting-unscheduled]" {
		t.Errorf("unscheduled terminating: %s", got)
	}
	down := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "down"},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionUnknown}}}}
	nodes := map[string]*corev1.Node{"down": down}
	if got := outOfService(pods, nodes); len(got) != 0 {
		t.Errorf("not marked out of service, yet: %v", names(got))
	}
	down.Spec.Taints = []corev1.Taint{{Key: corev1.TaintNodeOutOfService, Value: "nodeshutdown", Effect: corev1.TaintEffectNoExecute}}
	if got := fmt.Sprint(names(outOfService(pods, nodes))); got != "[deleting-bound]" {
		t.Errorf("out of service: %s", got)
	}
}

func TestMissingNodesQuarantine(t *testing.T) {
	pods := []*corev1.Pod{mkPod("a", "gone", corev1.PodRunning, 0), mkPod("b", "here", corev1.PodRunning, 0), mkPod("c", "", corev1.PodPending, 0)}
	nodes := map[string]*corev1.Node{"here": {}}
	since := map[string]time.Time{}
	if got := missingNodes(pods, nodes, since, t0, 40*time.Second); len(got) != 0 {
		t.Fatalf("first sight: %v", got)
	}
	if got := missingNodes(pods, nodes, since, t0.Add(39*time.Second), 40*time.Second); len(got) != 0 {
		t.Fatalf("within the quarantine: %v", got)
	}
	if got := fmt.Sprint(missingNodes(pods, nodes, since, t0.Add(40*time.Second), 40*time.Second)); got != "[gone]" {
		t.Fatalf("after the quarantine: %s", got)
	}
	// The node comes back: the quarantine starts over if it goes again.
	nodes["gone"] = &corev1.Node{}
	missingNodes(pods, nodes, since, t0.Add(50*time.Second), 40*time.Second)
	delete(nodes, "gone")
	if got := missingNodes(pods, nodes, since, t0.Add(60*time.Second), 40*time.Second); len(got) != 0 {
		t.Fatalf("quarantine not restarted: %v", got)
	}
}

// TestCollectOrphans: pods of a node that is gone are force-deleted after
// the quarantine, marked Failed first; pods of a node that the cache misses
// but the API has stay.
func TestCollectOrphans(t *testing.T) {
	ctx := context.Background()
	orphan := mkPod("orphan", "gone", corev1.PodRunning, 0)
	lagging := mkPod("lagging", "new", corev1.PodRunning, 0)
	client := fake.NewSimpleClientset(orphan, lagging, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "new"}})
	factory := informers.NewSharedInformerFactory(client, 0)
	clk := clocktesting.NewFakeClock(t0)
	c := New(client, factory, Config{TerminatedThreshold: 10, Quarantine: 40 * time.Second, Clock: clk})
	for _, p := range []*corev1.Pod{orphan, lagging} {
		factory.Core().V1().Pods().Informer().GetIndexer().Add(p)
	}
	exists := func(name string) bool {
		_, err := client.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		return err == nil
	}
	c.collect(ctx)
	clk.Step(39 * time.Second)
	c.collect(ctx)
	if !exists("orphan") {
		t.Fatal("orphan deleted within the quarantine")
	}
	var deleted []string
	for _, a := range client.Actions() {
		if a.GetVerb() == "delete" {
			deleted = append(deleted, fmt.Sprint(a))
		}
	}
	if len(deleted) != 0 {
		t.Fatalf("deletions within the quarantine: %v", deleted)
	}
	clk.Step(time.Second)
	c.collect(ctx)
	if exists("orphan") {
		t.Fatal("orphan not deleted after the quarantine")
	}
	if !exists("lagging") {
		t.Fatal("pod of a node the API has was deleted")
	}
	var sawFailed, sawForce bool
	for _, a := range client.Actions() {
		if a.GetVerb() == "update" && a.GetSubresource() == "status" {
			if p, ok := a.(k8stesting.UpdateAction).GetObject().(*corev1.Pod); ok && p.Name == "orphan" && p.Status.Phase == corev1.PodFailed {
				sawFailed = true
			}
		}
		if d, ok := a.(k8stesting.DeleteAction); ok && d.GetName() == "orphan" {
			opts := d.GetDeleteOptions()
			sawForce = opts.GracePeriodSeconds != nil && *opts.GracePeriodSeconds == 0
		}
	}
	if !sawFailed || !sawForce {
		t.Errorf("orphan marked Failed: %v, force-deleted: %v", sawFailed, sawForce)
	}
}
