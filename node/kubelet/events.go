package kubelet

import (
	"context"

	corev1 "k8s.io/api/core/v1"

	"github.com/navarch/navarch/controlplane/events"
)

// This file records the kubelet's Events (Pulling, Pulled, Created,
// Started, Killing, BackOff, Unhealthy ...), what `kubectl describe pod`
// shows. They are sent by one goroutine from a queue, as client-go's
// broadcaster does, so that no pod waits on them; a full queue drops them.

type event struct {
	ref                  corev1.ObjectReference
	typ, reason, message string
}

func (k *Kubelet) sendEvents(ctx context.Context) {
	rec := events.NewRecorder(k.client, "kubelet")
	for {
		select {
		case <-ctx.Done():
			return
		case e := <-k.events:
			rec.Event(ctx, e.ref, e.typ, e.reason, e.message)
		}
	}
}

// event queues an event about pod, or about one of its containers when
// container is set (upstream's fieldPath spec.containers{NAME}).
func (k *Kubelet) event(pod *corev1.Pod, container, typ, reason, message string) {
	ref := events.Ref("v1", "Pod", pod)
	if container != "" {
		ref.FieldPath = "spec.containers{" + container + "}"
		for _, c := range pod.Spec.InitContainers {
			if c.Name == container {
				ref.FieldPath = "spec.initContainers{" + container + "}"
			}
		}
	}
	select {
	case k.events <- event{ref, typ, reason, message}:
	default:
	}
}
