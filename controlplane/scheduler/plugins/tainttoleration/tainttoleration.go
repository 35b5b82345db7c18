// Package tainttoleration keeps pods off nodes with NoSchedule/NoExecute
// taints they do not tolerate, and prefers nodes with fewer untolerated
// PreferNoSchedule taints.
package tainttoleration

import (
	"fmt"

	corev1 "k8s.io/api/core/v1"

	"github.com/navarch/navarch/controlplane/scheduler/framework"
)

// Plugin is the TaintToleration filter and score.
type Plugin struct{}

// Name implements framework.FilterPlugin and framework.ScorePlugin.
func (Plugin) Name() string { return "TaintToleration" }

func tolerated(t *corev1.Taint, tolerations []corev1.Toleration) bool {
	for _, tol := range tolerations {
		if tol.ToleratesTaint(t) {
			return true
		}
	}
	return false
}

// Filter implements framework.FilterPlugin.
func (Plugin) Filter(pod *corev1.Pod, node *framework.NodeInfo) string {
	for i := range node.Node.Spec.Taints {
		t := &node.Node.Spec.Taints[i]
		if t.Effect == corev1.TaintEffectPreferNoSchedule {
			continue
		}
		if !tolerated(t, pod.Spec.Tolerations) {
			return fmt.Sprintf("node(s) had untolerated taint {%s: %s}", t.Key, t.Value)
		}
	}
	return ""
}

// Score implements framework.ScorePlugin.
func (Plugin) Score(pod *corev1.Pod, node *framework.NodeInfo) int64 {
	untolerated := 0
	for i := range node.Node.Spec.Taints {
		t := &node.Node.Spec.Taints[i]
		if t.Effect == corev1.TaintEffectPreferNoSchedule && !tolerated(t, pod.Spec.Tolerations) {
			untolerated++
		}
	}
	return int64(100 / (1 + untolerated))
}
