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
	"iter"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
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
	// byLabel lists the groups carrying each label "key=value", so that a
	// selector that requires one label looks at those groups only.
	byLabel map[string][]*PodGroup
	// Owners counts the node's pods by the uid of their controller owner.
	Owners map[types.UID]int
	// WithAffinity are the node's pods with pod affinity or anti-affinity,
	// with their terms resolved once, when the pod was added.
	WithAffinity []*AffinityInfo
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
		Groups: map[string]*PodGroup{}, byLabel: map[string][]*PodGroup{}, Owners: map[types.UID]int{}}
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

// GroupsWith yields the node's pod groups that carry label ("key=value"),
// or all its groups when label is "". Callers still match their selector:
// the label only narrows the candidates (see IndexLabel).
func (n *NodeInfo) GroupsWith(label string) iter.Seq[*PodGroup] {
	return func(yield func(*PodGroup) bool) {
		if label == "" {
			for _, g := range n.Groups {
				if !yield(g) {
					return
				}
			}
			return
		}
		for _, g := range n.byLabel[label] {
			if !yield(g) {
				return
			}
		}
	}
}

// IndexLabel is a label ("key=value") that every pod sel selects carries,
// from its matchLabels or a single-valued In expression, or "" if none.
func IndexLabel(sel *metav1.LabelSelector) string {
	if sel == nil {
		return ""
	}
	best := ""
	for k, v := range sel.MatchLabels {
		if l := k + "=" + v; best == "" || l < best {
			best = l // the smallest, so that the choice is stable
		}
	}
	if best != "" {
		return best
	}
	for _, e := range sel.MatchExpressions {
		if e.Operator == metav1.LabelSelectorOpIn && len(e.Values) == 1 {
			return e.Key + "=" + e.Values[0]
		}
	}
	return ""
}

// HasPodAffinity reports a pod with pod affinity or anti-affinity terms.
func HasPodAffinity(p *corev1.Pod) bool {
	a := p.Spec.Affinity
	return a != nil && (a.PodAffinity != nil || a.PodAntiAffinity != nil)
}

// AffinityTerm is a pod (anti-)affinity term resolved against the pod
// that carries it: the namespaces it looks in and its selector with
// matchLabelKeys/mismatchLabelKeys applied.
type AffinityTerm struct {
	AllNamespaces bool
	Namespaces    map[string]bool
	Selector      labels.Selector
	// IndexLabel narrows the pods to match (see NodeInfo.GroupsWith).
	IndexLabel  string
	TopologyKey string
	// Weight is a preferred term's weight (0 for a required term).
	Weight int64
}

// NewAffinityTerm resolves t of owner: no namespaces and no
// namespaceSelector mean the owner's namespace, an empty namespaceSelector
// all namespaces. A namespaceSelector with terms would need the namespaces'
// labels, which the snapshot does not carry: only the listed namespaces are
// used then. A nil labelSelector matches nothing, as upstream.
func NewAffinityTerm(owner *corev1.Pod, t *corev1.PodAffinityTerm, weight int64) AffinityTerm {
	out := AffinityTerm{TopologyKey: t.TopologyKey, Weight: weight, Namespaces: map[string]bool{}, IndexLabel: IndexLabel(t.LabelSelector)}
	for _, ns := range t.Namespaces {
		out.Namespaces[ns] = true
	}
	switch {
	case t.NamespaceSelector != nil && len(t.NamespaceSelector.MatchLabels) == 0 && len(t.NamespaceSelector.MatchExpressions) == 0:
		out.AllNamespaces = true
	case len(t.Namespaces) == 0 && t.NamespaceSelector == nil:
		out.Namespaces[owner.Namespace] = true
	}
	sel, err := metav1.LabelSelectorAsSelector(t.LabelSelector)
	if err != nil || t.LabelSelector == nil {
		out.Selector = labels.Nothing()
		return out
	}
	// matchLabelKeys / mismatchLabelKeys take their values from the owner.
	for _, k := range t.MatchLabelKeys {
		if v, ok := owner.Labels[k]; ok {
			if r, err := labels.NewRequirement(k, selection.In, []string{v}); err == nil {
				sel = sel.Add(*r)
			}
		}
	}
	for _, k := range t.MismatchLabelKeys {
		if v, ok := owner.Labels[k]; ok {
			if r, err := labels.NewRequirement(k, selection.NotIn, []string{v}); err == nil {
				sel = sel.Add(*r)
			}
		}
	}
	out.Selector = sel
	return out
}

// Matches reports whether pods of namespace with labels set are selected.
func (t *AffinityTerm) Matches(namespace string, set labels.Set) bool {
	return (t.AllNamespaces || t.Namespaces[namespace]) && t.Selector.Matches(set)
}

// MatchesPod reports whether the term selects p. The index label rules
// most pods out with one lookup, which matters when every placed pod's
// anti-affinity is checked against the incoming pod.
func (t *AffinityTerm) MatchesPod(p *corev1.Pod) bool {
	if k, v, ok := strings.Cut(t.IndexLabel, "="); ok {
		if got, has := p.Labels[k]; !has || got != v {
			return false
		}
	}
	return t.Matches(p.Namespace, labels.Set(p.Labels))
}

// AffinityInfo is a pod with its pod affinity and anti-affinity terms
// resolved (preferred terms carry their weights, all positive).
type AffinityInfo struct {
	Pod                              *corev1.Pod
	RequiredAffinity, RequiredAnti   []AffinityTerm
	PreferredAffinity, PreferredAnti []AffinityTerm
}

// NewAffinityInfo resolves the pod affinity terms of p.
func NewAffinityInfo(p *corev1.Pod) *AffinityInfo {
	info := &AffinityInfo{Pod: p}
	a := p.Spec.Affinity
	if a == nil {
		return info
	}
	required := func(ts []corev1.PodAffinityTerm) []AffinityTerm {
		var out []AffinityTerm
		for i := range ts {
			out = append(out, NewAffinityTerm(p, &ts[i], 0))
		}
		return out
	}
	preferred := func(ts []corev1.WeightedPodAffinityTerm) []AffinityTerm {
		var out []AffinityTerm
		for i := range ts {
			out = append(out, NewAffinityTerm(p, &ts[i].PodAffinityTerm, int64(ts[i].Weight)))
		}
		return out
	}
	if a.PodAffinity != nil {
		info.RequiredAffinity = required(a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution)
		info.PreferredAffinity = preferred(a.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution)
	}
	if a.PodAntiAffinity != nil {
		info.RequiredAnti = required(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution)
		info.PreferredAnti = preferred(a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution)
	}
	return info
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
		for k, v := range pod.Labels {
			n.byLabel[k+"="+v] = append(n.byLabel[k+"="+v], g)
		}
	}
	g.Count++
	if uid := ControllerUID(pod); uid != "" {
		n.Owners[uid]++
	}
	if HasPodAffinity(pod) {
		n.WithAffinity = append(n.WithAffinity, NewAffinityInfo(pod))
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
				for k, v := range g.Labels {
					l := k + "=" + v
					n.byLabel[l] = slices.DeleteFunc(n.byLabel[l], func(o *PodGroup) bool { return o == g })
					if len(n.byLabel[l]) == 0 {
						delete(n.byLabel, l)
					}
				}
			}
		}
		if uid := ControllerUID(p); uid != "" {
			if n.Owners[uid]--; n.Owners[uid] <= 0 {
				delete(n.Owners, uid)
			}
		}
		for j, a := range n.WithAffinity {
			if a.Pod.UID == p.UID {
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
