package kubelet

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Upstream's crash-loop back-off doubles up to 5 min and is reset by a run
// of 10 min.
const (
	resyncInterval = time.Minute
	backoffMax     = 5 * time.Minute
	backoffReset   = 10 * time.Minute
)

// podState is what the runtime has of one pod.
type podState struct {
	sandboxes []*runtimeapi.PodSandbox // newest first
	// sandbox is the newest ready sandbox (nil: none), ip its address.
	sandbox *runtimeapi.PodSandbox
	ip      string
	// all is every container of the pod, in any sandbox.
	all []*runtimeapi.Container
	// byName holds the statuses of the current sandbox's containers by
	// container name, newest attempt first.
	byName map[string][]*runtimeapi.ContainerStatus
}

func (st *podState) latest(name string) *runtimeapi.ContainerStatus {
	if l := st.byName[name]; len(l) > 0 {
		return l[0]
	}
	return nil
}

func (st *podState) previous(name string) *runtimeapi.ContainerStatus {
	if l := st.byName[name]; len(l) > 1 {
		return l[1]
	}
	return nil
}

// observe reads the pod's sandboxes and containers from the runtime.
func (k *Kubelet) observe(ctx context.Context, uid types.UID) (*podState, error) {
	sel := map[string]string{labelPodUID: string(uid)}
	sbs, err := k.rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: sel}})
	if err != nil {
		return nil, err
	}
	st := &podState{sandboxes: sbs.GetItems(), byName: map[string][]*runtimeapi.ContainerStatus{}}
	sort.Slice(st.sandboxes, func(i, j int) bool { return st.sandboxes[i].GetCreatedAt() > st.sandboxes[j].GetCreatedAt() })
	for _, sb := range st.sandboxes {
		if sb.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY {
			st.sandbox = sb
			break
		}
	}
	if st.sandbox != nil {
		s, err := k.rt.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: st.sandbox.GetId()})
		if err != nil {
			return nil, err
		}
		st.ip = s.GetStatus().GetNetwork().GetIp()
	}
	// By sandbox: a runtime finds a sandbox's containers without looking at
	// every container of the node (the built-in one computes each state).
	for _, sb := range st.sandboxes {
		cs, err := k.rt.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: sb.GetId(), LabelSelector: sel}})
		if err != nil {
			return nil, err
		}
		st.all = append(st.all, cs.GetContainers()...)
	}
	// The containers of the ready sandbox, or else of the newest one: a
	// finished pod's stopped sandbox still tells how its containers ended.
	cur := st.sandbox
	if cur == nil && len(st.sandboxes) > 0 {
		cur = st.sandboxes[0]
	}
	for _, c := range st.all {
		if cur == nil || c.GetPodSandboxId() != cur.GetId() {
			continue
		}
		s, err := k.rt.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.GetId()})
		if err != nil {
			return nil, err
		}
		name := c.GetMetadata().GetName()
		st.byName[name] = append(st.byName[name], s.GetStatus())
	}
	for _, l := range st.byName {
		sort.Slice(l, func(i, j int) bool {
			if l[i].GetMetadata().GetAttempt() != l[j].GetMetadata().GetAttempt() {
				return l[i].GetMetadata().GetAttempt() > l[j].GetMetadata().GetAttempt()
			}
			return l[i].GetCreatedAt() > l[j].GetCreatedAt()
		})
	}
	return st, nil
}

