package interpodaffinity

import (
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

func pod(name, ns string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID(ns + "/" + name), Labels: labels}}
}

func aterm(key string, labels map[string]string) corev1.PodAffinityTerm {
	return corev1.PodAffinityTerm{TopologyKey: key, LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}
}

func withAnti(p *corev1.Pod, ts ...corev1.PodAffinityTerm) *corev1.Pod {
	if p.Spec.Affinity == nil {
		p.Spec.Affinity = &corev1.Affinity{}
	}
	p.Spec.Affinity.PodAntiAffinity = &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: ts}
	return p
}

func withAffinity(p *corev1.Pod, ts ...corev1.PodAffinityTerm) *corev1.Pod {
	if p.Spec.Affinity == nil {
		p.Spec.Affinity = &corev1.Affinity{}
	}
	p.Spec.Affinity.PodAffinity = &corev1.PodAffinity{RequiredDuringSchedulingIgnoredDuringExecution: ts}
	return p
}

var (
	web   = map[string]string{"app": "web"}
	db    = map[string]string{"app": "db"}
	other = map[string]string{"app": "other"}
)

// cluster is three nodes: a and b in zone z1, c in z2.
func cluster(onA, onB, onC []*corev1.Pod) *framework.Snapshot {
	return &framework.Snapshot{Nodes: []*framework.NodeInfo{
		framework.NewNodeInfo(node("a", "z1"), onA...),
		framework.NewNodeInfo(node("b", "z1"), onB...),
		framework.NewNodeInfo(node("c", "z2"), onC...),
	}}
}

func reasons(pod *corev1.Pod, snap *framework.Snapshot) map[string]string {
	out := map[string]string{}
	f := Plugin{}.PreFilter(pod, snap)
	for _, n := range snap.Nodes {
		if f != nil {
			out[n.Node.Name] = f(n)
		} else {
			out[n.Node.Name] = ""
		}
	}
	return out
}

func TestFilter(t *testing.T) {
	allNS := aterm(corev1.LabelHostname, web)
	allNS.NamespaceSelector = &metav1.LabelSelector{}
	listedNS := aterm(corev1.LabelHostname, web)
	listedNS.Namespaces = []string{"other"}
	cases := []struct {
		name string
		pod  *corev1.Pod
		snap *framework.Snapshot
		want map[string]string
	}{
		{"no terms, nothing placed", pod("p", "ns", web), cluster(nil, nil, nil),
			map[string]string{"a": "", "b": "", "c": ""}},
		{"anti-affinity keeps two replicas off one node",
			withAnti(pod("p", "ns", web), aterm(corev1.LabelHostname, web)),
			cluster([]*corev1.Pod{pod("r1", "ns", web)}, nil, nil),
			map[string]string{"a": ReasonAntiAffinity, "b": "", "c": ""}},
		{"anti-affinity on zone rules out the whole zone",
			withAnti(pod("p", "ns", web), aterm(corev1.LabelTopologyZone, web)),
			cluster([]*corev1.Pod{pod("r1", "ns", web)}, nil, nil),
			map[string]string{"a": ReasonAntiAffinity, "b": ReasonAntiAffinity, "c": ""}},
		{"anti-affinity ignores pods of other namespaces",
			withAnti(pod("p", "ns", web), aterm(corev1.LabelHostname, web)),
			cluster([]*corev1.Pod{pod("r1", "other", web)}, nil, nil),
			map[string]string{"a": "", "b": "", "c": ""}},
		{"anti-affinity over listed namespaces",
			withAnti(pod("p", "ns", web), listedNS),
			cluster([]*corev1.Pod{pod("r1", "other", web)}, []*corev1.Pod{pod("r2", "ns", web)}, nil),
			map[string]string{"a": ReasonAntiAffinity, "b": "", "c": ""}},
		{"anti-affinity with an empty namespaceSelector: all namespaces",
			withAnti(pod("p", "ns", web), allNS),
			cluster([]*corev1.Pod{pod("r1", "other", web)}, []*corev1.Pod{pod("r2", "ns", web)}, nil),
			map[string]string{"a": ReasonAntiAffinity, "b": ReasonAntiAffinity, "c": ""}},
		{"affinity co-locates in the zone of the matching pod",
			withAffinity(pod("p", "ns", web), aterm(corev1.LabelTopologyZone, db)),
			cluster(nil, nil, []*corev1.Pod{pod("db", "ns", db)}),
			map[string]string{"a": ReasonAffinity, "b": ReasonAffinity, "c": ""}},
		{"affinity with no matching pod anywhere and no self match",
			withAffinity(pod("p", "ns", web), aterm(corev1.LabelTopologyZone, db)),
			cluster(nil, nil, nil),
			map[string]string{"a": ReasonAffinity, "b": ReasonAffinity, "c": ReasonAffinity}},
		{"the first pod of a group whose affinity matches itself goes anywhere",
			withAffinity(pod("p", "ns", web), aterm(corev1.LabelTopologyZone, web)),
			cluster(nil, nil, nil),
			map[string]string{"a": "", "b": "", "c": ""}},
		{"the second pod of the group follows the first",
			withAffinity(pod("p", "ns", web), aterm(corev1.LabelTopologyZone, web)),
			cluster(nil, nil, []*corev1.Pod{pod("w1", "ns", web)}),
			map[string]string{"a": ReasonAffinity, "b": ReasonAffinity, "c": ""}},
		{"affinity needs the topology key on the node",
			withAffinity(pod("p", "ns", web), aterm("rack", web)),
			cluster(nil, nil, nil),
			map[string]string{"a": ReasonAffinity, "b": ReasonAffinity, "c": ReasonAffinity}},
		{"symmetry: a placed pod's anti-affinity keeps the incoming pod away",
			pod("p", "ns", web),
			cluster([]*corev1.Pod{withAnti(pod("guard", "ns", other), aterm(corev1.LabelTopologyZone, web))}, nil, nil),
			map[string]string{"a": ReasonExistingAntiRule, "b": ReasonExistingAntiRule, "c": ""}},
		{"symmetry: a placed pod's anti-affinity does not match other pods",
			pod("p", "ns", db),
			cluster([]*corev1.Pod{withAnti(pod("guard", "ns", other), aterm(corev1.LabelHostname, web))}, nil, nil),
			map[string]string{"a": "", "b": "", "c": ""}},
		{"affinity is checked before anti-affinity",
			withAnti(withAffinity(pod("p", "ns", web), aterm(corev1.LabelHostname, db)), aterm(corev1.LabelHostname, db)),
			cluster([]*corev1.Pod{pod("db", "ns", db)}, nil, nil),
			map[string]string{"a": ReasonAntiAffinity, "b": ReasonAffinity, "c": ReasonAffinity}},
	}
	for _, c := range cases {
		got := reasons(c.pod, c.snap)
		for n, want := range c.want {
			if got[n] != want {
				t.Errorf("%s: node %s: got %q, want %q", c.name, n, got[n], want)
			}
		}
	}
}

