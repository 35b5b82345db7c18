package statefulset

import (
	"context"
	"fmt"
	"log/slog"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// event records an event on the set, as upstream's controller does for
// every pod and claim it creates or deletes (`kubectl describe sts`).
// Recording is best effort: a lost event must not fail the sync.
func (c *Controller) event(ctx context.Context, set *appsv1.StatefulSet, typ, reason, msg string) {
	now := metav1.Now()
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", set.Name, now.UnixNano()), Namespace: set.Namespace},
		InvolvedObject: corev1.ObjectReference{Kind: "StatefulSet", APIVersion: "apps/v1", Namespace: set.Namespace, Name: set.Name,
			UID: set.UID, ResourceVersion: set.ResourceVersion},
		Reason: reason, Message: msg, Type: typ,
		Source:         corev1.EventSource{Component: "statefulset-controller"},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
		ReportingController: "statefulset-controller", ReportingInstance: "statefulset-controller",
	}
	if _, err := c.client.CoreV1().Events(set.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		slog.Debug("cannot record statefulset event", "statefulset", set.Namespace+"/"+set.Name, "reason", reason, "err", err)
	}
}
