// Package framework is the scheduler's plugin contract: a snapshot of the
// nodes and the pods on them, Filter plugins that rule nodes out with a
// reason, and Score plugins that rank the nodes left. Deciding where a pod
// goes is a pure function of a pod, a snapshot and the plugins (Schedule),
// so every rule can be tested without a cluster.
package framework

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
)

// Resources is an amount of the resources the scheduler accounts for.
type Resources struct {
	MilliCPU         int64
	Memory           int64
	EphemeralStorage int64
	Pods             int64
}

// Add adds o to r.
func (r *Resources) Add(o Resources) {
	r.MilliCPU += o.MilliCPU
	r.Memory += o.Memory
	r.EphemeralStorage += o.EphemeralStorage
	r.Pods += o.Pods
}

// Sub subtracts o from r.
func (r *Resources) Sub(o Resources) {
	r.MilliCPU -= o.MilliCPU
	r.Memory -= o.Memory
	r.EphemeralStorage -= o.EphemeralStorage
	r.Pods -= o.Pods
}

// FromList reads the accounted resources of a resource list.
func FromList(l corev1.ResourceList) Resources {
	get := func(name corev1.ResourceName) resource.Quantity { return l[name] }
	cpu, mem, eph, pods := get(corev1.ResourceCPU), get(corev1.ResourceMemory), get(corev1.ResourceEphemeralStorage), get(corev1.ResourcePods)
	return Resources{MilliCPU: cpu.MilliValue(), Memory: mem.Value(), EphemeralStorage: eph.Value(), Pods: pods.Value()}
}

// PodRequests is what a pod asks for, as upstream computes it: the sum of
// its containers' requests, or the largest init container's when larger,
// plus the pod overhead; a pod also takes one pod slot.
func PodRequests(pod *corev1.Pod) Resources {
	var sum Resources
	for _, c := range pod.Spec.Containers {
		sum.Add(FromList(c.Resources.Requests))
	}
	for _, c := range pod.Spec.InitContainers {
		r := FromList(c.Resources.Requests)
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			sum.Add(r) // sidecars run beside the app containers
			continue
		}
		sum.MilliCPU = max(sum.MilliCPU, r.MilliCPU)
		sum.Memory = max(sum.Memory, r.Memory)
		sum.EphemeralStorage = max(sum.EphemeralStorage, r.EphemeralStorage)
	}
	sum.Add(FromList(pod.Spec.Overhead))
	sum.Pods = 1
	return sum
}

// NodeInfo is one node and what the pods on it take.
type NodeInfo struct {
	Node        *corev1.Node
	Pods        []*corev1.Pod
	Requested   Resources
	Allocatable Resources
	// UsedPorts are the host ports taken, as "protocol/ip/port".
	UsedPorts map[string]bool
}

// NewNodeInfo makes the NodeInfo of node with pods on it.
func NewNodeInfo(node *corev1.Node, pods ...*corev1.Pod) *NodeInfo {
	n := &NodeInfo{Node: node, Allocatable: FromList(node.Status.Allocatable), UsedPorts: map[string]bool{}}
	for _, p := range pods {
		n.AddPod(p)
	}
	return n
}

// AddPod accounts for a pod placed on the node.
func (n *NodeInfo) AddPod(pod *corev1.Pod) {
	n.Pods = append(n.Pods, pod)
	n.Requested.Add(PodRequests(pod))
	for _, port := range HostPorts(pod) {
		n.UsedPorts[port] = true
	}
}

// RemovePod stops accounting for a pod (matched by uid).
func (n *NodeInfo) RemovePod(pod *corev1.Pod) {
	for i, p := range n.Pods {
		if p.UID == pod.UID {
			n.Pods = append(n.Pods[:i:i], n.Pods[i+1:]...)
			n.Requested.Sub(PodRequests(p))
			for _, port := range HostPorts(p) {
				delete(n.UsedPorts, port)
			}
			return
		}
	}
}

// HostPorts lists the host ports a pod needs, as "protocol/ip/port".
func HostPorts(pod *corev1.Pod) []string {
	var out []string
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if p.HostPort <= 0 {
				continue
			}
			ip := p.HostIP
			if ip == "" {
				ip = "0.0.0.0"
			}
			proto := p.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			out = append(out, fmt.Sprintf("%s/%s/%d", proto, ip, p.HostPort))
		}
	}
	return out
}

// Snapshot is the cluster as one scheduling decision sees it.
type Snapshot struct {
	Nodes []*NodeInfo
}

// FilterPlugin rules out nodes a pod cannot run on. It returns "" when the
// node fits, or the reason it does not in upstream's words (they are counted
// per reason in the FailedScheduling message).
type FilterPlugin interface {
	Name() string
	Filter(pod *corev1.Pod, node *NodeInfo) (reason string)
}

// ScorePlugin ranks a node that passed every filter, 0 (worst) to 100 (best).
type ScorePlugin interface {
	Name() string
	Score(pod *corev1.Pod, node *NodeInfo) int64
}

// WeightedScore is a score plugin with its weight.
type WeightedScore struct {
	Plugin ScorePlugin
	Weight int64
}

// Plugins is the configured set of plugins.
type Plugins struct {
	Filters []FilterPlugin
	Scores  []WeightedScore
}

// FitError says why a pod fits on no node: how many nodes gave each reason.
type FitError struct {
	NumNodes int
	Reasons  map[string]int
}

// Error renders the reasons as upstream's FailedScheduling message does:
// "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't match Pod's
// node affinity/selector."
func (e *FitError) Error() string {
	if e.NumNodes == 0 {
		return "no nodes available to schedule pods"
	}
	var parts []string
	for reason, n := range e.Reasons {
		parts = append(parts, fmt.Sprintf("%d %s", n, reason))
	}
	sort.Strings(parts)
	return fmt.Sprintf("0/%d nodes are available: %s.", e.NumNodes, strings.Join(parts, ", "))
}

// Schedule picks the node for pod: every filter must pass, then the highest
// weighted score wins. Upstream breaks ties at random; here the node with
// the fewest pods wins a tie, then the first by name, which spreads equal
// pods just as well and keeps every decision reproducible.
func Schedule(pod *corev1.Pod, snap *Snapshot, plugins Plugins) (string, error) {
	fit := &FitError{NumNodes: len(snap.Nodes), Reasons: map[string]int{}}
	var best *NodeInfo
	bestScore := int64(-1)
	for _, node := range snap.Nodes {
		if reason := filter(pod, node, plugins.Filters); reason != "" {
			fit.Reasons[reason]++
			continue
		}
		var score int64
		for _, s := range plugins.Scores {
			score += s.Weight * s.Plugin.Score(pod, node)
		}
		if best == nil || score > bestScore || score == bestScore && better(node, best) {
			best, bestScore = node, score
		}
	}
	if best == nil {
		return "", fit
	}
	return best.Node.Name, nil
}

func better(a, b *NodeInfo) bool {
	if len(a.Pods) != len(b.Pods) {
		return len(a.Pods) < len(b.Pods)
	}
	return a.Node.Name < b.Node.Name
}

func filter(pod *corev1.Pod, node *NodeInfo, filters []FilterPlugin) string {
	for _, f := range filters {
		if reason := f.Filter(pod, node); reason != "" {
			return reason
		}
	}
	return ""
}
