package scheduler

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/navarch/navarch/controlplane/scheduler/framework"
)

func node(name, cpu, mem string, labels map[string]string, taints ...corev1.Taint) *corev1.Node {
	alloc := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem), corev1.ResourcePods: resource.MustParse("110")}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec: corev1.NodeSpec{Taints: taints}, Status: corev1.NodeStatus{Allocatable: alloc, Capacity: alloc}}
}

func pod(name, cpu string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID(name)},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}}}
	if cpu != "" {
		p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}
	}
	return p
}

func TestScheduleReasonsInUpstreamWords(t *testing.T) {
	snap := &framework.Snapshot{Nodes: []*framework.NodeInfo{
		framework.NewNodeInfo(node("a", "1", "4Gi", map[string]string{"disk": "ssd"}), pod("big", "900m")),
		framework.NewNodeInfo(node("b", "8", "4Gi", map[string]string{"disk": "hdd"})),
		framework.NewNodeInfo(node("c", "8", "4Gi", nil)),
	}}
	p := pod("p", "500m")
	p.Spec.NodeSelector = map[string]string{"disk": "ssd"}
	_, err := framework.Schedule(p, snap, DefaultPlugins())
	want := "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's node affinity/selector."
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
}

func TestSchedulePlacement(t *testing.T) {
	busy := framework.NewNodeInfo(node("busy", "4", "8Gi", nil), pod("x", "3"))
	idle := framework.NewNodeInfo(node("idle", "4", "8Gi", nil))
	tainted := framework.NewNodeInfo(node("tainted", "64", "256Gi", nil, corev1.Taint{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule}))
	cordoned := framework.NewNodeInfo(node("cordoned", "64", "256Gi", nil))
	cordoned.Node.Spec.Unschedulable = true
	snap := &framework.Snapshot{Nodes: []*framework.NodeInfo{busy, idle, tainted, cordoned}}

	tolerant := pod("tolerant", "100m")
	tolerant.Spec.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "gpu", Effect: corev1.TaintEffectNoSchedule}}
	named := pod("named", "")
	named.Spec.NodeName = "busy"
	hostPort := pod("hp", "")
	hostPort.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: 8080}}
	busy.AddPod(func() *corev1.Pod {
		p := pod("holder", "")
		p.Spec.Containers[0].Ports = hostPort.Spec.Containers[0].Ports
		return p
	}())

	cases := []struct {
		pod  *corev1.Pod
		want string
	}{
		{pod("plain", "100m"), "idle"}, // least allocated beats busy; taint and cordon rule the others out
		{tolerant, "tainted"},          // the big tolerated node has the most room
		{named, "busy"},
		{hostPort, "idle"}, // busy's host port 8080 is taken
	}
	for _, c := range cases {
		got, err := framework.Schedule(c.pod, snap, DefaultPlugins())
		if err != nil || got != c.want {
			t.Errorf("%s: got %q %v, want %q", c.pod.Name, got, err, c.want)
		}
	}
	tooBig := pod("huge", "100")
	if _, err := framework.Schedule(tooBig, snap, DefaultPlugins()); err == nil ||
		err.Error() != "0/4 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) were unschedulable, 2 Insufficient cpu." {
		t.Errorf("huge pod: %v", err)
	}
}