// syncPod converges one pod; pod is nil when it is no longer bound here. It
// returns when to sync again (0: on the next event) and whether the pod is
// gone entirely, so its worker may end.
func (k *Kubelet) syncPod(ctx context.Context, uid types.UID, pod *corev1.Pod) (time.Duration, bool) {
	st, err := k.observe(ctx, uid)
	if err != nil {
		if ctx.Err() == nil {
			slog.Warn("kubelet cannot read pod from the runtime", "uid", uid, "err", err)
		}
		return 2 * time.Second, false
	}
	if pod == nil || pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		k.stopProbes(uid, nil)
	}
	if pod == nil {
		if err := k.teardown(ctx, st, recordedGrace(st)); err != nil {
			slog.Warn("kubelet cannot remove pod", "uid", uid, "err", err)
			return 2 * time.Second, false
		}
		// The cgroup first: the directory marks the pod as ours until then.
		if err := k.removePodCgroup(uid); err != nil {
			slog.Warn("kubelet cannot remove pod cgroup", "uid", uid, "err", err)
			return 2 * time.Second, false
		}
		if err := removePodDir(k.podDir(uid)); err != nil {
			slog.Warn("kubelet cannot remove pod directory", "uid", uid, "err", err)
			return 2 * time.Second, false
		}
		return 0, true
	}
	if pod.DeletionTimestamp != nil {
		return k.terminate(ctx, pod, st), false
	}
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		// Finished: nothing runs again, and the pod's address goes back.
		k.stopAll(ctx, pod, st, gracePeriod(pod))
		for _, sb := range st.sandboxes {
			if sb.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY {
				if _, err := k.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.GetId()}); err != nil {
					slog.Warn("kubelet cannot stop sandbox", "pod", pod.Namespace+"/"+pod.Name, "err", err)
					return 2 * time.Second, false
				}
			}
		}
		// As upstream, a finished pod's cgroup goes once nothing runs in
		// it; its directory (logs) stays until the pod is deleted.
		if err := k.removePodCgroup(pod.UID); err != nil {
			slog.Warn("kubelet cannot remove pod cgroup", "pod", pod.Namespace+"/"+pod.Name, "err", err)
			return 2 * time.Second, false
		}
		return 0, false
	}

	if d := pod.Spec.ActiveDeadlineSeconds; d != nil && pod.Status.StartTime != nil {
		if time.Until(pod.Status.StartTime.Add(time.Duration(*d)*time.Second)) <= 0 {
			return k.deadlineExceeded(ctx, pod, st), false
		}
	}
	again := time.Duration(0)
	// A restartPolicy Never pod whose sandbox died after its containers ran
	// is not run again (upstream neither): its status says how they ended.
	rerun := pod.Spec.RestartPolicy != corev1.RestartPolicyNever || len(st.byName) == 0
	if st.sandbox == nil && rerun {
		if d, ok := k.createSandbox(ctx, pod, st); !ok {
			again = d
		} else if st, err = k.observe(ctx, uid); err != nil {
			return 2 * time.Second, false
		}
	}
	if st.sandbox != nil {
		// Containers read status.podIP through fieldRefs.
		withIP := pod.DeepCopy()
		withIP.Status.PodIP = st.ip
		d := k.startContainers(ctx, withIP, st)
		if again == 0 || d > 0 && d < again {
			again = d
		}
		if st, err = k.observe(ctx, uid); err != nil {
			return 2 * time.Second, false
		}
	}
	status := k.podStatus(pod, st, false)
	if err := k.writeStatus(ctx, pod, status); err != nil {
		slog.Warn("kubelet cannot update pod status", "pod", pod.Namespace+"/"+pod.Name, "err", err)
		return time.Second, false
	}
	if status.Phase == corev1.PodSucceeded || status.Phase == corev1.PodFailed {
		// The next sync, on the status update's event, releases the sandbox.
		return time.Second, false
	}
	if len(st.byName) > 0 {
		k.ensureProbes(ctx, pod, st)
		k.refreshVolumes(ctx, pod)
	}
	// Even without events, a pod is synced every minute, as upstream's
	// resync: configMap and secret updates reach its volumes so.
	if again == 0 || again > resyncInterval {
		again = resyncInterval
	}
	if d := pod.Spec.ActiveDeadlineSeconds; d != nil && status.StartTime != nil {
		if left := time.Until(status.StartTime.Add(time.Duration(*d) * time.Second)); left < again {
			again = max(left, 10*time.Millisecond)
		}
	}
	return again, false
}

