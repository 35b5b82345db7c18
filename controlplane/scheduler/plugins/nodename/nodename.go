// Package nodename keeps a pod that names its node (spec.nodeName) off
// every other node.
package nodename

import (
	corev1 "k8s.io/api/core/v1"

	"github.com/navarch/navarch/controlplane/scheduler/framework"
)

// Plugin is the NodeName filter.
type Plugin struct{}

// Name implements framework.FilterPlugin.
func (Plugin) Name() string { return "NodeName" }

// Filter implements framework.FilterPlugin.
func (Plugin) Filter(pod *corev1.Pod, node *framework.NodeInfo) string {
	if pod.Spec.NodeName != "" && pod.Spec.NodeName != node.Node.Name {
		return "node(s) didn't match the requested node name"
	}
	return ""
}