func TestMatchLabelKeys(t *testing.T) {
	tm := aterm(corev1.LabelHostname, web)
	tm.MatchLabelKeys = []string{"rev"}
	p := withAnti(pod("p", "ns", map[string]string{"app": "web", "rev": "2"}), tm)
	old := pod("old", "ns", map[string]string{"app": "web", "rev": "1"})
	same := pod("same", "ns", map[string]string{"app": "web", "rev": "2"})
	got := reasons(p, cluster([]*corev1.Pod{old}, []*corev1.Pod{same}, nil))
	if got["a"] != "" || got["b"] != ReasonAntiAffinity {
		t.Fatalf("got %v; want only b (same rev) ruled out", got)
	}
}

func TestFitErrorCounts(t *testing.T) {
	p := withAnti(pod("p", "ns", web), aterm(corev1.LabelHostname, web))
	snap := cluster([]*corev1.Pod{pod("r1", "ns", web)}, []*corev1.Pod{pod("r2", "ns", web)},
		[]*corev1.Pod{withAnti(pod("g", "ns", other), aterm(corev1.LabelHostname, web))})
	_, err := framework.Schedule(p, snap, framework.Plugins{SnapshotFilters: []framework.SnapshotFilterPlugin{Plugin{}}})
	want := "0/3 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules, 2 node(s) didn't match pod anti-affinity rules."
	if err == nil || err.Error() != want {
		t.Fatalf("got %v\nwant %s", err, want)
	}
}

func preferred(w int32, t corev1.PodAffinityTerm) corev1.WeightedPodAffinityTerm {
	return corev1.WeightedPodAffinityTerm{Weight: w, PodAffinityTerm: t}
}

func TestScore(t *testing.T) {
	prefAnti := pod("p", "ns", web)
	prefAnti.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{
		PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{preferred(10, aterm(corev1.LabelHostname, web))}}}
	prefAff := pod("p", "ns", web)
	prefAff.Spec.Affinity = &corev1.Affinity{PodAffinity: &corev1.PodAffinity{
		PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{
			preferred(10, aterm(corev1.LabelTopologyZone, db)), preferred(5, aterm(corev1.LabelHostname, db))}}}
	attracts := pod("magnet", "ns", other)
	attracts.Spec.Affinity = &corev1.Affinity{PodAffinity: &corev1.PodAffinity{
		PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{preferred(10, aterm(corev1.LabelHostname, web))}}}

	cases := []struct {
		name string
		pod  *corev1.Pod
		snap *framework.Snapshot
		want []int64
	}{
		{"nothing to score", pod("p", "ns", web), cluster(nil, nil, nil), []int64{0, 0, 0}},
		{"preferred anti-affinity", prefAnti, cluster([]*corev1.Pod{pod("r", "ns", web)}, nil, nil), []int64{0, 100, 100}},
		// b holds db (zone 10 + host 5 = 15), a shares b's zone (10), c nothing.
		{"preferred affinity", prefAff, cluster(nil, []*corev1.Pod{pod("db", "ns", db)}, nil), []int64{66, 100, 0}},
		{"a placed pod's preferred affinity attracts", pod("p", "ns", web), cluster(nil, nil, []*corev1.Pod{attracts}), []int64{0, 0, 100}},
	}
	for _, c := range cases {
		got := Plugin{}.ScoreNodes(c.pod, c.snap, c.snap.Nodes)
		for i := range c.want {
			if got[i] != c.want[i] {
				t.Errorf("%s: got %v, want %v", c.name, got, c.want)
				break
			}
		}
	}
}
