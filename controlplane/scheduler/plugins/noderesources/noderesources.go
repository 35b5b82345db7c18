// Package noderesources fits pods to nodes by their resource requests
// against the nodes' allocatable resources (Fit), and prefers the nodes
// with the most left over (LeastAllocated) and whose CPU and memory stay in
// balance (BalancedAllocation).
package noderesources

import (
	"math"

	corev1 "k8s.io/api/core/v1"

	"github.com/navarch/navarch/controlplane/scheduler/framework"
)

// Fit is the NodeResourcesFit filter.
type Fit struct{}

// Name implements framework.FilterPlugin.
func (Fit) Name() string { return "NodeResourcesFit" }

// Filter implements framework.FilterPlugin.
func (Fit) Filter(pod *corev1.Pod, node *framework.NodeInfo) string {
	want, used, have := framework.PodRequests(pod), node.Requested, node.Allocatable
	switch {
	case used.Pods+1 > have.Pods:
		return "Too many pods"
	case want.MilliCPU > 0 && used.MilliCPU+want.MilliCPU > have.MilliCPU:
		return "Insufficient cpu"
	case want.Memory > 0 && used.Memory+want.Memory > have.Memory:
		return "Insufficient memory"
	case want.EphemeralStorage > 0 && used.EphemeralStorage+want.EphemeralStorage > have.EphemeralStorage:
		return "Insufficient ephemeral-storage"
	}
	return ""
}

// usedAfter is the CPU and memory the node's pods and pod would take, with
// the scoring defaults for pods that request none (framework.NonZeroRequests),
// from the node's running sum rather than a walk of its pods.
func usedAfter(pod *corev1.Pod, node *framework.NodeInfo) (cpu, mem float64) {
	r := framework.NonZeroRequests(pod)
	r.Add(node.NonZeroRequested)
	return float64(r.MilliCPU), float64(r.Memory)
}

// LeastAllocated is the NodeResourcesLeastAllocated score.
type LeastAllocated struct{}

// Name implements framework.ScorePlugin.
func (LeastAllocated) Name() string { return "NodeResourcesLeastAllocated" }

// Score implements framework.ScorePlugin: the mean free fraction of CPU and
// memory after placing the pod, 0..100.
func (LeastAllocated) Score(pod *corev1.Pod, node *framework.NodeInfo) int64 {
	cpu, mem := usedAfter(pod, node)
	free := func(used float64, have int64) float64 {
		if have <= 0 || used > float64(have) {
			return 0
		}
		return (float64(have) - used) / float64(have)
	}
	return int64(50 * (free(cpu, node.Allocatable.MilliCPU) + free(mem, node.Allocatable.Memory)))
}

// BalancedAllocation is the NodeResourcesBalancedAllocation score.
type BalancedAllocation struct{}

// Name implements framework.ScorePlugin.
func (BalancedAllocation) Name() string { return "NodeResourcesBalancedAllocation" }

// Score implements framework.ScorePlugin: 100 when CPU and memory would be
// used in the same proportion, less as they drift apart.
func (BalancedAllocation) Score(pod *corev1.Pod, node *framework.NodeInfo) int64 {
	if node.Allocatable.MilliCPU <= 0 || node.Allocatable.Memory <= 0 {
		return 0
	}
	cpu, mem := usedAfter(pod, node)
	fc := math.Min(cpu/float64(node.Allocatable.MilliCPU), 1)
	fm := math.Min(mem/float64(node.Allocatable.Memory), 1)
	return int64((1 - math.Abs(fc-fm)) * 100)
}