// deadlineExceeded fails a pod active longer than activeDeadlineSeconds, as
// upstream: its containers stopped, phase Failed, reason DeadlineExceeded.
func (k *Kubelet) deadlineExceeded(ctx context.Context, pod *corev1.Pod, st *podState) time.Duration {
	k.event(pod, "", corev1.EventTypeNormal, "DeadlineExceeded", "Pod was active on the node longer than the specified deadline")
	k.stopAll(ctx, pod, st, gracePeriod(pod))
	final, err := k.observe(ctx, pod.UID)
	if err != nil {
		return 2 * time.Second
	}
	status := k.podStatus(pod, final, true)
	status.Phase, status.Reason, status.Message = corev1.PodFailed, "DeadlineExceeded", "Pod was active on the node longer than the specified deadline"
	if err := k.writeStatus(ctx, pod, status); err != nil {
		slog.Warn("kubelet cannot update pod status", "pod", pod.Namespace+"/"+pod.Name, "err", err)
		return time.Second
	}
	return time.Second
}

// createSandbox replaces whatever sandboxes the pod had by a new one.
func (k *Kubelet) createSandbox(ctx context.Context, pod *corev1.Pod, st *podState) (time.Duration, bool) {
	for _, sb := range st.sandboxes {
		if _, err := k.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.GetId()}); err != nil {
			slog.Warn("kubelet cannot remove dead sandbox", "pod", pod.Namespace+"/"+pod.Name, "sandbox", sb.GetId(), "err", err)
		}
	}
	cfg := k.sandboxConfig(pod, uint32(len(st.sandboxes)))
	if err := os.MkdirAll(cfg.GetLogDirectory(), 0o755); err != nil {
		slog.Warn("kubelet cannot create pod directory", "pod", pod.Namespace+"/"+pod.Name, "err", err)
		return 5 * time.Second, false
	}
	if err := k.ensurePodCgroup(pod); err != nil {
		k.event(pod, "", corev1.EventTypeWarning, "FailedCreatePodContainer", "unable to ensure pod container exists: "+err.Error())
		slog.Warn("kubelet cannot create pod cgroup", "pod", pod.Namespace+"/"+pod.Name, "err", err)
		return 5 * time.Second, false
	}
	if _, err := k.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg}); err != nil {
		k.event(pod, "", corev1.EventTypeWarning, "FailedCreatePodSandBox", "Failed to create pod sandbox: "+err.Error())
		slog.Warn("kubelet cannot create pod sandbox", "pod", pod.Namespace+"/"+pod.Name, "err", err)
		return 5 * time.Second, false
	}
	return 0, true
}

// startContainers runs the init containers one at a time to completion,
// then the app containers, restarting exited ones as restartPolicy says.
func (k *Kubelet) startContainers(ctx context.Context, pod *corev1.Pod, st *podState) time.Duration {
	var again time.Duration
	soonest := func(d time.Duration) {
		if d > 0 && (again == 0 || d < again) {
			again = d
		}
	}
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		cs := st.latest(c.Name)
		if isSidecar(c) {
			// A sidecar (restartPolicy Always) lets the next init container
			// start once it runs and its startup probe passed; it is then
			// kept running, whatever the pod's restartPolicy.
			switch {
			case cs == nil:
				return k.startContainer(ctx, pod, st, c, 0)
			case cs.GetState() == runtimeapi.ContainerState_CONTAINER_CREATED:
				return k.startCreated(ctx, pod, c, cs)
			case cs.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED:
				d := k.restart(ctx, pod, st, c, cs)
				if !sidecarStarted(st, c.Name) {
					return d
				}
				soonest(d)
			case cs.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING && c.StartupProbe != nil && !k.result(cs.GetId()).started:
				return 0
			}
			continue
		}
		switch {
		case cs == nil:
			return k.startContainer(ctx, pod, st, c, 0)
		case cs.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED && cs.GetExitCode() == 0:
			continue
		case cs.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED:
			if pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
				return 0
			}
			return k.restart(ctx, pod, st, c, cs)
		case cs.GetState() == runtimeapi.ContainerState_CONTAINER_CREATED:
			return k.startCreated(ctx, pod, c, cs)
		default:
			return 0 // running: wait for it to finish
		}
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		cs := st.latest(c.Name)
		var d time.Duration
		switch {
		case cs == nil:
			d = k.startContainer(ctx, pod, st, c, 0)
		case cs.GetState() == runtimeapi.ContainerState_CONTAINER_CREATED:
			d = k.startCreated(ctx, pod, c, cs)
		case cs.GetState() == runtimeapi.ContainerState_CONTAINER_EXITED && shouldRestart(pod, cs):
			d = k.restart(ctx, pod, st, c, cs)
		}
		soonest(d)
	}
	return again
}

