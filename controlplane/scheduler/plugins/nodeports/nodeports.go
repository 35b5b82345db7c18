// Package nodeports keeps pods whose host ports are taken off a node.
package nodeports

import (
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/navarch/navarch/controlplane/scheduler/framework"
)

// Plugin is the NodePorts filter.
type Plugin struct{}

// Name implements framework.FilterPlugin.
func (Plugin) Name() string { return "NodePorts" }

// Filter implements framework.FilterPlugin. A port bound on all addresses
// (0.0.0.0) conflicts with the same port on any address.
func (Plugin) Filter(pod *corev1.Pod, node *framework.NodeInfo) string {
	for _, want := range framework.HostPorts(pod) {
		proto, rest, _ := strings.Cut(want, "/")
		ip, port, _ := strings.Cut(rest, "/")
		for used := range node.UsedPorts {
			uproto, urest, _ := strings.Cut(used, "/")
			uip, uport, _ := strings.Cut(urest, "/")
			if proto == uproto && port == uport && (ip == uip || ip == "0.0.0.0" || uip == "0.0.0.0") {
				return "node(s) didn't have free ports for the requested pod ports"
			}
		}
	}
	return ""
}
