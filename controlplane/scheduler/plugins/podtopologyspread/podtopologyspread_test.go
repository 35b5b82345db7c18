package podtopologyspread

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/navarch/navarch/controlplane/scheduler/framework"
)

func node(name, zone string) *corev1.Node {
	l := map[string]string{corev1.LabelHostname: name}
	if zone != "" {
		l[corev1.LabelTopologyZone] = zone
	}
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}}
}

var web = map[string]string{"app": "web"}

func pods(n int, prefix string, labels map[string]string, owner types.UID) []*corev1.Pod {
	var out []*corev1.Pod
	for i := 0; i < n; i++ {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-%d", prefix, i), Namespace: "ns",
			UID: types.UID(fmt.Sprintf("%s-%d", prefix, i)), Labels: labels}}
		if owner != "" {
			yes := true
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs", UID: owner, Controller: &yes}}
		}
		out = append(out, p)
	}
	return out
}

func spread(key string, skew int32, when corev1.UnsatisfiableConstraintAction) corev1.TopologySpreadConstraint {
	return corev1.TopologySpreadConstraint{MaxSkew: skew, TopologyKey: key, WhenUnsatisfiable: when,
		LabelSelector: &metav1.LabelSelector{MatchLabels: web}}
}

func incoming(cs ...corev1.TopologySpreadConstraint) *corev1.Pod {
	p := pods(1, "new", web, "")[0]
	p.Spec.TopologySpreadConstraints = cs
	return p
}

// zones: a1, a2 in zone a holding 1 pod each; b1 in zone b with 1 pod; c1
// without a zone label.
func zones() *framework.Snapshot {
	return &framework.Snapshot{Nodes: []*framework.NodeInfo{
		framework.NewNodeInfo(node("a1", "a"), pods(1, "a1", web, "")...),
		framework.NewNodeInfo(node("a2", "a"), pods(1, "a2", web, "")...),
		framework.NewNodeInfo(node("b1", "b"), pods(1, "b1", web, "")...),
		framework.NewNodeInfo(node("c1", "")),
	}}
}

func filter(pod *corev1.Pod, snap *framework.Snapshot) map[string]string {
	out := map[string]string{}
	f := Plugin{}.PreFilter(pod, snap)
	for _, n := range snap.Nodes {
		out[n.Node.Name] = ""
		if f != nil {
			out[n.Node.Name] = f(n)
		}
	}
	return out
}

func TestFilter(t *testing.T) {
	three := int32(3)
	minDomains := spread(corev1.LabelTopologyZone, 1, corev1.DoNotSchedule)
	minDomains.MinDomains = &three
	honorZoneA := incoming(spread(corev1.LabelTopologyZone, 1, corev1.DoNotSchedule))
	honorZoneA.Spec.NodeSelector = map[string]string{corev1.LabelTopologyZone: "a"}
	ignore := corev1.NodeInclusionPolicyIgnore
	ignoreZoneA := incoming(spread(corev1.LabelTopologyZone, 1, corev1.DoNotSchedule))
	ignoreZoneA.Spec.TopologySpreadConstraints[0].NodeAffinityPolicy = &ignore
	ignoreZoneA.Spec.NodeSelector = honorZoneA.Spec.NodeSelector
	other := incoming(spread(corev1.LabelTopologyZone, 1, corev1.DoNotSchedule))
	other.Labels = map[string]string{"app": "other"}

	cases := []struct {
		name string
		pod  *corev1.Pod
		want map[string]string
	}{
		{"no constraints", incoming(), map[string]string{"a1": "", "a2": "", "b1": "", "c1": ""}},
		{"ScheduleAnyway does not filter", incoming(spread(corev1.LabelTopologyZone, 1, corev1.ScheduleAnyway)),
			map[string]string{"a1": "", "a2": "", "b1": "", "c1": ""}},
		// zone a has 2, b has 1: a third pod in a makes the skew 2.
		{"maxSkew 1 across zones rejects the skewed zone", incoming(spread(corev1.LabelTopologyZone, 1, corev1.DoNotSchedule)),
			map[string]string{"a1": ReasonSkew, "a2": ReasonSkew, "b1": "", "c1": ReasonMissingLabel}},
		{"maxSkew 2 allows it", incoming(spread(corev1.LabelTopologyZone, 2, corev1.DoNotSchedule)),
			map[string]string{"a1": "", "a2": "", "b1": "", "c1": ReasonMissingLabel}},
		// hostname: c1 is an empty domain, so every node with a pod is at skew 2.
		{"hostname with an empty node", incoming(spread(corev1.LabelHostname, 1, corev1.DoNotSchedule)),
			map[string]string{"a1": ReasonSkew, "a2": ReasonSkew, "b1": ReasonSkew, "c1": ""}},
		{"fewer domains than minDomains count as empty", incoming(minDomains),
			map[string]string{"a1": ReasonSkew, "a2": ReasonSkew, "b1": ReasonSkew, "c1": ReasonMissingLabel}},
		// Only zone a is eligible under the nodeSelector, so it is its own minimum.
		{"nodeAffinityPolicy Honor leaves other zones out", honorZoneA,
			map[string]string{"a1": "", "a2": "", "b1": "", "c1": ReasonMissingLabel}},
		{"nodeAffinityPolicy Ignore counts them", ignoreZoneA,
			map[string]string{"a1": ReasonSkew, "a2": ReasonSkew, "b1": "", "c1": ReasonMissingLabel}},
		// A pod its selector does not match adds nothing to the skew.
		{"the incoming pod counts only if it matches", other,
			map[string]string{"a1": "", "a2": "", "b1": "", "c1": ReasonMissingLabel}},
	}
	for _, c := range cases {
		got := filter(c.pod, zones())
		for n, want := range c.want {
			if got[n] != want {
				t.Errorf("%s: node %s: got %q, want %q", c.name, n, got[n], want)
			}
		}
	}
}