func shouldRestart(pod *corev1.Pod, cs *runtimeapi.ContainerStatus) bool {
	switch pod.Spec.RestartPolicy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return cs.GetExitCode() != 0
	}
	return true
}

func backoffKey(pod *corev1.Pod, name string) string { return string(pod.UID) + "/" + name }

// restart starts the next attempt of an exited container unless it is in
// crash-loop back-off, and returns when the back-off ends.
func (k *Kubelet) restart(ctx context.Context, pod *corev1.Pod, st *podState, c *corev1.Container, cs *runtimeapi.ContainerStatus) time.Duration {
	key := backoffKey(pod, c.Name)
	finished := time.Unix(0, cs.GetFinishedAt())
	k.mu.Lock()
	b := k.backoff[key]
	if b != nil {
		if left := b.delay - time.Since(finished); left > 0 {
			if k.waiting[key].reason != "CrashLoopBackOff" {
				k.event(pod, c.Name, corev1.EventTypeWarning, "BackOff", fmt.Sprintf("Back-off restarting failed container %s in pod %s_%s(%s)", c.Name, pod.Name, pod.Namespace, pod.UID))
			}
			k.waiting[key] = waitReason{"CrashLoopBackOff", fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", b.delay, c.Name, pod.Name, pod.Namespace, pod.UID)}
			k.mu.Unlock()
			return left
		}
	}
	ran := finished.Sub(time.Unix(0, cs.GetStartedAt()))
	switch {
	case b == nil:
		k.backoff[key] = &backoff{delay: k.cfg.BackoffInitial}
	case ran >= backoffReset:
		b.delay = k.cfg.BackoffInitial
	default:
		b.delay = min(2*b.delay, backoffMax)
	}
	k.mu.Unlock()
	// Keep the exited attempt for lastState; older ones go.
	for _, old := range st.byName[c.Name][1:] {
		if _, err := k.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: old.GetId()}); err != nil {
			slog.Warn("kubelet cannot remove old container", "pod", pod.Namespace+"/"+pod.Name, "container", c.Name, "err", err)
		}
	}
	return k.startContainer(ctx, pod, st, c, cs.GetMetadata().GetAttempt()+1)
}

// startCreated starts a container left created (by a kubelet stopped
// between create and start); failing that, it is removed and made anew.
func (k *Kubelet) startCreated(ctx context.Context, pod *corev1.Pod, c *corev1.Container, cs *runtimeapi.ContainerStatus) time.Duration {
	if _, err := k.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: cs.GetId()}); err != nil {
		k.setWaiting(pod, c.Name, "RunContainerError", err.Error())
		_, _ = k.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: cs.GetId()})
		return 2 * time.Second
	}
	k.setWaiting(pod, c.Name, "", "")
	return 0
}

func (k *Kubelet) setWaiting(pod *corev1.Pod, name, reason, message string) {
	key := backoffKey(pod, name)
	k.mu.Lock()
	defer k.mu.Unlock()
	if reason == "" {
		delete(k.waiting, key)
		return
	}
	k.waiting[key] = waitReason{reason, message}
	if reason != "ErrImageNeverPull" && reason != "ErrImagePull" {
		k.event(pod, name, corev1.EventTypeWarning, "Failed", "Error: "+message)
	}
}

