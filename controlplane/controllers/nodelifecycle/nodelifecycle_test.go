package nodelifecycle

import (
	"context"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"
)

var t0 = time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)

func readyNode(name string, status corev1.ConditionStatus) *corev1.Node {
	hb := metav1.NewTime(t0)
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: hb},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
			{Type: corev1.NodeReady, Status: status, Reason: "KubeletReady", LastHeartbeatTime: hb, LastTransitionTime: hb},
			{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, LastHeartbeatTime: hb, LastTransitionTime: hb},
			{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, LastHeartbeatTime: hb, LastTransitionTime: hb},
		}}}
}

func TestStaleConditions(t *testing.T) {
	n := readyNode("n", corev1.ConditionTrue)
	if _, changed := staleConditions(n, t0, t0.Add(50*time.Second), 50*time.Second); changed {
		t.Fatal("changed within the grace period")
	}
	conds, changed := staleConditions(n, t0, t0.Add(51*time.Second), 50*time.Second)
	if !changed {
		t.Fatal("not changed after the grace period")
	}
	if n.Status.Conditions[0].Status != corev1.ConditionTrue {
		t.Fatal("the node's own conditions were changed in place")
	}
	for _, ct := range watchedConditions {
		c := condition(conds, ct)
		if c == nil || c.Status != corev1.ConditionUnknown {
			t.Fatalf("%s: %+v", ct, c)
		}
		if !c.LastTransitionTime.Time.Equal(t0.Add(51 * time.Second)) {
			t.Errorf("%s transition time %v", ct, c.LastTransitionTime)
		}
	}
	if r := condition(conds, corev1.NodeReady); r.Reason != "NodeStatusUnknown" || r.Message != "Kubelet stopped posting node status." {
		t.Errorf("ready: %+v", r)
	}
	if p := condition(conds, corev1.NodePIDPressure); p.Reason != "NodeStatusNeverUpdated" || !p.LastHeartbeatTime.Equal(&n.CreationTimestamp) {
		t.Errorf("missing PIDPressure added as %+v", p)
	}
	n.Status.Conditions = conds
	if _, changed := staleConditions(n, t0, t0.Add(time.Hour), 50*time.Second); changed {
		t.Error("an Unknown node changed again")
	}
}

func TestTaints(t *testing.T) {
	keys := func(ts []corev1.Taint) map[string]bool {
		m := map[string]bool{}
		for _, x := range ts {
			m[x.Key+":"+string(x.Effect)] = true
		}
		return m
	}
	for _, tc := range []struct {
		status corev1.ConditionStatus
		want   []string
	}{
		{corev1.ConditionTrue, nil},
		{corev1.ConditionFalse, []string{"node.kubernetes.io/not-ready:NoExecute", "node.kubernetes.io/not-ready:NoSchedule"}},
		{corev1.ConditionUnknown, []string{"node.kubernetes.io/unreachable:NoExecute", "node.kubernetes.io/unreachable:NoSchedule"}},
	} {
		got := keys(wantTaints(readyNode("n", tc.status)))
		if len(got) != len(tc.want) {
			t.Errorf("%s: taints %v, want %v", tc.status, got, tc.want)
		}
		for _, w := range tc.want {
			if !got[w] {
				t.Errorf("%s: missing %s in %v", tc.status, w, got)
			}
		}
	}
	n := readyNode("n", corev1.ConditionTrue)
	n.Spec.Unschedulable = true
	n.Status.Conditions[1].Status = corev1.ConditionTrue
	got := keys(wantTaints(n))
	if !got["node.kubernetes.io/unschedulable:NoSchedule"] || !got["node.kubernetes.io/memory-pressure:NoSchedule"] || len(got) != 2 {
		t.Errorf("cordoned node under memory pressure: %v", got)
	}

	user := corev1.Taint{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoExecute}
	now := t0.Add(time.Minute)
	out, changed := reconcileTaints([]corev1.Taint{user}, wantTaints(readyNode("n", corev1.ConditionUnknown)), now)
	if !changed || len(out) != 3 || out[0] != user {
		t.Fatalf("adding: %v %+v", changed, out)
	}
	for _, x := range out[1:] {
		if x.Effect == corev1.TaintEffectNoExecute && (x.TimeAdded == nil || !x.TimeAdded.Time.Equal(now)) {
			t.Errorf("NoExecute taint without timeAdded: %+v", x)
		}
	}
	if _, changed := reconcileTaints(out, wantTaints(readyNode("n", corev1.ConditionUnknown)), now.Add(time.Minute)); changed {
		t.Error("taints changed again for the same conditions")
	}
	back, changed := reconcileTaints(out, wantTaints(readyNode("n", corev1.ConditionTrue)), now)
	if !changed || len(back) != 1 || back[0] != user {
		t.Errorf("node back: %v %+v", changed, back)
	}
}

