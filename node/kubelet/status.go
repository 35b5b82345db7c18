package kubelet

import (
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// This file computes a pod's status from what the runtime reports, as
// upstream's kubelet does (generateAPIPodStatus and getPhase).

func ts(nanos int64) metav1.Time {
	if nanos == 0 {
		return metav1.Time{}
	}
	// The API keeps seconds; rounding here keeps repeated syncs equal.
	return metav1.NewTime(time.Unix(0, nanos).Truncate(time.Second))
}

func (k *Kubelet) terminated(cs *runtimeapi.ContainerStatus) *corev1.ContainerStateTerminated {
	reason := cs.GetReason()
	if reason == "" {
		reason = "Error"
		if cs.GetExitCode() == 0 {
			reason = "Completed"
		}
	}
	return &corev1.ContainerStateTerminated{
		ExitCode: cs.GetExitCode(), Reason: reason, Message: cs.GetMessage(),
		StartedAt: ts(cs.GetStartedAt()), FinishedAt: ts(cs.GetFinishedAt()),
		ContainerID: k.containerID(cs.GetId()),
	}
}

func (k *Kubelet) containerID(id string) string { return k.runtimeName + "://" + id }

// containerStatus is one container's status; willRestart says whether an
// exited container is to run again (it then shows as waiting).
func (k *Kubelet) containerStatus(pod *corev1.Pod, c *corev1.Container, st *podState, willRestart bool, initBlocked bool) corev1.ContainerStatus {
	out := corev1.ContainerStatus{Name: c.Name, Image: c.Image}
	k.mu.Lock()
	w, hasWait := k.waiting[backoffKey(pod, c.Name)]
	k.mu.Unlock()
	cs := st.latest(c.Name)
	if prev := st.previous(c.Name); prev != nil && prev.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED {
		out.LastTerminationState.Terminated = k.terminated(prev)
	}
	waiting := func(reason, msg string) {
		if hasWait {
			reason, msg = w.reason, w.message
		}
		out.State.Waiting = &corev1.ContainerStateWaiting{Reason: reason, Message: msg}
	}
	if cs == nil {
		if initBlocked {
			waiting("PodInitializing", "")
		} else {
			waiting("ContainerCreating", "")
		}
		return out
	}
	out.RestartCount = int32(cs.GetMetadata().GetAttempt())
	out.ImageID = cs.GetImageRef()
	out.ContainerID = k.containerID(cs.GetId())
	switch cs.GetState() {
	case runtimeapi.ContainerState_CONTAINER_RUNNING:
		out.State.Running = &corev1.ContainerStateRunning{StartedAt: ts(cs.GetStartedAt())}
		// Without probes a running container is started and ready; with
		// them, once they succeeded.
		r := k.result(cs.GetId())
		started := c.StartupProbe == nil || r.started
		out.Started = ptrTo(started)
		out.Ready = started && (c.ReadinessProbe == nil || r.ready)
	case runtimeapi.ContainerState_CONTAINER_EXITED:
		t := k.terminated(cs)
		if willRestart && hasWait {
			out.State.Waiting = &corev1.ContainerStateWaiting{Reason: w.reason, Message: w.message}
			out.LastTerminationState = corev1.ContainerState{Terminated: t}
		} else {
			out.State.Terminated = t
		}
		out.Started = ptrTo(false)
	default:
		waiting("ContainerCreating", "")
		out.Started = ptrTo(false)
	}
	return out
}

func ptrTo[T any](v T) *T { return &v }

// podStatus computes the pod's status. terminal is set for a pod being
// deleted whose containers have been stopped: it then ends Succeeded or
// Failed, as upstream's kubelet reports deleted pods.
func (k *Kubelet) podStatus(pod *corev1.Pod, st *podState, terminal bool) corev1.PodStatus {
	s := *pod.Status.DeepCopy()
	s.HostIP = k.nodeIP
	s.HostIPs = []corev1.HostIP{{IP: k.nodeIP}}
	if pod.Spec.HostNetwork {
		s.PodIP, s.PodIPs = k.nodeIP, []corev1.PodIP{{IP: k.nodeIP}}
	} else if st.ip != "" {
		s.PodIP, s.PodIPs = st.ip, []corev1.PodIP{{IP: st.ip}}
	}
	if s.StartTime == nil {
		now := metav1.NewTime(time.Now().Truncate(time.Second))
		s.StartTime = &now
	}
	s.QOSClass = qosClass(pod)

	// Init containers: done when each exited 0, in order.
	// Sidecars (restartable init containers) count as done once started.
	initDone, initFailed := true, false
	var pendingInit, unready []string
	s.InitContainerStatuses = nil
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		cs := st.latest(c.Name)
		exited := cs != nil && cs.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED
		done := exited && cs.GetExitCode() == 0
		failed := exited && cs.GetExitCode() != 0
		restart := failed && pod.Spec.RestartPolicy != corev1.RestartPolicyNever
		if isSidecar(c) {
			done, failed, restart = sidecarStarted(st, c.Name), false, exited
		}
		cst := k.containerStatus(pod, c, st, restart && !terminal, !initDone)
		s.InitContainerStatuses = append(s.InitContainerStatuses, cst)
		if failed && !restart {
			initFailed = true
		}
		if !done {
			initDone = false
			// Upstream lists every unfinished init container in the message.
			pendingInit = append(pendingInit, c.Name)
		}
		if isSidecar(c) && !cst.Ready {
			unready = append(unready, c.Name)
		}
	}

	var running, waiting, succeeded, failed int
	s.ContainerStatuses = nil
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		cs := st.latest(c.Name)
		restart := !terminal && cs != nil && cs.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED && shouldRestart(pod, cs)
		cst := k.containerStatus(pod, c, st, restart, !initDone)
		if terminal && cst.State.Terminated == nil && cst.State.Running == nil {
			// A deleted pod's container that never ran.
			cst.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "ContainerStatusUnknown",
				Message: "The container could not be located when the pod was terminated"}}
		}
		s.ContainerStatuses = append(s.ContainerStatuses, cst)
		switch {
		case cst.State.Running != nil:
			running++
		case cst.State.Terminated != nil && cst.State.Terminated.ExitCode == 0:
			succeeded++
		case cst.State.Terminated != nil:
			failed++
		case cst.LastTerminationState.Terminated != nil:
			// Waiting to restart after running: counts as stopped.
			if cst.LastTerminationState.Terminated.ExitCode == 0 {
				succeeded++
			} else {
				failed++
			}
		default:
			waiting++
		}
		if !cst.Ready {
			unready = append(unready, c.Name)
		}
	}

	switch {
	case initFailed:
		s.Phase = corev1.PodFailed
	case !initDone && !terminal:
		s.Phase = corev1.PodPending
	case terminal:
		if failed > 0 || !initDone {
			s.Phase = corev1.PodFailed
		} else {
			s.Phase = corev1.PodSucceeded
		}
	case waiting > 0:
		s.Phase = corev1.PodPending
	case running > 0:
		s.Phase = corev1.PodRunning
	case pod.Spec.RestartPolicy == corev1.RestartPolicyAlways:
		// All stopped, and all will start again.
		s.Phase = corev1.PodRunning
	case failed > 0 && pod.Spec.RestartPolicy == corev1.RestartPolicyNever:
		s.Phase = corev1.PodFailed
	case failed > 0:
		s.Phase = corev1.PodRunning // OnFailure restarts them
	default:
		s.Phase = corev1.PodSucceeded
	}

	// Conditions.
	setCond := func(t corev1.PodConditionType, ok bool, reason, msg string) {
		c := corev1.PodCondition{Type: t, Status: corev1.ConditionFalse, Reason: reason, Message: msg}
		if ok {
			c.Status, c.Reason, c.Message = corev1.ConditionTrue, "", ""
		}
		for i := range s.Conditions {
			if s.Conditions[i].Type == t {
				if s.Conditions[i].Status == c.Status {
					c.LastTransitionTime = s.Conditions[i].LastTransitionTime
				} else {
					c.LastTransitionTime = metav1.NewTime(time.Now().Truncate(time.Second))
				}
				s.Conditions[i] = c
				return
			}
		}
		c.LastTransitionTime = metav1.NewTime(time.Now().Truncate(time.Second))
		s.Conditions = append(s.Conditions, c)
	}
	finished := s.Phase == corev1.PodSucceeded || s.Phase == corev1.PodFailed
	setCond(corev1.PodReadyToStartContainers, st.sandbox != nil && !finished, "", "")
	if initDone || finished && len(pendingInit) == 0 {
		setCond(corev1.PodInitialized, true, "", "")
	} else {
		setCond(corev1.PodInitialized, false, "ContainersNotInitialized", fmt.Sprintf("containers with incomplete status: [%s]", strings.Join(pendingInit, " ")))
	}
	switch {
	case finished:
		setCond(corev1.ContainersReady, false, "PodCompleted", "")
		setCond(corev1.PodReady, false, "PodCompleted", "")
	case len(unready) > 0:
		msg := fmt.Sprintf("containers with unready status: [%s]", strings.Join(unready, " "))
		setCond(corev1.ContainersReady, false, "ContainersNotReady", msg)
		setCond(corev1.PodReady, false, "ContainersNotReady", msg)
	default:
		setCond(corev1.ContainersReady, true, "", "")
		setCond(corev1.PodReady, true, "", "")
	}
	setCond(corev1.PodScheduled, true, "", "")
	// Upstream's order, so that kubectl shows them as it does there.
	order := map[corev1.PodConditionType]int{corev1.PodReadyToStartContainers: 0, corev1.PodInitialized: 1, corev1.PodReady: 2, corev1.ContainersReady: 3, corev1.PodScheduled: 4}
	sort.SliceStable(s.Conditions, func(i, j int) bool {
		oi, ok1 := order[s.Conditions[i].Type]
		oj, ok2 := order[s.Conditions[j].Type]
		if !ok1 {
			oi = 5
		}
		if !ok2 {
			oj = 5
		}
		return oi < oj
	})
	return s
}

// statusEqual compares statuses as the API stores them.
func statusEqual(a, b corev1.PodStatus) bool {
	return equality.Semantic.DeepEqual(a, b)
}

// qosClass is upstream's QoS class: Guaranteed when every container has
// cpu and memory limits equal to its requests, BestEffort without any
// requests or limits, else Burstable.
func qosClass(pod *corev1.Pod) corev1.PodQOSClass {
	all := append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...)
	any, guaranteed := false, true
	for _, c := range all {
		if len(c.Resources.Requests)+len(c.Resources.Limits) > 0 {
			any = true
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			lim, ok := c.Resources.Limits[r]
			if !ok {
				guaranteed = false
				continue
			}
			if req, ok := c.Resources.Requests[r]; ok && req.Cmp(lim) != 0 {
				guaranteed = false
			}
		}
	}
	switch {
	case !any:
		return corev1.PodQOSBestEffort
	case guaranteed:
		return corev1.PodQOSGuaranteed
	}
	return corev1.PodQOSBurstable
}
