package scheduler

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/navarch/navarch/controlplane/events"
	"github.com/navarch/navarch/controlplane/scheduler/framework"
	"github.com/navarch/navarch/controlplane/scheduler/preemption"
)

// snapshotFor is the snapshot pod is decided against: the cluster plus the
// pods nominated to nodes (waiting for their victims to go) that are at
// least as important as pod, so that the room preemption frees is kept for
// the preemptor rather than taken by a lower-priority pod meanwhile.
// Callers hold s.mu.
func (s *Scheduler) snapshotFor(pod *corev1.Pod) *framework.Snapshot {
	snap := s.snapshot()
	var byNode map[string][]*corev1.Pod
	for uid, nom := range s.nominated {
		n := nom.pod
		if uid == pod.UID || preemption.Priority(n) < preemption.Priority(pod) {
			continue
		}
		if byNode == nil {
			byNode = map[string][]*corev1.Pod{}
		}
		byNode[n.Status.NominatedNodeName] = append(byNode[n.Status.NominatedNodeName], n)
	}
	if byNode == nil {
		return snap
	}
	for i, info := range snap.Nodes {
		pods := byNode[info.Node.Name]
		if len(pods) == 0 {
			continue
		}
		c := info.Clone()
		for _, p := range pods {
			c.AddPod(p)
		}
		snap.Nodes[i] = c
	}
	return snap
}

// nomination is a pending pod waiting for room on a node: a copy with
// status.nominatedNodeName (and, for counting, spec.nodeName) set to it.
// It is confirmed once the API shows it; until then a copy of the pod
// without the field is older news, not a withdrawal.
type nomination struct {
	pod       *corev1.Pod
	confirmed bool
}

// nominate records that pod waits for node, as counted by snapshotFor.
// Callers hold s.mu.
func (s *Scheduler) nominate(pod *corev1.Pod, node string, confirmed bool) {
	n := pod.DeepCopy()
	n.Spec.NodeName = node
	n.Status.NominatedNodeName = node
	s.nominated[pod.UID] = &nomination{pod: n, confirmed: confirmed}
}

// nominationChanged follows a pending pod's status.nominatedNodeName as
// the API shows it (written by this scheduler or a previous leader).
// Callers hold s.mu.
func (s *Scheduler) nominationChanged(p *corev1.Pod) {
	node := p.Status.NominatedNodeName
	cur, ok := s.nominated[p.UID]
	switch {
	case node != "" && (!ok || cur.pod.Status.NominatedNodeName != node):
		s.nominate(p, node, true)
	case node != "":
		cur.confirmed = true
	case ok && cur.confirmed:
		delete(s.nominated, p.UID)
	}
}

// withNomination is pod as this scheduler knows it: with the node it was
// nominated to, even before the status update comes back. Callers hold s.mu.
func (s *Scheduler) withNomination(pod *corev1.Pod) *corev1.Pod {
	n, ok := s.nominated[pod.UID]
	if !ok || n.pod.Status.NominatedNodeName == pod.Status.NominatedNodeName {
		return pod
	}
	p := pod.DeepCopy()
	p.Status.NominatedNodeName = n.pod.Status.NominatedNodeName
	return p
}

// decision is a preemption to carry out: the candidate, and the pods
// nominated to its node that the preemptor outranks.
type decision struct {
	*preemption.Candidate
	outranked []*corev1.Pod
}

// tryPreemption runs after pod fit nowhere in snap: it returns the
// preemption to carry out (pod is already nominated), or nil, and the
// FailedScheduling message, which says why preemption cannot help when it
// cannot, as upstream's does. Callers hold s.mu.
func (s *Scheduler) tryPreemption(pod *corev1.Pod, snap *framework.Snapshot, fit error) (*decision, string) {
	msg := fit.Error()
	if ok, why := preemption.Eligible(pod, snap); !ok {
		return nil, msg + " preemption: " + why
	}
	c, why := preemption.Select(pod, snap, s.plugins)
	if c == nil {
		return nil, msg + " preemption: " + why.Error()
	}
	d := &decision{Candidate: c}
	s.nominate(pod, c.Node, false)
	// Pods nominated to the node with less priority lose their place: the
	// room they waited for is the preemptor's now.
	for uid, n := range s.nominated {
		if uid != pod.UID && n.pod.Status.NominatedNodeName == c.Node && preemption.Priority(n.pod) < preemption.Priority(pod) {
			delete(s.nominated, uid)
			d.outranked = append(d.outranked, n.pod)
		}
	}
	return d, msg
}

// preempt carries a decision out through the API: each victim is marked
// DisruptionTarget (reason PreemptionByScheduler) and deleted gracefully
// with a Preempted event, outranked nominations are cleared, and pod's
// status.nominatedNodeName names the node. The pod itself is scheduled
// when the victims are gone (their deletion retries it).
func (s *Scheduler) preempt(ctx context.Context, pod *corev1.Pod, d *decision) {
	slog.Info("preempting", "pod", podKey(pod), "node", d.Node, "victims", len(d.Victims))
	for _, v := range d.Victims {
		s.evict(ctx, pod, v, d.Node)
	}
	for _, n := range d.outranked {
		s.setNominatedNode(ctx, n, "")
	}
	s.setNominatedNode(ctx, pod, d.Node)
}

func (s *Scheduler) evict(ctx context.Context, preemptor, victim *corev1.Pod, node string) {
	pods := s.client.CoreV1().Pods(victim.Namespace)
	now := metav1.Now()
	cond := corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: corev1.PodReasonPreemptionByScheduler,
		Message: preemptor.Spec.SchedulerName + ": preempting to accommodate a higher priority pod", LastTransitionTime: now}
	patch, _ := json.Marshal(map[string]interface{}{"status": map[string]interface{}{"conditions": []corev1.PodCondition{cond}}})
	if _, err := pods.Patch(ctx, victim.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil && !apierrors.IsNotFound(err) {
		slog.Warn("cannot mark preemption victim", "pod", podKey(victim), "err", err)
	}
	err := pods.Delete(ctx, victim.Name, metav1.DeleteOptions{Preconditions: metav1.NewUIDPreconditions(string(victim.UID))})
	if err != nil {
		if !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			slog.Warn("cannot delete preemption victim", "pod", podKey(victim), "err", err)
		}
		return
	}
	related := events.Ref("v1", "Pod", preemptor)
	events.NewRecorder(s.client, Name).Emit(ctx, &corev1.Event{InvolvedObject: events.Ref("v1", "Pod", victim), Related: &related,
		Reason: "Preempted", Action: "Preempting", Type: corev1.EventTypeNormal,
		Message: fmt.Sprintf("Preempted by pod %s on node %s", preemptor.UID, node)})
}

// setNominatedNode writes status.nominatedNodeName ("" clears it).
func (s *Scheduler) setNominatedNode(ctx context.Context, pod *corev1.Pod, node string) {
	var value interface{} = node
	if node == "" {
		value = nil
	}
	patch, _ := json.Marshal(map[string]interface{}{"status": map[string]interface{}{"nominatedNodeName": value}})
	if _, err := s.client.CoreV1().Pods(pod.Namespace).Patch(ctx, pod.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status"); err != nil && !apierrors.IsNotFound(err) {
		slog.Warn("cannot set nominated node", "pod", podKey(pod), "node", node, "err", err)
	}
}
