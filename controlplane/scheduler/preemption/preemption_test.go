package preemption

import (
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/navarch/navarch/controlplane/scheduler/framework"
	"github.com/navarch/navarch/controlplane/scheduler/plugins/nodeaffinity"
	"github.com/navarch/navarch/controlplane/scheduler/plugins/noderesources"
	"github.com/navarch/navarch/controlplane/scheduler/plugins/tainttoleration"
)

var plugins = framework.Plugins{Filters: []framework.FilterPlugin{tainttoleration.Plugin{}, nodeaffinity.Plugin{}, noderesources.Fit{}}}

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func node(name, cpu string, taints ...corev1.Taint) *corev1.Node {
	alloc := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse("8Gi"), corev1.ResourcePods: resource.MustParse("110")}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.NodeSpec{Taints: taints},
		Status: corev1.NodeStatus{Allocatable: alloc, Capacity: alloc}}
}

// pod makes a pod asking for cpu at priority prio, started minute minutes
// after t0.
func pod(name, cpu string, prio int32, minute int) *corev1.Pod {
	start := metav1.NewTime(t0.Add(time.Duration(minute) * time.Minute))
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID(name), CreationTimestamp: start},
		Spec: corev1.PodSpec{Priority: &prio, Containers: []corev1.Container{{Name: "c",
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}}}}},
		Status: corev1.PodStatus{StartTime: &start}}
}

func names(pods []*corev1.Pod) []string {
	var out []string
	for _, p := range pods {
		out = append(out, p.Name)
	}
	return out
}