// startContainer pulls the image if needed, then creates and starts the
// container's attempt. Failures become the container's waiting reason.
func (k *Kubelet) startContainer(ctx context.Context, pod *corev1.Pod, st *podState, c *corev1.Container, attempt uint32) time.Duration {
	ref, d := k.ensureImage(ctx, pod, c)
	if ref == "" {
		return d
	}
	cfg, err := k.containerConfig(ctx, pod, c, ref, attempt)
	if err != nil {
		k.setWaiting(pod, c.Name, "CreateContainerConfigError", err.Error())
		return 5 * time.Second
	}
	sbCfg := k.sandboxConfig(pod, st.sandbox.GetMetadata().GetAttempt())
	created, err := k.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: st.sandbox.GetId(), Config: cfg, SandboxConfig: sbCfg})
	if err != nil {
		k.setWaiting(pod, c.Name, "CreateContainerError", err.Error())
		return 5 * time.Second
	}
	k.event(pod, c.Name, corev1.EventTypeNormal, "Created", "Created container: "+c.Name)
	if _, err := k.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: created.GetContainerId()}); err != nil {
		k.setWaiting(pod, c.Name, "RunContainerError", err.Error())
		_, _ = k.rt.RemoveContainer(ctx, &runtimeapi.RemoveContainerRequest{ContainerId: created.GetContainerId()})
		return 5 * time.Second
	}
	k.event(pod, c.Name, corev1.EventTypeNormal, "Started", "Started container "+c.Name)
	k.setWaiting(pod, c.Name, "", "")
	if h := c.Lifecycle; h != nil && h.PostStart != nil {
		// A failed postStart hook kills the container; restartPolicy
		// decides what follows, as upstream.
		if err := k.runHook(ctx, pod, c, created.GetContainerId(), st.ip, h.PostStart, time.Duration(gracePeriod(pod))*time.Second); err != nil {
			k.event(pod, c.Name, corev1.EventTypeWarning, "FailedPostStartHook", "PostStartHook failed: "+err.Error())
			_, _ = k.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: created.GetContainerId(), Timeout: gracePeriod(pod)})
		}
	}
	return 0
}

// ensureImage returns the id of c's image, pulling it as imagePullPolicy
// says; "" with the time to retry when the image is not there.
func (k *Kubelet) ensureImage(ctx context.Context, pod *corev1.Pod, c *corev1.Container) (string, time.Duration) {
	spec := &runtimeapi.ImageSpec{Image: c.Image, UserSpecifiedImage: c.Image}
	policy := c.ImagePullPolicy
	if policy == "" {
		policy = defaultPullPolicy(c.Image)
	}
	if policy != corev1.PullAlways {
		s, err := k.img.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: spec})
		if err == nil && s.GetImage() != nil {
			k.event(pod, c.Name, corev1.EventTypeNormal, "Pulled", fmt.Sprintf("Container image %q already present on machine", c.Image))
			return s.GetImage().GetId(), 0
		}
		if policy == corev1.PullNever {
			k.event(pod, c.Name, corev1.EventTypeWarning, "ErrImageNeverPull", fmt.Sprintf("Container image %q is not present with pull policy of Never", c.Image))
			k.setWaiting(pod, c.Name, "ErrImageNeverPull", fmt.Sprintf("Container image %q is not present with pull policy of Never", c.Image))
			return "", 10 * time.Second
		}
	}
	key := "pull/" + backoffKey(pod, c.Name)
	k.mu.Lock()
	if b := k.backoff[key]; b != nil {
		if left := b.delay - time.Since(b.last); left > 0 {
			if k.waiting[backoffKey(pod, c.Name)].reason != "ImagePullBackOff" {
				k.event(pod, c.Name, corev1.EventTypeNormal, "BackOff", fmt.Sprintf("Back-off pulling image %q", c.Image))
			}
			k.waiting[backoffKey(pod, c.Name)] = waitReason{"ImagePullBackOff", fmt.Sprintf("Back-off pulling image %q", c.Image)}
			k.mu.Unlock()
			return "", left
		}
	}
	k.mu.Unlock()
	k.event(pod, c.Name, corev1.EventTypeNormal, "Pulling", fmt.Sprintf("Pulling image %q", c.Image))
	pullStart := time.Now()
	ref, err := k.pull(ctx, pod, spec)
	if err != nil {
		k.event(pod, c.Name, corev1.EventTypeWarning, "Failed", fmt.Sprintf("Failed to pull image %q: %v", c.Image, err))
		k.event(pod, c.Name, corev1.EventTypeWarning, "Failed", "Error: ErrImagePull")
		k.mu.Lock()
		b := k.backoff[key]
		if b == nil {
			b = &backoff{delay: k.cfg.BackoffInitial}
			k.backoff[key] = b
		} else {
			b.delay = min(2*b.delay, backoffMax)
		}
		b.last = time.Now()
		k.waiting[backoffKey(pod, c.Name)] = waitReason{"ErrImagePull", err.Error()}
		d := b.delay
		k.mu.Unlock()
		return "", d
	}
	k.mu.Lock()
	delete(k.backoff, key)
	k.mu.Unlock()
	k.event(pod, c.Name, corev1.EventTypeNormal, "Pulled", fmt.Sprintf("Successfully pulled image %q in %s", c.Image, time.Since(pullStart).Round(time.Millisecond)))
	return ref, 0
}

