package job

import (
	"context"
	"fmt"
	"log/slog"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// event records an Event on the Job, as upstream's controller does
// (`kubectl describe job`). It is best effort: a lost event must not fail
// the sync.
func (c *Controller) event(ctx context.Context, job *batchv1.Job, typ, reason, msg string) {
	now := metav1.Now()
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s.%x", job.Name, now.UnixNano()), Namespace: job.Namespace},
		InvolvedObject: corev1.ObjectReference{Kind: "Job", APIVersion: "batch/v1", Namespace: job.Namespace, Name: job.Name,
			UID: job.UID, ResourceVersion: job.ResourceVersion},
		Reason: reason, Message: msg, Type: typ,
		Source:         corev1.EventSource{Component: "job-controller"},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
		ReportingController: "job-controller", ReportingInstance: "job-controller",
	}
	if _, err := c.client.CoreV1().Events(job.Namespace).Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		slog.Debug("cannot record job event", "job", job.Namespace+"/"+job.Name, "reason", reason, "err", err)
	}
}