func TestSelect(t *testing.T) {
	taint := corev1.Taint{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule}
	cases := []struct {
		name        string
		nodes       []*framework.NodeInfo
		pod         *corev1.Pod
		wantNode    string // "" when no candidate
		wantVictims []string
		wantWhy     string // with no candidate
	}{
		{
			name:     "the low pod filling the node goes",
			nodes:    []*framework.NodeInfo{framework.NewNodeInfo(node("a", "2"), pod("low", "2", 0, 0))},
			pod:      pod("high", "1", 100, 5),
			wantNode: "a", wantVictims: []string{"low"},
		},
		{
			name:    "pods of equal priority are never victims",
			nodes:   []*framework.NodeInfo{framework.NewNodeInfo(node("a", "2"), pod("peer", "2", 100, 0))},
			pod:     pod("high", "1", 100, 5),
			wantWhy: "0/1 nodes are available: 1 No preemption victims found for incoming pod.",
		},
		{
			name: "no removal helps a pod bigger than the node, or one that does not tolerate it",
			nodes: []*framework.NodeInfo{
				framework.NewNodeInfo(node("a", "2"), pod("low", "1", 0, 0)),
				framework.NewNodeInfo(node("b", "8", taint), pod("low2", "8", 0, 0)),
				framework.NewNodeInfo(node("c", "8"), pod("peer", "8", 100, 0)),
			},
			pod:     pod("huge", "3", 100, 5),
			wantWhy: "0/3 nodes are available: 1 No preemption victims found for incoming pod, 2 Preemption is not helpful for scheduling.",
		},
		{
			name:     "only as many victims as needed, the least important first",
			nodes:    []*framework.NodeInfo{framework.NewNodeInfo(node("a", "3"), pod("p1", "1", 1, 0), pod("p2", "1", 2, 0), pod("p3", "1", 3, 0))},
			pod:      pod("high", "1", 100, 5),
			wantNode: "a", wantVictims: []string{"p1"},
		},
		{
			name: "the node whose most important victim is least important",
			nodes: []*framework.NodeInfo{
				framework.NewNodeInfo(node("a", "2"), pod("a5", "2", 5, 0)),
				framework.NewNodeInfo(node("b", "2"), pod("b1", "2", 1, 0)),
			},
			pod:      pod("high", "2", 100, 5),
			wantNode: "b", wantVictims: []string{"b1"},
		},
		{
			name: "then the lowest sum of priorities",
			nodes: []*framework.NodeInfo{
				framework.NewNodeInfo(node("a", "2"), pod("a5", "1", 5, 0), pod("a0", "1", 0, 0)),
				framework.NewNodeInfo(node("b", "2"), pod("b5", "2", 5, 0)),
			},
			pod:      pod("high", "2", 100, 5),
			wantNode: "b", wantVictims: []string{"b5"},
		},
		{
			name: "then the latest started victims",
			nodes: []*framework.NodeInfo{
				framework.NewNodeInfo(node("a", "2"), pod("old", "2", 1, 0)),
				framework.NewNodeInfo(node("b", "2"), pod("young", "2", 1, 3)),
			},
			pod:      pod("high", "2", 100, 5),
			wantNode: "b", wantVictims: []string{"young"},
		},
		{
			name: "a node the pod cannot use at all is no candidate",
			nodes: []*framework.NodeInfo{
				framework.NewNodeInfo(node("a", "2", taint), pod("a0", "2", 0, 0)),
				framework.NewNodeInfo(node("b", "2"), pod("b7", "2", 7, 0)),
			},
			pod:      pod("high", "2", 100, 5),
			wantNode: "b", wantVictims: []string{"b7"},
		},
		{
			name: "victims are listed most important first",
			nodes: []*framework.NodeInfo{framework.NewNodeInfo(node("a", "2"),
				pod("v1", "1", 1, 0), pod("v2", "1", 2, 0))},
			pod:      pod("high", "2", 100, 5),
			wantNode: "a", wantVictims: []string{"v2", "v1"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			snap := &framework.Snapshot{Nodes: c.nodes}
			before := make([]int, len(c.nodes))
			for i, n := range c.nodes {
				before[i] = len(n.Pods)
			}
			got, why := Select(c.pod, snap, plugins)
			for i, n := range c.nodes {
				if len(n.Pods) != before[i] {
					t.Fatalf("Select changed the snapshot's node %s", n.Node.Name)
				}
			}
			if c.wantNode == "" {
				if got != nil {
					t.Fatalf("want no candidate, got %s %v", got.Node, names(got.Victims))
				}
				if why == nil || why.Error() != c.wantWhy {
					t.Fatalf("why %v, want %s", why, c.wantWhy)
				}
				return
			}
			if got == nil || got.Node != c.wantNode || !reflect.DeepEqual(names(got.Victims), c.wantVictims) {
				if got == nil {
					t.Fatalf("want %s %v, got no candidate", c.wantNode, c.wantVictims)
				}
				t.Fatalf("want %s %v, got %s %v", c.wantNode, c.wantVictims, got.Node, names(got.Victims))
			}
		})
	}
}

func TestEligible(t *testing.T) {
	never := corev1.PreemptNever
	terminating := pod("low", "2", 0, 0)
	now := metav1.Now()
	terminating.DeletionTimestamp = &now
	snap := &framework.Snapshot{Nodes: []*framework.NodeInfo{
		framework.NewNodeInfo(node("a", "2"), terminating),
		framework.NewNodeInfo(node("b", "2"), pod("other", "2", 0, 0)),
	}}
	cases := []struct {
		name      string
		policy    *corev1.PreemptionPolicy
		nominated string
		want      bool
		why       string
	}{
		{name: "default policy", want: true},
		{name: "Never", policy: &never, why: "not eligible due to preemptionPolicy=Never."},
		{name: "waiting for its victims", nominated: "a", why: "not eligible due to a terminating pod on the nominated node."},
		{name: "nominated node without terminating pods", nominated: "b", want: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := pod("high", "1", 100, 5)
			p.Spec.PreemptionPolicy = c.policy
			p.Status.NominatedNodeName = c.nominated
			ok, why := Eligible(p, snap)
			if ok != c.want || why != c.why {
				t.Fatalf("got %v %q, want %v %q", ok, why, c.want, c.why)
			}
		})
	}
}
