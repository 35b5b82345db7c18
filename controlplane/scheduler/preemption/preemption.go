// Package preemption decides, for a pod that fits on no node, which
// lower-priority pods to evict and from which node so that it fits, as
// upstream's DefaultPreemption plugin does. It is a pure function of the
// pod, a snapshot and the plugins; the scheduler carries the decision out
// (deleting the victims, nominating the node).
package preemption

import (
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/navarch/navarch/controlplane/scheduler/framework"
)

// Candidate is a node on which deleting Victims makes the pod fit.
type Candidate struct {
	Node    string
	Victims []*corev1.Pod // most important first
}

// Priority is a pod's priority; pods admitted without one count as 0.
func Priority(p *corev1.Pod) int32 {
	if p.Spec.Priority != nil {
		return *p.Spec.Priority
	}
	return 0
}

// Eligible says whether pod may preempt others now, and if not why, in
// upstream's words. A pod with preemptionPolicy Never never does; a pod
// whose nominated node still has a lower-priority pod terminating waits for
// it rather than preempting again (its victims are on their way out).
func Eligible(pod *corev1.Pod, snap *framework.Snapshot) (bool, string) {
	if pod.Spec.PreemptionPolicy != nil && *pod.Spec.PreemptionPolicy == corev1.PreemptNever {
		return false, "not eligible due to preemptionPolicy=Never."
	}
	if nominated := pod.Status.NominatedNodeName; nominated != "" {
		for _, n := range snap.Nodes {
			if n.Node.Name != nominated {
				continue
			}
			for _, p := range n.Pods {
				if p.DeletionTimestamp != nil && Priority(p) < Priority(pod) {
					return false, "not eligible due to a terminating pod on the nominated node."
				}
			}
		}
	}
	return true, ""
}

// Reasons a node is no candidate, in upstream's words: no removal of pods
// could make the pod fit there (it does not fit the empty node), or the
// pods whose removal would are not of lower priority.
const (
	NotHelpful = "Preemption is not helpful for scheduling"
	NoVictims  = "No preemption victims found for incoming pod"
)

// Select returns the best node to preempt on and its victims, or nil and
// why each node is no candidate (rendered as upstream's "preemption: 0/N
// nodes are available: ..." sentence) when removing lower-priority pods
// makes pod fit nowhere. Among candidates it
// prefers, in upstream's order: the lowest priority of the most important
// victim, then the lowest sum of victims' priorities, then the fewest
// victims, then the latest start among the most important victims, then
// the first node by name.
func Select(pod *corev1.Pod, snap *framework.Snapshot, plugins framework.Plugins) (*Candidate, *framework.FitError) {
	nodes := append([]*framework.NodeInfo(nil), snap.Nodes...)
	sort.Slice(nodes, func(i, j int) bool { return nodes[i].Node.Name < nodes[j].Node.Name })
	var best *Candidate
	why := &framework.FitError{NumNodes: len(nodes), Reasons: map[string]int{}}
	for _, n := range nodes {
		victims, ok := victimsOn(pod, snap, plugins, n)
		if !ok {
			if plugins.Fits(pod, snap, framework.NewNodeInfo(n.Node)) != "" {
				why.Reasons[NotHelpful]++
			} else {
				why.Reasons[NoVictims]++
			}
			continue
		}
		c := &Candidate{Node: n.Node.Name, Victims: victims}
		if best == nil || better(c, best) {
			best = c
		}
	}
	if best == nil {
		return nil, why
	}
	return best, nil
}

// victimsOn finds the fewest lower-priority pods of node whose removal
// lets pod fit: all of them are removed, then each is given back, most
// important first, if pod still fits without its room.
func victimsOn(pod *corev1.Pod, snap *framework.Snapshot, plugins framework.Plugins, node *framework.NodeInfo) ([]*corev1.Pod, bool) {
	trial := node.Clone()
	var lower []*corev1.Pod
	for _, p := range node.Pods {
		if Priority(p) < Priority(pod) {
			lower = append(lower, p)
			trial.RemovePod(p)
		}
	}
	if len(lower) == 0 || plugins.Fits(pod, snap, trial) != "" {
		return nil, false
	}
	sort.SliceStable(lower, func(i, j int) bool { return moreImportant(lower[i], lower[j]) })
	var victims []*corev1.Pod
	for _, p := range lower {
		trial.AddPod(p)
		if plugins.Fits(pod, snap, trial) != "" {
			trial.RemovePod(p)
			victims = append(victims, p)
		}
	}
	if len(victims) == 0 {
		return nil, false // pod fits as the node is: nothing to preempt here
	}
	return victims, true
}

// moreImportant orders pods as upstream does when choosing whom to spare:
// higher priority first, then the one running longer.
func moreImportant(a, b *corev1.Pod) bool {
	if pa, pb := Priority(a), Priority(b); pa != pb {
		return pa > pb
	}
	return startTime(a).Before(startTime(b))
}

func startTime(p *corev1.Pod) time.Time {
	if p.Status.StartTime != nil {
		return p.Status.StartTime.Time
	}
	return p.CreationTimestamp.Time
}

// better says whether candidate a beats b (see Select for the order).
func better(a, b *Candidate) bool {
	if ha, hb := Priority(a.Victims[0]), Priority(b.Victims[0]); ha != hb {
		return ha < hb
	}
	if sa, sb := prioritySum(a.Victims), prioritySum(b.Victims); sa != sb {
		return sa < sb
	}
	if len(a.Victims) != len(b.Victims) {
		return len(a.Victims) < len(b.Victims)
	}
	// Evicting pods that started later loses less work.
	return earliestTop(a.Victims).After(earliestTop(b.Victims))
}

// prioritySum adds the victims' priorities shifted to be non-negative, so
// that a victim of negative priority still counts as a cost, as upstream.
func prioritySum(victims []*corev1.Pod) int64 {
	var sum int64
	for _, v := range victims {
		sum += int64(Priority(v)) + (1 << 31)
	}
	return sum
}

// earliestTop is the earliest start among the victims of the highest priority.
func earliestTop(victims []*corev1.Pod) time.Time {
	top := Priority(victims[0])
	t := startTime(victims[0])
	for _, v := range victims[1:] {
		if Priority(v) == top && startTime(v).Before(t) {
			t = startTime(v)
		}
	}
	return t
}
