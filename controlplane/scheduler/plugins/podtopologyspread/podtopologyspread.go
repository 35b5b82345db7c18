// Package podtopologyspread spreads pods over topology domains (zones,
// nodes, any node label): a pod's whenUnsatisfiable=DoNotSchedule
// constraints filter the nodes whose domain would exceed maxSkew, its
// ScheduleAnyway constraints score nodes by how many matching pods their
// domains hold, and a pod without constraints of its own is spread by the
// system defaults (zone maxSkew 5, hostname maxSkew 3, ScheduleAnyway) among
// the pods of its controller. Counts per domain are made once per decision
// from the snapshot's per-node pod groups.
package podtopologyspread

import (
	"math"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"

	"github.com/navarch/navarch/controlplane/scheduler/framework"
	"github.com/navarch/navarch/controlplane/scheduler/plugins/nodeaffinity"
	"github.com/navarch/navarch/controlplane/scheduler/plugins/tainttoleration"
)

// Upstream's reasons.
const (
	ReasonSkew         = "node(s) didn't match pod topology spread constraints"
	ReasonMissingLabel = "node(s) didn't match pod topology spread constraints (missing required label)"
)

// Plugin is the PodTopologySpread filter and score.
type Plugin struct{}

// Name implements framework.SnapshotFilterPlugin and framework.SnapshotScorePlugin.
func (Plugin) Name() string { return "PodTopologySpread" }

// constraint is a topology spread constraint resolved for the incoming pod.
type constraint struct {
	maxSkew       int64
	minDomains    int
	key           string
	honorAffinity bool
	honorTaints   bool
	// Exactly one of selector or owner says which pods count: a label
	// selector in the pod's namespace, or (system defaults) the pods of
	// the same controller.
	selector   labels.Selector
	indexLabel string // narrows the groups to match, see framework.IndexLabel
	namespace  string
	owner      types.UID
}

// count is how many matching pods node holds.
func (c *constraint) count(node *framework.NodeInfo) int64 {
	if c.owner != "" {
		return int64(node.Owners[c.owner])
	}
	var n int64
	for g := range node.GroupsWith(c.indexLabel) {
		if g.Namespace == c.namespace && c.selector.Matches(g.Labels) {
			n += int64(g.Count)
		}
	}
	return n
}

func (c *constraint) matchesPod(pod *corev1.Pod) bool {
	if c.owner != "" {
		return framework.ControllerUID(pod) == c.owner
	}
	return c.selector.Matches(labels.Set(pod.Labels))
}

func resolve(pod *corev1.Pod, when corev1.UnsatisfiableConstraintAction) []constraint {
	var out []constraint
	for _, t := range pod.Spec.TopologySpreadConstraints {
		if t.WhenUnsatisfiable != when {
			continue
		}
		c := constraint{maxSkew: int64(t.MaxSkew), minDomains: 1, key: t.TopologyKey, namespace: pod.Namespace,
			honorAffinity: t.NodeAffinityPolicy == nil || *t.NodeAffinityPolicy == corev1.NodeInclusionPolicyHonor,
			honorTaints:   t.NodeTaintsPolicy != nil && *t.NodeTaintsPolicy == corev1.NodeInclusionPolicyHonor}
		if t.MinDomains != nil {
			c.minDomains = int(*t.MinDomains)
		}
		sel, err := metav1.LabelSelectorAsSelector(t.LabelSelector)
		if err != nil {
			sel = labels.Nothing()
		}
		for _, k := range t.MatchLabelKeys {
			if v, ok := pod.Labels[k]; ok {
				if r, err := labels.NewRequirement(k, selection.In, []string{v}); err == nil {
					sel = sel.Add(*r)
				}
			}
		}
		c.selector, c.indexLabel = sel, framework.IndexLabel(t.LabelSelector)
		out = append(out, c)
	}
	return out
}

// systemDefaults are upstream's default constraints, counted among the pods
// of the pod's controller. Upstream selects with the selectors of the
// Services, ReplicationControllers, ReplicaSets and StatefulSets that select
// the pod; the controller's own pods are what those select in the usual
// case (a Deployment's pods and their Service).
func systemDefaults(pod *corev1.Pod) []constraint {
	uid := framework.ControllerUID(pod)
	if uid == "" {
		return nil
	}
	return []constraint{
		{maxSkew: 3, minDomains: 1, key: corev1.LabelHostname, honorAffinity: true, owner: uid},
		{maxSkew: 5, minDomains: 1, key: corev1.LabelTopologyZone, honorAffinity: true, owner: uid},
	}
}

// eligible reports a node whose pods count toward the constraints: it has
// every topology key (when required) and passes the inclusion policies.
func eligible(pod *corev1.Pod, node *framework.NodeInfo, cs []constraint, requireAll bool) bool {
	if requireAll && !hasKeys(node, cs) {
		return false
	}
	affinity, taints := false, false
	for i := range cs {
		affinity, taints = affinity || cs[i].honorAffinity, taints || cs[i].honorTaints
	}
	if affinity && (nodeaffinity.Plugin{}).Filter(pod, node) != "" {
		return false
	}
	return !taints || (tainttoleration.Plugin{}).Filter(pod, node) == ""
}