// TestMonitor runs passes against a fake API with a fake clock: a lease
// renewal keeps a node alive; silence past the grace period makes it
// Unknown, tainted, with its pods not ready; its return removes the taints.
func TestMonitor(t *testing.T) {
	ctx := context.Background()
	node := readyNode("n1", corev1.ConditionTrue)
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "n1", Namespace: corev1.NamespaceNodeLease},
		Spec: coordinationv1.LeaseSpec{RenewTime: &metav1.MicroTime{Time: t0}}}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default"}, Spec: corev1.PodSpec{NodeName: "n1"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
	client := fake.NewSimpleClientset(node, lease, pod)
	factory := informers.NewSharedInformerFactory(client, 0)
	clk := clocktesting.NewFakeClock(t0)
	c := New(client, factory, Config{GracePeriod: 50 * time.Second, MonitorPeriod: 5 * time.Second, Clock: clk})
	// Seed the caches by hand: the passes read only them.
	nodes, leases := factory.Core().V1().Nodes().Informer().GetIndexer(), factory.Coordination().V1().Leases().Informer().GetIndexer()
	nodes.Add(node)
	leases.Add(lease)
	factory.Core().V1().Pods().Informer().GetIndexer().Add(pod)
	getNode := func() *corev1.Node {
		n, err := client.CoreV1().Nodes().Get(ctx, "n1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	c.monitor(ctx)
	clk.Step(40 * time.Second)
	renewed := lease.DeepCopy()
	renewed.Spec.RenewTime = &metav1.MicroTime{Time: clk.Now()}
	leases.Update(renewed)
	c.monitor(ctx) // the renewal is seen at t0+40s
	clk.Step(50 * time.Second)
	c.monitor(ctx)
	if s := readyStatus(getNode()); s != corev1.ConditionTrue {
		t.Fatalf("Ready=%s at the end of the grace period", s)
	}
	clk.Step(time.Second)
	c.monitor(ctx)
	n := getNode()
	if s := readyStatus(n); s != corev1.ConditionUnknown {
		t.Fatalf("Ready=%s after the grace period", s)
	}
	if !hasTaint(n.Spec.Taints, corev1.TaintNodeUnreachable, corev1.TaintEffectNoExecute) || !hasTaint(n.Spec.Taints, corev1.TaintNodeUnreachable, corev1.TaintEffectNoSchedule) {
		t.Fatalf("taints %+v", n.Spec.Taints)
	}
	p, _ := client.CoreV1().Pods("default").Get(ctx, "p", metav1.GetOptions{})
	if p.Status.Conditions[0].Status != corev1.ConditionFalse {
		t.Errorf("pod on the unreachable node: %+v", p.Status.Conditions)
	}

	// The node's agent comes back and posts Ready=True.
	back := n.DeepCopy()
	back.Status = readyNode("n1", corev1.ConditionTrue).Status
	back.Status.Conditions[0].LastHeartbeatTime = metav1.NewTime(clk.Now())
	client.CoreV1().Nodes().UpdateStatus(ctx, back, metav1.UpdateOptions{})
	nodes.Update(back)
	c.monitor(ctx)
	if n := getNode(); len(n.Spec.Taints) != 0 || readyStatus(n) != corev1.ConditionTrue {
		t.Errorf("node back: Ready=%s taints %+v", readyStatus(n), n.Spec.Taints)
	}
}

// TestNewNodeGrace: a node that never reports is Unknown one grace period
// after its creation.
func TestNewNodeGrace(t *testing.T) {
	ctx := context.Background()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "quiet", CreationTimestamp: metav1.NewTime(t0)}}
	client := fake.NewSimpleClientset(node)
	factory := informers.NewSharedInformerFactory(client, 0)
	clk := clocktesting.NewFakeClock(t0.Add(10 * time.Second))
	c := New(client, factory, Config{GracePeriod: 50 * time.Second, Clock: clk})
	factory.Core().V1().Nodes().Informer().GetIndexer().Add(node)
	c.monitor(ctx)
	clk.Step(39 * time.Second)
	c.monitor(ctx)
	if n, _ := client.CoreV1().Nodes().Get(ctx, "quiet", metav1.GetOptions{}); len(n.Status.Conditions) != 0 {
		t.Fatalf("conditions within the grace period: %+v", n.Status.Conditions)
	}
	clk.Step(2 * time.Second)
	c.monitor(ctx)
	n, _ := client.CoreV1().Nodes().Get(ctx, "quiet", metav1.GetOptions{})
	if r := condition(n.Status.Conditions, corev1.NodeReady); r == nil || r.Status != corev1.ConditionUnknown || r.Reason != "NodeStatusNeverUpdated" {
		t.Fatalf("ready: %+v", r)
	}
}
