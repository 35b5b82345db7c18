package cronjob

import (
	"context"
	"fmt"
	"log/slog"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// event records an Event on the CronJob, as upstream's controller does
// (`kubectl describe cronjob`). It is best effort: a lost event must not
// fail the sync.
func (c *Controller) event(ctx context.Context, cj *batchv1.CronJob, e event) {
	now := metav1.Now()
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", cj.Name, now.UnixNano()), Namespace: cj.Namespace},
		InvolvedObject: corev1.ObjectReference{Kind: "CronJob", APIVersion: "batch/v1", Namespace: cj.Namespace, Name: cj.Name,
			UID: cj.UID, ResourceVersion: cj.ResourceVersion},
		Reason: e.reason, Message: e.message, Type: e.typ,
		Source:         corev1.EventSource{Component: "cronjob-controller"},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
		ReportingController: "cronjob-controller", ReportingInstance: "cronjob-controller",
	}
	if _, err := c.client.CoreV1().Events(cj.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		slog.Debug("cannot record cronjob event", "cronjob", cj.Namespace+"/"+cj.Name, "reason", e.reason, "err", err)
	}
}
