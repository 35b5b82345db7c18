// Package rootcacert is upstream's root CA certificate publisher: it keeps
// a ConfigMap kube-root-ca.crt holding the cluster CA (key ca.crt) in every
// namespace, so that pods can verify the API server (the kubelet projects it
// into the service account token volume). A deleted or changed ConfigMap is
// put back.
package rootcacert

import (
	"context"
	"maps"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/navarch/navarch/controlplane/controllers/workloop"
)

const (
	// Name is the ConfigMap every namespace gets.
	Name = "kube-root-ca.crt"
	// DescriptionAnnotation and description are upstream's, so tools that
	// look for the annotation find it.
	DescriptionAnnotation = "kubernetes.io/description"
	description           = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. " +
		"No other usage is guaranteed across distributions of Kubernetes clusters."
)

// Controller publishes the root CA.
type Controller struct {
	client  kubernetes.Interface
	factory informers.SharedInformerFactory
	rootCA  string
	queue   workqueue.TypedRateLimitingInterface[string] // namespace names
}

// New returns the controller publishing rootCA (PEM).
func New(client kubernetes.Interface, factory informers.SharedInformerFactory, rootCA []byte) *Controller {
	return &Controller{client: client, factory: factory, rootCA: string(rootCA), queue: workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[string](), workqueue.TypedRateLimitingQueueConfig[string]{Name: "root-ca-cert-publisher"})}
}

// Run works until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	nsInf := c.factory.Core().V1().Namespaces()
	nsInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { c.queue.Add(obj.(*corev1.Namespace).Name) },
		UpdateFunc: func(_, obj interface{}) { c.queue.Add(obj.(*corev1.Namespace).Name) },
	})
	// Only the published ConfigMaps are watched: holding every ConfigMap
	// of the cluster for this would cost memory for nothing.
	own := informers.NewSharedInformerFactoryWithOptions(c.client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", Name).String()
	}))
	defer own.Shutdown()
	cmInf := own.Core().V1().ConfigMaps()
	enqueue := func(obj interface{}) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if cm, ok := obj.(*corev1.ConfigMap); ok && cm.Name == Name {
			c.queue.Add(cm.Namespace)
		}
	}
	cmInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		UpdateFunc: func(_, obj interface{}) { enqueue(obj) },
		DeleteFunc: enqueue,
	})
	nsLister, cmLister := nsInf.Lister(), cmInf.Lister()
	// Start is idempotent: it starts what other controllers have not yet.
	c.factory.Start(ctx.Done())
	own.Start(ctx.Done())
	return workloop.Run(ctx, "root-ca-cert-publisher", c.queue, 2, func(ctx context.Context, ns string) error {
		return c.sync(ctx, nsLister, cmLister, ns)
	}, nsInf.Informer().HasSynced, cmInf.Informer().HasSynced)
}

func (c *Controller) sync(ctx context.Context, nsl corelisters.NamespaceLister, cml corelisters.ConfigMapLister, ns string) error {
	n, err := nsl.Get(ns)
	if apierrors.IsNotFound(err) || err == nil && (n.DeletionTimestamp != nil || n.Status.Phase == corev1.NamespaceTerminating) {
		return nil
	}
	if err != nil {
		return err
	}
	data := map[string]string{"ca.crt": c.rootCA}
	cm, err := cml.ConfigMaps(ns).Get(Name)
	if apierrors.IsNotFound(err) {
		_, err = c.client.CoreV1().ConfigMaps(ns).Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: Name, Annotations: map[string]string{DescriptionAnnotation: description}},
			Data:       data,
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) || apierrors.IsNotFound(err) || apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause) {
			return nil // there already (the informer catches up), or the namespace is going away
		}
		return err
	}
	if err != nil {
		return err
	}
	if maps.Equal(cm.Data, data) && len(cm.BinaryData) == 0 && cm.Annotations[DescriptionAnnotation] != "" {
		return nil
	}
	// The data and the description are ours; other labels and annotations
	// a user added stay.
	cm = cm.DeepCopy()
	cm.Data, cm.BinaryData = data, nil
	if cm.Annotations == nil {
		cm.Annotations = map[string]string{}
	}
	cm.Annotations[DescriptionAnnotation] = description
	_, err = c.client.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil // deleted meanwhile: the delete event brings it back
	}
	return err
}