func hasKeys(node *framework.NodeInfo, cs []constraint) bool {
	for i := range cs {
		if _, ok := node.Node.Labels[cs[i].key]; !ok {
			return false
		}
	}
	return true
}

// PreFilter implements framework.SnapshotFilterPlugin.
func (Plugin) PreFilter(pod *corev1.Pod, snap *framework.Snapshot) framework.NodeFilter {
	cs := resolve(pod, corev1.DoNotSchedule)
	if len(cs) == 0 {
		return nil
	}
	counts := make([]map[string]int64, len(cs))
	for i := range counts {
		counts[i] = map[string]int64{}
	}
	for _, n := range snap.Nodes {
		if !eligible(pod, n, cs, true) {
			continue
		}
		for i := range cs {
			counts[i][n.Node.Labels[cs[i].key]] += cs[i].count(n)
		}
	}
	// The skew is measured against the emptiest domain; with fewer domains
	// than minDomains, the missing ones count as empty.
	mins := make([]int64, len(cs))
	self := make([]int64, len(cs))
	for i := range cs {
		if len(counts[i]) < cs[i].minDomains {
			mins[i] = 0
		} else {
			mins[i] = math.MaxInt64
			for _, n := range counts[i] {
				mins[i] = min(mins[i], n)
			}
		}
		if cs[i].matchesPod(pod) {
			self[i] = 1
		}
	}
	return func(node *framework.NodeInfo) string {
		for i := range cs {
			v, ok := node.Node.Labels[cs[i].key]
			if !ok {
				return ReasonMissingLabel
			}
			if counts[i][v]+self[i]-mins[i] > cs[i].maxSkew {
				return ReasonSkew
			}
		}
		return ""
	}
}

// ScoreNodes implements framework.SnapshotScorePlugin: fewer matching pods
// in a node's domains score higher. Each constraint weighs by the log of
// its number of domains, so that a constraint over many small domains
// (hostname) and one over few large ones (zone) both matter, as upstream.
func (Plugin) ScoreNodes(pod *corev1.Pod, snap *framework.Snapshot, nodes []*framework.NodeInfo) []int64 {
	scores := make([]int64, len(nodes))
	cs := resolve(pod, corev1.ScheduleAnyway)
	requireAll := true
	if len(pod.Spec.TopologySpreadConstraints) == 0 {
		cs, requireAll = systemDefaults(pod), false
	}
	if len(cs) == 0 {
		return scores
	}
	// Domains are those of the nodes being scored; nodes lacking a key of
	// explicit constraints are not scored (0).
	ignored := make([]bool, len(nodes))
	counts := make([]map[string]int64, len(cs))
	for i := range counts {
		counts[i] = map[string]int64{}
	}
	scored := 0
	for j, n := range nodes {
		if requireAll && !hasKeys(n, cs) {
			ignored[j] = true
			continue
		}
		scored++
		for i := range cs {
			if v, ok := n.Node.Labels[cs[i].key]; ok && cs[i].key != corev1.LabelHostname {
				counts[i][v] += 0
			}
		}
	}
	weights := make([]float64, len(cs))
	for i := range cs {
		size := len(counts[i])
		if cs[i].key == corev1.LabelHostname {
			size = scored
		}
		weights[i] = math.Log(float64(size + 2))
	}
	// Pods on every eligible node count toward the scored domains; per-node
	// (hostname) counts are taken from the scored nodes themselves.
	for _, n := range snap.Nodes {
		if !eligible(pod, n, cs, requireAll) {
			continue
		}
		for i := range cs {
			if cs[i].key == corev1.LabelHostname {
				continue
			}
			v, ok := n.Node.Labels[cs[i].key]
			if _, tracked := counts[i][v]; ok && tracked {
				counts[i][v] += cs[i].count(n)
			}
		}
	}
	raw := make([]int64, len(nodes))
	for j, n := range nodes {
		if ignored[j] {
			continue
		}
		var s float64
		for i := range cs {
			v, ok := n.Node.Labels[cs[i].key]
			if !ok {
				continue
			}
			cnt := counts[i][v]
			if cs[i].key == corev1.LabelHostname {
				cnt = cs[i].count(n)
			}
			s += float64(cnt)*weights[i] + float64(cs[i].maxSkew-1)
		}
		raw[j] = int64(math.Round(s))
	}
	// Normalize: the node with the fewest matching pods gets 100.
	lo, hi := int64(math.MaxInt64), int64(0)
	for j := range nodes {
		if !ignored[j] {
			lo, hi = min(lo, raw[j]), max(hi, raw[j])
		}
	}
	for j := range nodes {
		switch {
		case ignored[j]:
			scores[j] = 0
		case hi == 0:
			scores[j] = 100
		default:
			scores[j] = 100 * (hi + lo - raw[j]) / hi
		}
	}
	return scores
}
