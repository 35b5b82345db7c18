// Package serviceaccounttoken is upstream's tokens controller for Secrets
// of type kubernetes.io/service-account-token, the long-lived tokens users
// create by hand (upstream has made none on its own since 1.24): it fills
// in their token, ca.crt and namespace and the service account's uid, and
// deletes them once their service account is gone.
package serviceaccounttoken

import (
	"bytes"
	"context"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/navarch/navarch/controlplane/controllers/workloop"
)

// Signer makes the token of a Secret (apiserver.ServiceAccountTokens).
type Signer interface {
	LegacyToken(namespace, serviceAccount string, uid types.UID, secret string) (string, error)
}

// Controller keeps service account token Secrets.
type Controller struct {
	client  kubernetes.Interface
	factory informers.SharedInformerFactory
	signer  Signer
	rootCA  []byte
	queue   workqueue.TypedRateLimitingInterface[cache.ObjectName] // secrets
}

// New returns the controller; rootCA (PEM) goes into each Secret's ca.crt.
func New(client kubernetes.Interface, factory informers.SharedInformerFactory, signer Signer, rootCA []byte) *Controller {
	return &Controller{client: client, factory: factory, signer: signer, rootCA: rootCA, queue: workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[cache.ObjectName](), workqueue.TypedRateLimitingQueueConfig[cache.ObjectName]{Name: "serviceaccount-token"})}
}

// Run works until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	// Only token Secrets are watched, not every Secret of the cluster.
	own := informers.NewSharedInformerFactoryWithOptions(c.client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("type", string(corev1.SecretTypeServiceAccountToken)).String()
	}))
	defer own.Shutdown()
	secretInf, saInf := own.Core().V1().Secrets(), c.factory.Core().V1().ServiceAccounts()
	enqueue := func(obj interface{}) {
		if s, ok := obj.(*corev1.Secret); ok {
			c.queue.Add(cache.ObjectName{Namespace: s.Namespace, Name: s.Name})
		}
	}
	secretInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, obj interface{}) { enqueue(obj) }})
	secrets := secretInf.Lister()
	// A service account that goes (or comes back under another uid) takes
	// its Secrets with it.
	saGone := func(obj interface{}) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		sa, ok := obj.(*corev1.ServiceAccount)
		if !ok {
			return
		}
		list, _ := secrets.Secrets(sa.Namespace).List(labels.Everything())
		for _, s := range list {
			if s.Annotations[corev1.ServiceAccountNameKey] == sa.Name {
				c.queue.Add(cache.ObjectName{Namespace: s.Namespace, Name: s.Name})
			}
		}
	}
	saInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: saGone, DeleteFunc: saGone})
	c.factory.Start(ctx.Done())
	own.Start(ctx.Done())
	sas := saInf.Lister()
	return workloop.Run(ctx, "serviceaccount-token", c.queue, 2, func(ctx context.Context, key cache.ObjectName) error {
		return c.sync(ctx, secrets, sas, key)
	}, secretInf.Informer().HasSynced, saInf.Informer().HasSynced)
}

func (c *Controller) sync(ctx context.Context, secrets corelisters.SecretLister, sas corelisters.ServiceAccountLister, key cache.ObjectName) error {
	secret, err := secrets.Secrets(key.Namespace).Get(key.Name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if secret.Type != corev1.SecretTypeServiceAccountToken || secret.DeletionTimestamp != nil {
		return nil
	}
	name, uid := secret.Annotations[corev1.ServiceAccountNameKey], types.UID(secret.Annotations[corev1.ServiceAccountUIDKey])
	sa, err := sas.ServiceAccounts(key.Namespace).Get(name)
	if apierrors.IsNotFound(err) {
		// The cache may be behind a service account just made: ask the
		// server before deleting anything.
		sa, err = c.client.CoreV1().ServiceAccounts(key.Namespace).Get(ctx, name, metav1.GetOptions{})
	}
	switch {
	case apierrors.IsNotFound(err) || err == nil && uid != "" && sa.UID != uid:
		err := c.client.CoreV1().Secrets(key.Namespace).Delete(ctx, key.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &secret.UID}})
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		return err
	case err != nil:
		return err
	}
	want := secret.DeepCopy()
	if want.Annotations == nil {
		want.Annotations = map[string]string{}
	}
	want.Annotations[corev1.ServiceAccountUIDKey] = string(sa.UID)
	if want.Data == nil {
		want.Data = map[string][]byte{}
	}
	if len(want.Data[corev1.ServiceAccountTokenKey]) == 0 {
		token, err := c.signer.LegacyToken(sa.Namespace, sa.Name, sa.UID, secret.Name)
		if err != nil {
			return err
		}
		want.Data[corev1.ServiceAccountTokenKey] = []byte(token)
	}
	want.Data[corev1.ServiceAccountRootCAKey] = c.rootCA
	want.Data[corev1.ServiceAccountNamespaceKey] = []byte(secret.Namespace)
	if uid == sa.UID && bytes.Equal(want.Data[corev1.ServiceAccountTokenKey], secret.Data[corev1.ServiceAccountTokenKey]) &&
		bytes.Equal(secret.Data[corev1.ServiceAccountRootCAKey], c.rootCA) && string(secret.Data[corev1.ServiceAccountNamespaceKey]) == secret.Namespace {
		return nil
	}
	_, err = c.client.CoreV1().Secrets(key.Namespace).Update(ctx, want, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // the next event brings it back here
	}
	return err
}
