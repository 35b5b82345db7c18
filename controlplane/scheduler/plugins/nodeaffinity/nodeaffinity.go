// Package nodeaffinity places pods by node labels: the nodeSelector and the
// required node affinity filter nodes, the preferred node affinity scores them.
package nodeaffinity

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"

	"github.com/navarch/navarch/controlplane/scheduler/framework"
)

// Plugin is the NodeAffinity filter and score.
type Plugin struct{}

// Name implements framework.FilterPlugin and framework.ScorePlugin.
func (Plugin) Name() string { return "NodeAffinity" }

// Filter implements framework.FilterPlugin.
func (Plugin) Filter(pod *corev1.Pod, node *framework.NodeInfo) string {
	if !labels.SelectorFromSet(pod.Spec.NodeSelector).Matches(labels.Set(node.Node.Labels)) {
		return "node(s) didn't match Pod's node affinity/selector"
	}
	if a := pod.Spec.Affinity; a != nil && a.NodeAffinity != nil && a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		terms := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
		for _, t := range terms {
			if TermMatches(t, node.Node) {
				return ""
			}
		}
		return "node(s) didn't match Pod's node affinity/selector"
	}
	return ""
}

// Score implements framework.ScorePlugin: the share of the preferred terms'
// weight that the node matches.
func (Plugin) Score(pod *corev1.Pod, node *framework.NodeInfo) int64 {
	a := pod.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || len(a.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution) == 0 {
		return 0
	}
	var total, matched int64
	for _, p := range a.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
		total += int64(p.Weight)
		if TermMatches(p.Preference, node.Node) {
			matched += int64(p.Weight)
		}
	}
	if total == 0 {
		return 0
	}
	return matched * 100 / total
}

// TermMatches reports whether a node selector term (all its expressions and
// fields) matches node. An empty term matches nothing, as upstream.
func TermMatches(t corev1.NodeSelectorTerm, node *corev1.Node) bool {
	if len(t.MatchExpressions) == 0 && len(t.MatchFields) == 0 {
		return false
	}
	for _, e := range t.MatchExpressions {
		if !requirementMatches(e, labels.Set(node.Labels)) {
			return false
		}
	}
	for _, e := range t.MatchFields {
		if !requirementMatches(e, labels.Set(fields.Set{"metadata.name": node.Name})) {
			return false
		}
	}
	return true
}

func requirementMatches(e corev1.NodeSelectorRequirement, set labels.Set) bool {
	ops := map[corev1.NodeSelectorOperator]selection.Operator{
		corev1.NodeSelectorOpIn: selection.In, corev1.NodeSelectorOpNotIn: selection.NotIn,
		corev1.NodeSelectorOpExists: selection.Exists, corev1.NodeSelectorOpDoesNotExist: selection.DoesNotExist,
		corev1.NodeSelectorOpGt: selection.GreaterThan, corev1.NodeSelectorOpLt: selection.LessThan,
	}
	op, ok := ops[e.Operator]
	if !ok {
		return false
	}
	r, err := labels.NewRequirement(e.Key, op, e.Values)
	if err != nil {
		return false
	}
	return r.Matches(set)
}