// defaultPullPolicy is the API's default: Always for :latest or no tag.
func defaultPullPolicy(image string) corev1.PullPolicy {
	if hasDigest(image) {
		return corev1.PullIfNotPresent
	}
	tag := ""
	if i := lastIndexByte(image, ':'); i > lastIndexByte(image, '/') {
		tag = image[i+1:]
	}
	if tag == "" || tag == "latest" {
		return corev1.PullAlways
	}
	return corev1.PullIfNotPresent
}

func hasDigest(image string) bool { return lastIndexByte(image, '@') >= 0 }

func lastIndexByte(s string, b byte) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == b {
			return i
		}
	}
	return -1
}

// stopAll stops the pod's running containers in parallel, each with the
// grace period (SIGTERM, SIGKILL after it).
func (k *Kubelet) stopAll(ctx context.Context, pod *corev1.Pod, st *podState, grace int64) {
	// Sidecars outlive the containers they serve: they stop last.
	var regular, sidecars []*runtimeapi.Container
	for _, c := range st.all {
		if spec := containerIn(pod, c.GetMetadata().GetName()); spec != nil && isSidecar(spec) {
			sidecars = append(sidecars, c)
		} else {
			regular = append(regular, c)
		}
	}
	start := time.Now()
	k.stopContainers(ctx, pod, st, regular, grace)
	k.stopContainers(ctx, pod, st, sidecars, max(grace-int64(time.Since(start)/time.Second), minGracePeriod))
}

func (k *Kubelet) stopContainers(ctx context.Context, pod *corev1.Pod, st *podState, cs []*runtimeapi.Container, grace int64) {
	var wg sync.WaitGroup
	for _, c := range cs {
		if c.GetState() != runtimeapi.ContainerState_CONTAINER_RUNNING && c.GetState() != runtimeapi.ContainerState_CONTAINER_CREATED {
			continue
		}
		if pod != nil {
			k.event(pod, c.GetMetadata().GetName(), corev1.EventTypeNormal, "Killing", "Stopping container "+c.GetMetadata().GetName())
		}
		wg.Add(1)
		go func(id, name string, running bool) {
			defer wg.Done()
			timeout := grace
			if spec := containerIn(pod, name); running && spec != nil && spec.Lifecycle != nil && spec.Lifecycle.PreStop != nil {
				// The preStop hook runs within the grace period; the stop
				// gets what is left, at least minGracePeriod.
				start := time.Now()
				if err := k.runHook(ctx, pod, spec, id, st.ip, spec.Lifecycle.PreStop, time.Duration(grace)*time.Second); err != nil {
					k.event(pod, name, corev1.EventTypeWarning, "FailedPreStopHook", "PreStopHook failed: "+err.Error())
				}
				timeout = max(grace-int64(time.Since(start)/time.Second), minGracePeriod)
			}
			if _, err := k.rt.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: id, Timeout: timeout}); err != nil {
				slog.Warn("kubelet cannot stop container", "container", id, "err", err)
			}
		}(c.GetId(), c.GetMetadata().GetName(), c.GetState() == runtimeapi.ContainerState_CONTAINER_RUNNING)
	}
	wg.Wait()
}

