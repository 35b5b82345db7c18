// Package ttlafterfinished deletes finished Jobs (their Complete or Failed
// condition is true) spec.ttlSecondsAfterFinished seconds after they
// finished, with background propagation so that their pods go too. It
// waits with the queue's AddAfter, never by polling, and checks the Job
// live before deleting, since the TTL may have changed since the cache saw
// it.
package ttlafterfinished

import (
	"context"
	"fmt"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/controllers/workloop"
)

// Controller is the TTL-after-finished controller.
type Controller struct {
	client  kubernetes.Interface
	factory informers.SharedInformerFactory
	queue   workqueue.TypedRateLimitingInterface[string]
	jobs    batchlisters.JobLister
	// Clock tells the time; tests may replace it before Run.
	Clock clock.PassiveClock
}

// New returns the controller.
func New(client kubernetes.Interface, factory informers.SharedInformerFactory) *Controller {
	return &Controller{client: client, factory: factory, Clock: clock.RealClock{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "ttlafterfinished"})}
}

// Run works until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	inf := c.factory.Batch().V1().Jobs()
	c.jobs = inf.Lister()
	enqueue := func(obj interface{}) {
		if j, ok := obj.(*batchv1.Job); ok && j.Spec.TTLSecondsAfterFinished != nil && j.DeletionTimestamp == nil {
			if key, err := cache.MetaNamespaceKeyFunc(j); err == nil {
				c.queue.Add(key)
			}
		}
	}
	inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, obj interface{}) { enqueue(obj) }})
	c.factory.Start(ctx.Done())
	return workloop.Run(ctx, "ttlafterfinished", c.queue, 2, c.sync, inf.Informer().HasSynced)
}

// expiry is when a Job is due for deletion, if it has a TTL and finished.
func expiry(j *batchv1.Job) (time.Time, bool) {
	if j.Spec.TTLSecondsAfterFinished == nil || j.DeletionTimestamp != nil {
		return time.Time{}, false
	}
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			finished := c.LastTransitionTime.Time
			if finished.IsZero() && j.Status.CompletionTime != nil {
				finished = j.Status.CompletionTime.Time
			}
			return finished.Add(time.Duration(*j.Spec.TTLSecondsAfterFinished) * time.Second), true
		}
	}
	return time.Time{}, false
}

func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	j, err := c.jobs.Jobs(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if due, ok := c.due(key, j); !ok || !due {
		return nil
	}
	fresh, err := c.client.BatchV1().Jobs(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("job %s/%s: %w", ns, name, err)
	}
	if due, ok := c.due(key, fresh); !ok || !due {
		return nil
	}
	err = c.client.BatchV1().Jobs(ns).Delete(ctx, name, metav1.DeleteOptions{
		PropagationPolicy: ptr.To(metav1.DeletePropagationBackground), Preconditions: metav1.NewUIDPreconditions(string(fresh.UID))})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("job %s/%s: delete after ttl: %w", ns, name, err)
	}
	return nil
}

// due says whether j has expired; if it will later, it queues key for then.
func (c *Controller) due(key string, j *batchv1.Job) (due, ok bool) {
	at, ok := expiry(j)
	if !ok {
		return false, false
	}
	if left := at.Sub(c.Clock.Now()); left > 0 {
		c.queue.AddAfter(key, left)
		return false, true
	}
	return true, true
}
