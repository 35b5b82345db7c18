// Package namespace deletes the content of namespaces being deleted and then
// releases them, following the finalizer protocol kubectl expects: a deleted
// namespace is Terminating until everything in it is gone, then it goes too.
package namespace

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Controller empties and finalizes deleted namespaces.
type Controller struct {
	client    kubernetes.Interface
	factory   informers.SharedInformerFactory
	dynamic   dynamic.Interface
	discovery discovery.DiscoveryInterface
	queue     workqueue.TypedRateLimitingInterface[string]
}

// New returns a controller talking to the API server through cfg.
func New(cfg *rest.Config, factory informers.SharedInformerFactory) (*Controller, error) {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Controller{
		client: client, factory: factory, dynamic: dyn, discovery: client.Discovery(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 10*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "namespace"}),
	}, nil
}

// Run works until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	factory := c.factory
	inf := factory.Core().V1().Namespaces()
	enqueue := func(obj interface{}) {
		if ns, ok := obj.(*corev1.Namespace); ok && ns.DeletionTimestamp != nil {
			c.queue.Add(ns.Name)
		}
	}
	inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj interface{}) { enqueue(obj) },
	})
	lister := inf.Lister()
	// Start is idempotent: it starts what other controllers have not yet.
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.Informer().HasSynced) {
		return ctx.Err()
	}
	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
	}()
	for {
		name, quit := c.queue.Get()
		if quit {
			return nil
		}
		if err := c.sync(ctx, lister, name); err != nil {
			slog.Debug("namespace not empty yet", "namespace", name, "err", err)
			c.queue.AddRateLimited(name)
		} else {
			c.queue.Forget(name)
		}
		c.queue.Done(name)
	}
}

func (c *Controller) sync(ctx context.Context, lister corelisters.NamespaceLister, name string) error {
	ns, err := lister.Get(name)
	if apierrors.IsNotFound(err) || err == nil && ns.DeletionTimestamp == nil {
		return nil
	}
	if err != nil {
		return err
	}
	remaining, err := c.deleteContent(ctx, name)
	if err != nil {
		return err
	}
	if remaining > 0 {
		return fmt.Errorf("namespace %q: %d objects remain", name, remaining)
	}
	ns = ns.DeepCopy()
	var keep []corev1.FinalizerName
	for _, f := range ns.Spec.Finalizers {
		if f != corev1.FinalizerKubernetes {
			keep = append(keep, f)
		}
	}
	ns.Spec.Finalizers = keep
	if _, err := c.client.CoreV1().Namespaces().Finalize(ctx, ns, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("finalize namespace %q: %w", name, err)
	}
	return nil
}

// deleteContent deletes every namespaced object in ns and counts what is
// still there (objects with finalizers or in graceful deletion).
func (c *Controller) deleteContent(ctx context.Context, ns string) (int, error) {
	lists, err := c.discovery.ServerPreferredNamespacedResources()
	if err != nil && len(lists) == 0 {
		return 0, fmt.Errorf("discover resources: %w", err)
	}
	remaining := 0
	background := metav1.DeletePropagationBackground
	for _, list := range lists {
		gv, err := schema.ParseGroupVersion(list.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range list.APIResources {
			if !has(r.Verbs, "deletecollection") || !has(r.Verbs, "list") {
				continue
			}
			client := c.dynamic.Resource(gv.WithResource(r.Name)).Namespace(ns)
			if err := client.DeleteCollection(ctx, metav1.DeleteOptions{PropagationPolicy: &background}, metav1.ListOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return 0, fmt.Errorf("delete %s in namespace %q: %w", r.Name, ns, err)
			}
			left, err := client.List(ctx, metav1.ListOptions{})
			if err != nil {
				return 0, fmt.Errorf("list %s in namespace %q: %w", r.Name, ns, err)
			}
			remaining += len(left.Items)
		}
	}
	return remaining, nil
}

func has(verbs []string, v string) bool {
	for _, x := range verbs {
		if x == v {
			return true
		}
	}
	return false
}
