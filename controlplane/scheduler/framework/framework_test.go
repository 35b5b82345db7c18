package framework_test

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/navarch/navarch/controlplane/scheduler"
	"github.com/navarch/navarch/controlplane/scheduler/framework"
)

// defaultPlugins is the plugin set the scheduler runs, so that the tests and
// the benchmark measure what production decides with.
func defaultPlugins() framework.Plugins { return scheduler.DefaultPlugins() }

func node(name, zone string) *corev1.Node {
	alloc := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("32"), corev1.ResourceMemory: resource.MustParse("128Gi"),
		corev1.ResourcePods: resource.MustParse("250")}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name,
		Labels: map[string]string{corev1.LabelHostname: name, corev1.LabelTopologyZone: zone}},
		Status: corev1.NodeStatus{Allocatable: alloc, Capacity: alloc}}
}

// replica is pod i of ReplicaSet rs, with the labels and owner a
// Deployment gives it.
func replica(rs, i int, antiAffinity bool) *corev1.Pod {
	yes := true
	app := fmt.Sprintf("app-%d", rs)
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", app, i), Namespace: "default", UID: types.UID(fmt.Sprintf("%s-%d", app, i)),
			Labels:          map[string]string{"app": app, "pod-template-hash": "abc"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: app, UID: types.UID(app), Controller: &yes}}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}}}}},
	}
	if antiAffinity {
		p.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
			TopologyKey: corev1.LabelHostname, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}}}}}
	}
	return p
}

func TestFitsSeesTheChangedNode(t *testing.T) {
	a, b := framework.NewNodeInfo(node("a", "z1"), replica(1, 0, true)), framework.NewNodeInfo(node("b", "z1"), replica(1, 1, true))
	snap := &framework.Snapshot{Nodes: []*framework.NodeInfo{a, b}}
	plugins := defaultPlugins()
	p := replica(1, 2, true)
	if got := plugins.Fits(p, snap, a); got != "node(s) didn't match pod anti-affinity rules" {
		t.Fatalf("Fits on a: %q", got)
	}
	// Without the replica on it (a preemption's question), a copy of a fits,
	// and the snapshot is left as it was.
	victimless := a.Clone()
	victimless.RemovePod(a.Pods[0])
	if got := plugins.Fits(p, snap, victimless); got != "" {
		t.Fatalf("Fits on a without its replica: %q", got)
	}
	if len(a.Pods) != 1 || len(a.WithAffinity) != 1 || a.Owners["app-1"] != 1 {
		t.Fatalf("Clone/RemovePod changed the snapshot's node: %d pods", len(a.Pods))
	}
	if len(victimless.WithAffinity) != 0 || victimless.Owners["app-1"] != 0 || len(victimless.Groups) != 0 {
		t.Fatalf("RemovePod left indexes behind: %+v", victimless)
	}
}

// BenchmarkSchedule is one decision over 100 nodes in 4 zones holding
// 10,000 pods of 100 ReplicaSets (every tenth with required anti-affinity
// on hostname), with the default plugins.
func BenchmarkSchedule(b *testing.B) {
	snap := &framework.Snapshot{}
	for i := 0; i < 100; i++ {
		snap.Nodes = append(snap.Nodes, framework.NewNodeInfo(node(fmt.Sprintf("node-%03d", i), fmt.Sprintf("zone-%d", i%4))))
	}
	for rs := 0; rs < 100; rs++ {
		for i := 0; i < 100; i++ {
			snap.Nodes[(rs+i)%100].AddPod(replica(rs, i, rs%10 == 0))
		}
	}
	plugins := defaultPlugins()
	spread := replica(200, 0, false)
	spread.Spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: corev1.LabelTopologyZone,
		WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "app-200"}}}}
	for _, c := range []struct {
		name string
		pod  *corev1.Pod
	}{
		{"default-spreading", replica(5, 100, false)},
		{"anti-affinity", replica(201, 0, true)},
		{"zone-spread", spread},
	} {
		b.Run(c.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				if _, err := framework.Schedule(c.pod, snap, plugins); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
