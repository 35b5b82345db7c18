package cronjob

import (
	"context"

	"github.com/navarch/navarch/controlplane/events"
	batchv1 "k8s.io/api/batch/v1"
)

// event records an Event on the CronJob, as upstream's controller does
// (`kubectl describe cronjob`). It is best effort: a lost event must not
// fail the sync.
func (c *Controller) event(ctx context.Context, cj *batchv1.CronJob, e event) {
	events.NewRecorder(c.client, "cronjob-controller").Event(ctx, events.Ref("batch/v1", "CronJob", cj), e.typ, e.reason, e.message)
}
