package statefulset

import (
	"context"

	"github.com/navarch/navarch/controlplane/events"
	appsv1 "k8s.io/api/apps/v1"
)

// event records an event on the set, as upstream's controller does for
// every pod and claim it creates or deletes (`kubectl describe sts`).
// Recording is best effort: a lost event must not fail the sync.
func (c *Controller) event(ctx context.Context, set *appsv1.StatefulSet, typ, reason, msg string) {
	events.NewRecorder(c.client, "statefulset-controller").Event(ctx, events.Ref("apps/v1", "StatefulSet", set), typ, reason, msg)
}
