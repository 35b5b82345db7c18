package daemonset

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func testNodes(n int) []*corev1.Node {
	var out []*corev1.Node
	for i := 0; i < n; i++ {
		out = append(out, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("n%d", i)}})
	}
	return out
}

// pod is a daemon pod on node of revision hash; ready says whether it is
// ready (for an hour, so available whatever minReadySeconds).
func pod(node, hash string, ready bool) *corev1.Pod {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: node + "-" + hash, Labels: map[string]string{HashLabel: hash}},
		Spec: corev1.PodSpec{NodeName: node},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status,
			LastTransitionTime: metav1.NewTime(time.Now().Add(-time.Hour))}}}}
}

func TestRollingUpdateBudgets(t *testing.T) {
	strategy := func(unavailable, surge string) *appsv1.DaemonSet {
		return &appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
			Type: appsv1.RollingUpdateDaemonSetStrategyType,
			RollingUpdate: &appsv1.RollingUpdateDaemonSet{
				MaxUnavailable: ptrIntStr(unavailable), MaxSurge: ptrIntStr(surge)}}}}
	}
	allOld := func(n int) map[string][]*corev1.Pod {
		m := map[string][]*corev1.Pod{}
		for i := 0; i < n; i++ {
			node := fmt.Sprintf("n%d", i)
			m[node] = []*corev1.Pod{pod(node, "old", true)}
		}
		return m
	}
	for _, tc := range []struct {
		name            string
		ds              *appsv1.DaemonSet
		pods            map[string][]*corev1.Pod
		create, deletes string
		nodes           int
	}{
		{name: "one at a time", ds: strategy("1", "0"), nodes: 4, pods: allOld(4), deletes: "n0-old"},
		{name: "percent rounds up", ds: strategy("30%", "0"), nodes: 4, pods: allOld(4), deletes: "n0-old,n1-old"},
		{name: "both zero is one", ds: strategy("0", "0"), nodes: 4, pods: allOld(4), deletes: "n0-old"},
		{name: "an updating node uses the budget", ds: strategy("1", "0"), nodes: 3,
			pods: map[string][]*corev1.Pod{"n0": {pod("n0", "new", false)}, "n1": {pod("n1", "old", true)}, "n2": {pod("n2", "old", true)}}},
		{name: "a node without a pod uses the budget", ds: strategy("1", "0"), nodes: 3,
			pods: map[string][]*corev1.Pod{"n1": {pod("n1", "old", true)}, "n2": {pod("n2", "old", true)}}},
		{name: "unavailable old pods go at once", ds: strategy("1", "0"), nodes: 3,
			pods:    map[string][]*corev1.Pod{"n0": {pod("n0", "old", false)}, "n1": {pod("n1", "old", false)}, "n2": {pod("n2", "old", true)}},
			deletes: "n0-old,n1-old"},
		{name: "surge makes new pods first", ds: strategy("0", "1"), nodes: 3, pods: allOld(3), create: "n0"},
		{name: "surge removes the old pod once the new one is available", ds: strategy("0", "1"), nodes: 3,
			pods:    map[string][]*corev1.Pod{"n0": {pod("n0", "old", true), pod("n0", "new", true)}, "n1": {pod("n1", "old", true)}, "n2": {pod("n2", "old", true)}},
			deletes: "n0-old", create: "n1"},
		{name: "surge waits for an unavailable new pod", ds: strategy("0", "1"), nodes: 3,
			pods: map[string][]*corev1.Pod{"n0": {pod("n0", "old", true), pod("n0", "new", false)}, "n1": {pod("n1", "old", true)}, "n2": {pod("n2", "old", true)}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			create, del := rollingUpdate(tc.ds, testNodes(tc.nodes), tc.pods, "new")
			var names []string
			for _, p := range del {
				names = append(names, p.Name)
			}
			sort.Strings(names)
			if got := strings.Join(create, ","); got != tc.create {
				t.Errorf("create on %q, want %q", got, tc.create)
			}
			if got := strings.Join(names, ","); got != tc.deletes {
				t.Errorf("delete %q, want %q", got, tc.deletes)
			}
		})
	}
}

func ptrIntStr(s string) *intstr.IntOrString {
	v := intstr.Parse(s)
	return &v
}

func TestShouldRun(t *testing.T) {
	ds := &appsv1.DaemonSet{Spec: appsv1.DaemonSetSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
		NodeSelector: map[string]string{"role": "edge"},
		Tolerations:  []corev1.Toleration{{Key: "gpu", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
	}}}}
	node := func(lbl string, taints ...corev1.Taint) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", Labels: map[string]string{"role": lbl}}, Spec: corev1.NodeSpec{Taints: taints}}
	}
	for _, tc := range []struct {
		name      string
		node      *corev1.Node
		run, keep bool
	}{
		{"matching labels", node("edge"), true, true},
		{"other labels", node("core"), false, false},
		{"tolerated taint", node("edge", corev1.Taint{Key: "gpu", Effect: corev1.TaintEffectNoSchedule}), true, true},
		{"NoSchedule keeps what runs", node("edge", corev1.Taint{Key: "x", Effect: corev1.TaintEffectNoSchedule}), false, true},
		{"NoExecute evicts", node("edge", corev1.Taint{Key: "x", Effect: corev1.TaintEffectNoExecute}), false, false},
		{"PreferNoSchedule is ignored", node("edge", corev1.Taint{Key: "x", Effect: corev1.TaintEffectPreferNoSchedule}), true, true},
		{"cordoned nodes run daemons", node("edge", corev1.Taint{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule}), true, true},
		{"not-ready nodes keep daemons", node("edge", corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoExecute}), true, true},
		{"network-unavailable needs hostNetwork", node("edge", corev1.Taint{Key: corev1.TaintNodeNetworkUnavailable, Effect: corev1.TaintEffectNoSchedule}), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if run, keep := shouldRun(ds, tc.node); run != tc.run || keep != tc.keep {
				t.Errorf("shouldRun = %v, %v; want %v, %v", run, keep, tc.run, tc.keep)
			}
		})
	}
}

func TestManage(t *testing.T) {
	ds := &appsv1.DaemonSet{}
	failed := pod("n0", "h", false)
	failed.Status.Phase = corev1.PodFailed
	older, newer := pod("n1", "h", true), pod("n1", "h", true)
	older.Name, newer.Name = "older", "newer"
	newer.CreationTimestamp = metav1.NewTime(time.Now())
	older.CreationTimestamp = metav1.NewTime(time.Now().Add(-time.Minute))
	lost := pod("gone", "h", false)
	lost.Spec.NodeName = ""
	lost.Spec.Affinity = podSpecFor(ds, "gone").Affinity
	byNode := map[string][]*corev1.Pod{"n0": {failed}, "n1": {older, newer}, "gone": {lost}}
	names := func(pods []*corev1.Pod) string {
		var out []string
		for _, p := range pods {
			out = append(out, p.Name)
		}
		sort.Strings(out)
		return strings.Join(out, ",")
	}
	for _, replace := range []bool{true, false} {
		create, del := manage(ds, testNodes(3), byNode, "h", func(string, *corev1.Pod) bool { return replace })
		want := "gone-h,newer"
		if replace {
			want = "gone-h,n0-h,newer"
		}
		if got := names(del); got != want {
			t.Errorf("replace failed %v: delete %q, want %q", replace, got, want)
		}
		if got := strings.Join(create, ","); got != "n2" {
			t.Errorf("replace failed %v: create on %q, want n2", replace, got)
		}
	}
}
