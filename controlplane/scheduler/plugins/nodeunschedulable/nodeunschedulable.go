// Package nodeunschedulable keeps pods off cordoned nodes unless they
// tolerate the unschedulable taint.
package nodeunschedulable

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/navarch/navarch/controlplane/scheduler/framework"
)

// Plugin is the NodeUnschedulable filter.
type Plugin struct{}

// Name implements framework.FilterPlugin.
func (Plugin) Name() string { return "NodeUnschedulable" }

// Filter implements framework.FilterPlugin.
func (Plugin) Filter(pod *corev1.Pod, node *framework.NodeInfo) string {
	if !node.Node.Spec.Unschedulable {
		return ""
	}
	taint := corev1.Taint{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule}
	for _, t := range pod.Spec.Tolerations {
		if t.ToleratesTaint(&taint) {
			return ""
		}
	}
	return "node(s) were unschedulable"
}
