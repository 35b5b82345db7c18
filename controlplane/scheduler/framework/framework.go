// Package framework is the scheduler's plugin contract: a snapshot of the
// nodes and the pods on them, Filter plugins that rule nodes out with a
// reason, and Score plugins that rank the nodes left; plugins that need the
// whole cluster (inter-pod affinity, topology spread) prepare per-decision
// state from the snapshot first (SnapshotFilterPlugin, SnapshotScorePlugin).
// Deciding where a pod goes is a pure function of a pod, a snapshot and the
// plugins (Schedule), so every rule can be tested without a cluster.
package framework

import (
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
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

// NodeInfo is one node and what the pods on it take. Besides the pods it
// keeps the indexes that let whole-cluster plugins count pods per topology
// domain without walking every pod: the pods grouped by namespace and labels
// (a selector is matched once per group), the pods per controller owner, and
// the pods that carry pod affinity terms.
type NodeInfo struct {
	Node        *corev1.Node
	Pods        []*corev1.Pod
	Requested   Resources
	Allocatable Resources
	// NonZeroRequested is Requested with the scoring defaults for pods that
	// request no CPU or memory (see NonZeroRequests).
	NonZeroRequested Resources
	// UsedPorts are the host ports taken, as "protocol/ip/port".
	UsedPorts map[string]bool
	// Groups are the node's pods by namespace and labels.
	Groups map[string]*PodGroup
	// Owners counts the node's pods by the uid of their controller owner.
	Owners map[types.UID]int
	// WithAffinity are the node's pods with pod affinity or anti-affinity.
	WithAffinity []*corev1.Pod
}

// PodGroup is a number of pods on one node sharing a namespace and labels.
type PodGroup struct {
	Namespace string
	Labels    labels.Set
	Count     int
}

// NewNodeInfo makes the NodeInfo of node with pods on it.
func NewNodeInfo(node *corev1.Node, pods ...*corev1.Pod) *NodeInfo {
	n := &NodeInfo{Node: node, Allocatable: FromList(node.Status.Allocatable), UsedPorts: map[string]bool{},
		Groups: map[string]*PodGroup{}, Owners: map[types.UID]int{}}
	for _, p := range pods {
		n.AddPod(p)
	}
	return n
}

func groupKey(p *corev1.Pod) string {
	keys := make([]string, 0, len(p.Labels))
	for k := range p.Labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(p.Namespace)
	for _, k := range keys {
		b.WriteByte(0)
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(p.Labels[k])
	}
	return b.String()
}

// HasPodAffinity reports a pod with pod affinity or anti-affinity terms.
func HasPodAffinity(p *corev1.Pod) bool {
	a := p.Spec.Affinity
	return a != nil && (a.PodAffinity != nil || a.PodAntiAffinity != nil)
}

// ControllerUID is the uid of the pod's controller owner, "" if none.
func ControllerUID(p *corev1.Pod) types.UID {
	if ref := metav1.GetControllerOfNoCopy(p); ref != nil {
		return ref.UID
	}
	return ""
}

// AddPod accounts for a pod placed on the node.
func (n *NodeInfo) AddPod(pod *corev1.Pod) {
	n.Pods = append(n.Pods, pod)
	n.Requested.Add(PodRequests(pod))
	n.NonZeroRequested.Add(NonZeroRequests(pod))
	for _, port := range HostPorts(pod) {
		n.UsedPorts[port] = true
	}
	key := groupKey(pod)
	g := n.Groups[key]
	if g == nil {
		g = &PodGroup{Namespace: pod.Namespace, Labels: labels.Set(pod.Labels)}
		n.Groups[key] = g
	}
	g.Count++
	if uid := ControllerUID(pod); uid != "" {
		n.Owners[uid]++
	}
	if HasPodAffinity(pod) {
		n.WithAffinity = append(n.WithAffinity, pod)
	}
}

// RemovePod stops accounting for a pod (matched by uid).
func (n *NodeInfo) RemovePod(pod *corev1.Pod) {
	for i, p := range n.Pods {
		if p.UID != pod.UID {
			continue
		}
		n.Pods = append(n.Pods[:i:i], n.Pods[i+1:]...)
		n.Requested.Sub(PodRequests(p))
		n.NonZeroRequested.Sub(NonZeroRequests(p))
		for _, port := range HostPorts(p) {
			delete(n.UsedPorts, port)
		}
		key := groupKey(p)
		if g := n.Groups[key]; g != nil {
			if g.Count--; g.Count <= 0 {
				delete(n.Groups, key)
			}
		}
		if uid := ControllerUID(p); uid != "" {
			if n.Owners[uid]--; n.Owners[uid] <= 0 {
				delete(n.Owners, uid)
			}
		}
		for j, a := range n.WithAffinity {
			if a.UID == p.UID {
				n.WithAffinity = append(n.WithAffinity[:j:j], n.WithAffinity[j+1:]...)
				break
			}
		}
		return
	}
}

// Clone copies the node's accounting, so that a caller (preemption) can
// remove pods from the copy without touching the snapshot.
func (n *NodeInfo) Clone() *NodeInfo {
	return NewNodeInfo(n.Node, n.Pods...)
}

// Scoring defaults for pods without requests: such pods still count, as
// upstream does for scoring, so that best-effort pods spread too.
const (
	DefaultMilliCPURequest = 100
	DefaultMemoryRequest   = 200 << 20
)

// NonZeroRequests is PodRequests with the scoring defaults in place of a
// zero CPU or memory request.
func NonZeroRequests(pod *corev1.Pod) Resources {
	r := PodRequests(pod)
	if r.MilliCPU == 0 {
		r.MilliCPU = DefaultMilliCPURequest
	}
	if r.Memory == 0 {
		r.Memory = DefaultMemoryRequest
	}
	return r
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

// FilterPlugin rules out nodes a pod cannot run on, one node at a time. It
// returns "" when the node fits, or the reason it does not in upstream's
// words (they are counted per reason in the FailedScheduling message).
type FilterPlugin interface {
	Name() string
	Filter(pod *corev1.Pod, node *NodeInfo) (reason string)
}

// SnapshotFilterPlugin is a filter that needs the whole cluster (pods on
// other nodes, counts per topology domain), as upstream's PreFilter+Filter
// with CycleState: PreFilter reads the snapshot once per decision and
// returns the filter of one node, which reads only what PreFilter computed.
type SnapshotFilterPlugin interface {
	Name() string
	// PreFilter returns the per-node filter of this decision; nil when
	// nothing in the snapshot can rule a node out for this pod.
	PreFilter(pod *corev1.Pod, snap *Snapshot) NodeFilter
}

// NodeFilter is one decision's filter of one node: "" or the reason.
type NodeFilter func(node *NodeInfo) (reason string)

// ScorePlugin ranks a node that passed every filter, 0 (worst) to 100 (best).
type ScorePlugin interface {
	Name() string
	Score(pod *corev1.Pod, node *NodeInfo) int64
}

// SnapshotScorePlugin ranks the nodes that passed every filter with the
// whole cluster in view, as upstream's PreScore+Score+NormalizeScore: one
// call per decision returns a score for each of nodes, in their order,
// already normalized to 0..100 across them.
type SnapshotScorePlugin interface {
	Name() string
	ScoreNodes(pod *corev1.Pod, snap *Snapshot, nodes []*NodeInfo) []int64
}

// WeightedScore is a score plugin with its weight: Plugin or Snapshot is set.
type WeightedScore struct {
	Plugin   ScorePlugin
	Snapshot SnapshotScorePlugin
	Weight   int64
}

// Plugins is the configured set of plugins. Filters run before
// SnapshotFilters, as upstream's node-local filters run before
// PodTopologySpread and InterPodAffinity; the first reason wins.
type Plugins struct {
	Filters         []FilterPlugin
	SnapshotFilters []SnapshotFilterPlugin
	Scores          []WeightedScore
}

// Cycle is one decision's filters, prepared from a pod and a snapshot.
type Cycle struct {
	pod     *corev1.Pod
	filters []FilterPlugin
	nodes   []NodeFilter
}

// Prepare runs the snapshot filters' PreFilter for pod over snap.
func (p Plugins) Prepare(pod *corev1.Pod, snap *Snapshot) *Cycle {
	c := &Cycle{pod: pod, filters: p.Filters}
	for _, f := range p.SnapshotFilters {
		if nf := f.PreFilter(pod, snap); nf != nil {
			c.nodes = append(c.nodes, nf)
		}
	}
	return c
}

// Filter runs every filter of the cycle against node: "" or the first reason.
func (c *Cycle) Filter(node *NodeInfo) string {
	for _, f := range c.filters {
		if reason := f.Filter(c.pod, node); reason != "" {
			return reason
		}
	}
	for _, f := range c.nodes {
		if reason := f(node); reason != "" {
			return reason
		}
	}
	return ""
}

// Fits runs every filter of pod against node and returns "" when the pod
// fits, or the first reason it does not. The whole-cluster filters see
// snap with node in place of the snapshot's node of the same name, so a
// caller may ask about a changed copy of a node (e.g. with pods removed,
// see NodeInfo.Clone) without changing snap. It prepares a cycle per call;
// to filter many unchanged nodes, Prepare once and call Cycle.Filter.
func (p Plugins) Fits(pod *corev1.Pod, snap *Snapshot, node *NodeInfo) string {
	return p.Prepare(pod, withNode(snap, node)).Filter(node)
}

// withNode is snap with node replacing the node of its name (or added).
func withNode(snap *Snapshot, node *NodeInfo) *Snapshot {
	out := &Snapshot{Nodes: make([]*NodeInfo, 0, len(snap.Nodes)+1)}
	found := false
	for _, n := range snap.Nodes {
		if n == node {
			return snap
		}
		if n.Node.Name == node.Node.Name {
			n, found = node, true
		}
		out.Nodes = append(out.Nodes, n)
	}
	if !found {
		out.Nodes = append(out.Nodes, node)
	}
	return out
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
	cycle := plugins.Prepare(pod, snap)
	feasible := make([]*NodeInfo, 0, len(snap.Nodes))
	for _, node := range snap.Nodes {
		if reason := cycle.Filter(node); reason != "" {
			fit.Reasons[reason]++
			continue
		}
		feasible = append(feasible, node)
	}
	if len(feasible) == 0 {
		return "", fit
	}
	if len(feasible) == 1 {
		return feasible[0].Node.Name, nil // as upstream, no scoring when one node fits
	}
	scores := make([]int64, len(feasible))
	for _, s := range plugins.Scores {
		if s.Snapshot != nil {
			for i, v := range s.Snapshot.ScoreNodes(pod, snap, feasible) {
				scores[i] += s.Weight * v
			}
			continue
		}
		for i, node := range feasible {
			scores[i] += s.Weight * s.Plugin.Score(pod, node)
		}
	}
	best := 0
	for i := 1; i < len(feasible); i++ {
		if scores[i] > scores[best] || scores[i] == scores[best] && better(feasible[i], feasible[best]) {
			best = i
		}
	}
	return feasible[best].Node.Name, nil
}

func better(a, b *NodeInfo) bool {
	if len(a.Pods) != len(b.Pods) {
		return len(a.Pods) < len(b.Pods)
	}
	return a.Node.Name < b.Node.Name
}
