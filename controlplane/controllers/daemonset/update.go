package daemonset

import (
	"sort"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// manage decides, node by node, which nodes need a pod and which pods must
// go: a node that should run the pod and has none gets one; failed pods are
// replaced (deleted now, made again once gone) when replaceFailed allows;
// extra pods on a node go, the oldest stays; pods on nodes that may no
// longer keep them go. Pods being deleted still count as there, so a node
// never runs two at once.
func manage(ds *appsv1.DaemonSet, nodes []*corev1.Node, byNode map[string][]*corev1.Pod, hash string, replaceFailed func(node string, p *corev1.Pod) bool) (create []string, del []*corev1.Pod) {
	surge := maxSurge(ds, 0) > 0 // only whether surge is on matters here
	known := map[string]bool{}
	for _, node := range nodes {
		known[node.Name] = true
		run, keep := shouldRun(ds, node)
		pods := byNode[node.Name]
		switch {
		case run && len(pods) == 0:
			create = append(create, node.Name)
		case keep:
			var running []*corev1.Pod
			for _, p := range pods {
				switch {
				case p.DeletionTimestamp != nil:
				case p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded:
					if replaceFailed(node.Name, p) {
						del = append(del, p)
					}
				default:
					running = append(running, p)
				}
			}
			del = append(del, extras(running, surge, hash, ds.Spec.MinReadySeconds)...)
		default:
			for _, p := range pods {
				if p.DeletionTimestamp == nil {
					del = append(del, p)
				}
			}
		}
	}
	// A pod for a node that no longer exists is never bound, and so the pod
	// garbage collector, which removes pods of deleted nodes, never sees it.
	for name, pods := range byNode {
		if known[name] {
			continue
		}
		for _, p := range pods {
			if p.Spec.NodeName == "" && p.DeletionTimestamp == nil {
				del = append(del, p)
			}
		}
	}
	return create, del
}

// extras are the running pods of one node beyond the one it keeps (the
// oldest). With surge, a node keeps its oldest old pod next to its oldest
// new one until the new one is available (or the old one not ready).
func extras(running []*corev1.Pod, surge bool, hash string, minReadySeconds int32) []*corev1.Pod {
	if len(running) <= 1 {
		return nil
	}
	running = byAge(running)
	if !surge {
		return running[1:]
	}
	var out []*corev1.Pod
	var oldestNew, oldestOld *corev1.Pod
	for _, p := range running {
		switch {
		case p.Labels[HashLabel] == hash && oldestNew == nil:
			oldestNew = p
		case p.Labels[HashLabel] != hash && oldestOld == nil:
			oldestOld = p
		default:
			out = append(out, p)
		}
	}
	if oldestNew != nil && oldestOld != nil && (!isReady(oldestOld) || isAvailable(oldestNew, minReadySeconds, time.Now())) {
		out = append(out, oldestOld)
	}
	return out
}

func scaled(v *intstr.IntOrString, total int) int {
	if v == nil {
		return 0
	}
	n, err := intstr.GetScaledValueFromIntOrPercent(v, total, true)
	if err != nil {
		return 0
	}
	return n
}

func maxSurge(ds *appsv1.DaemonSet, desired int) int {
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ru == nil {
		return 0
	}
	if ru.MaxSurge != nil && ru.MaxSurge.Type == intstr.String && desired == 0 {
		desired = 1 // a percentage says surge is on even before nodes are counted
	}
	return scaled(ru.MaxSurge, desired)
}

// budgets are the rolling update's maxSurge and maxUnavailable in pods,
// percentages rounded up over the nodes that should run the pod; both zero
// would never progress, so that is one unavailable, as upstream.
func budgets(ds *appsv1.DaemonSet, desired int) (surge, unavailable int) {
	surge = maxSurge(ds, desired)
	if ru := ds.Spec.UpdateStrategy.RollingUpdate; ru != nil {
		unavailable = scaled(ru.MaxUnavailable, desired)
	}
	if surge == 0 && unavailable == 0 {
		unavailable = 1
	}
	return surge, unavailable
}

// onNode splits a node's live pods into its one new and one old pod; ok is
// false when it has more than one of either (manage cleans that up first).
func onNode(pods []*corev1.Pod, hash string, gen *int64) (newPod, oldPod *corev1.Pod, ok bool) {
	for _, p := range pods {
		if p.DeletionTimestamp != nil {
			continue
		}
		if isUpdated(p, hash, gen) {
			if newPod != nil {
				return nil, nil, false
			}
			newPod = p
		} else {
			if oldPod != nil {
				return nil, nil, false
			}
			oldPod = p
		}
	}
	return newPod, oldPod, true
}

// rollingUpdate replaces old pods within the budgets. Without surge it
// deletes old pods (unavailable ones at once, available ones while fewer
// than maxUnavailable nodes are unavailable) and manage makes the new pod
// once the old one is gone. With surge it first makes the new pod next to
// the old one, which manage deletes once the new one is available.
func rollingUpdate(ds *appsv1.DaemonSet, nodes []*corev1.Node, byNode map[string][]*corev1.Pod, hash string) (create []string, del []*corev1.Pod) {
	// Roll through the nodes that should run the pod and those that have
	// one (pods that must go are manage's; those that may stay are rolled
	// too), in a stable order; the budgets count the former.
	desired := 0
	todo := map[string]bool{}
	for _, node := range nodes {
		if run, _ := shouldRun(ds, node); run {
			desired++
			todo[node.Name] = true
		}
	}
	for n := range byNode {
		todo[n] = true
	}
	names := make([]string, 0, len(todo))
	for n := range todo {
		names = append(names, n)
	}
	sort.Strings(names)
	surge, unavailable := budgets(ds, desired)
	gen := templateGeneration(ds)
	now := time.Now()
	numUnavailable, numSurge := 0, 0
	var candidates []*corev1.Pod
	var candidateNodes []string
	for _, node := range names {
		newPod, oldPod, ok := onNode(byNode[node], hash, gen)
		if !ok {
			numUnavailable++
			numSurge++
			continue
		}
		if surge == 0 {
			switch {
			case oldPod == nil && newPod == nil, oldPod != nil && newPod != nil:
				numUnavailable++ // manage makes or removes a pod here
			case newPod != nil:
				if !isAvailable(newPod, ds.Spec.MinReadySeconds, now) {
					numUnavailable++
				}
			case !isAvailable(oldPod, ds.Spec.MinReadySeconds, now):
				// Replacing it costs no availability, but the node is down already.
				del = append(del, oldPod)
				numUnavailable++
			default:
				candidates = append(candidates, oldPod)
			}
			continue
		}
		switch {
		case oldPod == nil:
		case newPod == nil && !isAvailable(oldPod, ds.Spec.MinReadySeconds, now):
			create = append(create, node)
		case newPod == nil:
			candidateNodes = append(candidateNodes, node)
		case !isAvailable(newPod, ds.Spec.MinReadySeconds, now):
			numSurge++
		default:
			del = append(del, oldPod)
		}
	}
	if surge == 0 {
		room := min(max(unavailable-numUnavailable, 0), len(candidates))
		return nil, append(del, candidates[:room]...)
	}
	room := min(max(surge-numSurge, 0), len(candidateNodes))
	return append(create, candidateNodes[:room]...), del
}