// teardown stops the containers and removes every sandbox of the pod (the
// runtime tears the network down).
func (k *Kubelet) teardown(ctx context.Context, st *podState, grace int64) error {
	k.stopAll(ctx, nil, st, grace)
	for _, sb := range st.sandboxes {
		if _, err := k.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: sb.GetId()}); err != nil {
			return fmt.Errorf("stop sandbox %s: %w", sb.GetId(), err)
		}
		if _, err := k.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: sb.GetId()}); err != nil {
			return fmt.Errorf("remove sandbox %s: %w", sb.GetId(), err)
		}
	}
	return nil
}

// recordedGrace is the grace period written on the pod's containers, for a
// pod that vanished from the API without a graceful deletion.
func recordedGrace(st *podState) int64 {
	for _, c := range st.all {
		if g, err := strconv.ParseInt(c.GetAnnotations()[annotationTerminationGrace], 10, 64); err == nil {
			return max(g, minGracePeriod)
		}
	}
	return minGracePeriod
}

// terminate runs a deleted pod down: its containers stopped with the grace
// period, the final status posted, the sandboxes removed, then the API
// object deleted (grace 0, with the uid as precondition so a new pod of
// the same name is never deleted by mistake).
func (k *Kubelet) terminate(ctx context.Context, pod *corev1.Pod, st *podState) time.Duration {
	name := pod.Namespace + "/" + pod.Name
	k.stopAll(ctx, pod, st, gracePeriod(pod))
	if final, err := k.observe(ctx, pod.UID); err == nil {
		if err := k.writeStatus(ctx, pod, k.podStatus(pod, final, true)); err != nil && !apierrors.IsNotFound(err) {
			slog.Warn("kubelet cannot post final pod status", "pod", name, "err", err)
		}
		st = final
	}
	if err := k.teardown(ctx, st, minGracePeriod); err != nil {
		slog.Warn("kubelet cannot remove pod", "pod", name, "err", err)
		return 2 * time.Second
	}
	if err := k.removePodCgroup(pod.UID); err != nil {
		slog.Warn("kubelet cannot remove pod cgroup", "pod", name, "err", err)
		return 2 * time.Second
	}
	if err := removePodDir(k.podDir(pod.UID)); err != nil {
		slog.Warn("kubelet cannot remove pod directory", "pod", name, "err", err)
		return 2 * time.Second
	}
	err := k.client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: new(int64), Preconditions: &metav1.Preconditions{UID: &pod.UID}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		slog.Warn("kubelet cannot delete pod", "pod", name, "err", err)
		return 2 * time.Second
	}
	return 0
}

// writeStatus posts status unless the pod already has it; on a conflict it
// applies the status to the newest version of the pod.
func (k *Kubelet) writeStatus(ctx context.Context, pod *corev1.Pod, status corev1.PodStatus) error {
	if statusEqual(pod.Status, status) {
		return nil
	}
	p := pod.DeepCopy()
	p.Status = status
	pods := k.client.CoreV1().Pods(pod.Namespace)
	_, err := pods.UpdateStatus(ctx, p, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) {
		fresh, gerr := pods.Get(ctx, pod.Name, metav1.GetOptions{})
		if gerr != nil {
			return gerr
		}
		if fresh.UID != pod.UID {
			return nil
		}
		fresh.Status = status
		_, err = pods.UpdateStatus(ctx, fresh, metav1.UpdateOptions{})
	}
	return err
}

// containerIn is the spec of pod's container name (nil without a pod).
func containerIn(pod *corev1.Pod, name string) *corev1.Container {
	if pod == nil || name == "" {
		return nil
	}
	return containerNamed(pod, name)
}

// isSidecar reports whether an init container is a sidecar (a restartable
// init container: restartPolicy Always).
func isSidecar(c *corev1.Container) bool {
	return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

// sidecarStarted reports whether any attempt of the sidecar name ever ran,
// after which the init containers behind it no longer wait for it.
func sidecarStarted(st *podState, name string) bool {
	for _, cs := range st.byName[name] {
		if cs.GetStartedAt() != 0 {
			return true
		}
	}
	return false
}
