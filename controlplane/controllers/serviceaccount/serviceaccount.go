// Package serviceaccount makes sure every active namespace has the default
// ServiceAccount that pods run as unless they name another.
package serviceaccount

import (
	"context"
	"log/slog"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Default is the name of the ServiceAccount every namespace gets.
const Default = "default"

// Controller creates default ServiceAccounts.
type Controller struct {
	client  kubernetes.Interface
	factory informers.SharedInformerFactory
	queue   workqueue.TypedRateLimitingInterface[string] // namespace names
}

// New returns the controller.
func New(client kubernetes.Interface, factory informers.SharedInformerFactory) *Controller {
	return &Controller{client: client, factory: factory, queue: workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[string](), workqueue.TypedRateLimitingQueueConfig[string]{Name: "serviceaccount"})}
}

// Run works until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	factory := c.factory
	nsInf, saInf := factory.Core().V1().Namespaces(), factory.Core().V1().ServiceAccounts()
	nsInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { c.queue.Add(obj.(*corev1.Namespace).Name) },
		UpdateFunc: func(_, obj interface{}) { c.queue.Add(obj.(*corev1.Namespace).Name) },
	})
	// A deleted default ServiceAccount comes back.
	saInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: func(obj interface{}) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if sa, ok := obj.(*corev1.ServiceAccount); ok && sa.Name == Default {
			c.queue.Add(sa.Namespace)
		}
	}})
	nsLister, saLister := nsInf.Lister(), saInf.Lister()
	// Start is idempotent: it starts what other controllers have not yet.
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), nsInf.Informer().HasSynced, saInf.Informer().HasSynced) {
		return ctx.Err()
	}
	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
	}()
	for {
		ns, quit := c.queue.Get()
		if quit {
			return nil
		}
		if err := c.sync(ctx, nsLister, saLister, ns); err != nil && ctx.Err() == nil {
			slog.Debug("default service account", "namespace", ns, "err", err)
			c.queue.AddRateLimited(ns)
		} else {
			c.queue.Forget(ns)
		}
		c.queue.Done(ns)
	}
}

func (c *Controller) sync(ctx context.Context, nsl corelisters.NamespaceLister, sal corelisters.ServiceAccountLister, name string) error {
	ns, err := nsl.Get(name)
	if apierrors.IsNotFound(err) || err == nil && (ns.DeletionTimestamp != nil || ns.Status.Phase == corev1.NamespaceTerminating) {
		return nil
	}
	if err != nil {
		return err
	}
	if _, err := sal.ServiceAccounts(name).Get(Default); err == nil {
		return nil
	}
	_, err = c.client.CoreV1().ServiceAccounts(name).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: Default}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) || apierrors.IsForbidden(err) || apierrors.IsNotFound(err) {
		return nil // there already, or the namespace is going away
	}
	return err
}