func TestFitErrorCounts(t *testing.T) {
	three := int32(3)
	c := spread(corev1.LabelTopologyZone, 1, corev1.DoNotSchedule)
	c.MinDomains = &three
	_, err := framework.Schedule(incoming(c), zones(),
		framework.Plugins{SnapshotFilters: []framework.SnapshotFilterPlugin{Plugin{}}})
	want := "0/4 nodes are available: 1 node(s) didn't match pod topology spread constraints (missing required label), 3 node(s) didn't match pod topology spread constraints."
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
}

func TestScoreScheduleAnyway(t *testing.T) {
	snap := zones()
	got := Plugin{}.ScoreNodes(incoming(spread(corev1.LabelTopologyZone, 1, corev1.ScheduleAnyway)), snap, snap.Nodes)
	// b1's zone holds fewer pods than a's; c1 lacks the key and is not scored.
	if !(got[2] == 100 && got[0] == got[1] && got[0] < got[2] && got[3] == 0) {
		t.Fatalf("scores %v: want b1 100 above a1 = a2, c1 0", got)
	}
}

// placeAll schedules n pods of one ReplicaSet one after another over nodes
// with the spread score alone, and returns how many land on each node.
func placeAll(t *testing.T, n int, snap *framework.Snapshot) map[string]int {
	t.Helper()
	plugins := framework.Plugins{Scores: []framework.WeightedScore{{Snapshot: Plugin{}, Weight: 1}}}
	byName := map[string]*framework.NodeInfo{}
	for _, ni := range snap.Nodes {
		byName[ni.Node.Name] = ni
	}
	out := map[string]int{}
	for i, p := range pods(n, "rs", web, "rs-uid") {
		p.Name = fmt.Sprintf("new-%d", i)
		name, err := framework.Schedule(p, snap, plugins)
		if err != nil {
			t.Fatal(err)
		}
		byName[name].AddPod(p)
		out[name]++
	}
	return out
}

func TestDefaultSpreadingSpreadsAReplicaSet(t *testing.T) {
	// Node a already holds 2 replicas; the tie-break prefers the node with
	// fewer pods, so fill it with unrelated pods to be sure the spreading
	// comes from the score.
	snap := &framework.Snapshot{Nodes: []*framework.NodeInfo{
		framework.NewNodeInfo(node("a", "z1"), pods(2, "old", web, "rs-uid")...),
		framework.NewNodeInfo(node("b", "z1"), pods(5, "x", nil, "")...),
		framework.NewNodeInfo(node("c", "z2"), pods(5, "y", nil, "")...),
	}}
	first := Plugin{}.ScoreNodes(pods(1, "p", web, "rs-uid")[0], snap, snap.Nodes)
	if !(first[0] < first[1] && first[1] < first[2]) {
		t.Fatalf("scores %v: want a (2 replicas) < b (zone with 2) < c (empty zone)", first)
	}
	got := placeAll(t, 4, snap)
	if got["a"] != 0 || got["b"] != 2 || got["c"] != 2 {
		t.Fatalf("placed %v: want the 4 new replicas on b and c, 2 each (2 per node)", got)
	}
	// A pod without a controller has no default constraints.
	lone := Plugin{}.ScoreNodes(pods(1, "lone", web, "")[0], snap, snap.Nodes)
	if lone[0] != 0 || lone[1] != 0 || lone[2] != 0 {
		t.Fatalf("lone pod scores %v, want all 0", lone)
	}
}

func TestNodeTaintsPolicy(t *testing.T) {
	snap := zones()
	tainted := node("t1", "t")
	tainted.Spec.Taints = []corev1.Taint{{Key: "dedicated", Effect: corev1.TaintEffectNoSchedule}}
	snap.Nodes = append(snap.Nodes, framework.NewNodeInfo(tainted))
	honor := corev1.NodeInclusionPolicyHonor
	honoring := incoming(spread(corev1.LabelTopologyZone, 1, corev1.DoNotSchedule))
	honoring.Spec.TopologySpreadConstraints[0].NodeTaintsPolicy = &honor

	// Ignore (the default): the tainted node's empty zone is the minimum.
	got := filter(incoming(spread(corev1.LabelTopologyZone, 1, corev1.DoNotSchedule)), snap)
	if got["a1"] != ReasonSkew || got["b1"] != ReasonSkew || got["t1"] != "" {
		t.Errorf("taints ignored: %v", got)
	}
	// Honor: the zone of a node the pod cannot use does not count.
	got = filter(honoring, snap)
	if got["a1"] != ReasonSkew || got["b1"] != "" {
		t.Errorf("taints honored: %v", got)
	}
}
