package job

import (
	"context"

	"github.com/navarch/navarch/controlplane/events"
	batchv1 "k8s.io/api/batch/v1"
)

// event records an Event on the Job, as upstream's controller does
// (`kubectl describe job`). It is best effort: a lost event must not fail
// the sync.
func (c *Controller) event(ctx context.Context, job *batchv1.Job, typ, reason, msg string) {
	events.NewRecorder(c.client, "job-controller").Event(ctx, events.Ref("batch/v1", "Job", job), typ, reason, msg)
}
