// Package endpoints keeps, for every Service with a selector, the Endpoints
// object and the EndpointSlices listing the pods that back it: their IPs,
// their resolved target ports, and whether each is ready, serving or
// terminating. Services without a selector are left to their users.
package endpoints

import (
	"context"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/controllers/workloop"
)

// ManagedBy marks the slices this controller owns, as upstream's does.
const ManagedBy = "endpointslice-controller.k8s.io"

// maxPerSlice is upstream's default number of endpoints in one slice.
const maxPerSlice = 100

// Controller maintains Endpoints and EndpointSlices.
type Controller struct {
	client   kubernetes.Interface
	factory  informers.SharedInformerFactory
	queue    workqueue.TypedRateLimitingInterface[string] // "namespace/service"
	services corelisters.ServiceLister
	pods     corelisters.PodLister
	slices   discoverylisters.EndpointSliceLister
}

// New returns the controller.
func New(client kubernetes.Interface, factory informers.SharedInformerFactory) *Controller {
	return &Controller{client: client, factory: factory, queue: workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.DefaultTypedControllerRateLimiter[string](), workqueue.TypedRateLimitingQueueConfig[string]{Name: "endpoints"})}
}

// Run works until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	factory := c.factory
	svcInf, podInf, sliceInf := factory.Core().V1().Services(), factory.Core().V1().Pods(), factory.Discovery().V1().EndpointSlices()
	c.services, c.pods, c.slices = svcInf.Lister(), podInf.Lister(), sliceInf.Lister()
	svcKey := func(obj interface{}) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if s, ok := obj.(*corev1.Service); ok {
			c.queue.Add(s.Namespace + "/" + s.Name)
		}
	}
	svcInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: svcKey, UpdateFunc: func(_, o interface{}) { svcKey(o) }, DeleteFunc: svcKey})
	podChanged := func(objs ...interface{}) {
		for _, obj := range objs {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				c.queueServicesOf(p)
			}
		}
	}
	podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(o interface{}) { podChanged(o) }, UpdateFunc: func(old, o interface{}) { podChanged(old, o) }, DeleteFunc: func(o interface{}) { podChanged(o) }})
	// Start is idempotent: it starts what other controllers have not yet.
	factory.Start(ctx.Done())
	return workloop.Run(ctx, "endpoints", c.queue, 4, c.sync, svcInf.Informer().HasSynced, podInf.Informer().HasSynced, sliceInf.Informer().HasSynced)
}

func (c *Controller) queueServicesOf(p *corev1.Pod) {
	svcs, err := c.services.Services(p.Namespace).List(labels.Everything())
	if err != nil {
		return
	}
	for _, s := range svcs {
		if len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(p.Labels)) {
			c.queue.Add(s.Namespace + "/" + s.Name)
		}
	}
}

// endpoint is one pod behind a service, with the ports it resolves to.
type endpoint struct {
	pod         *corev1.Pod
	ready       bool
	terminating bool
	ports       []corev1.EndpointPort // in service port order
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// targetPort resolves a service port's target on a pod (a named port looks
// up the pod's container ports).
func targetPort(sp corev1.ServicePort, p *corev1.Pod) (int32, bool) {
	if sp.TargetPort.Type == intstr.Int {
		if sp.TargetPort.IntVal == 0 {
			return sp.Port, true
		}
		return sp.TargetPort.IntVal, true
	}
	for _, c := range p.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == sp.TargetPort.StrVal && cp.Protocol == sp.Protocol {
				return cp.ContainerPort, true
			}
		}
	}
	return 0, false
}

func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, _ := strings.Cut(key, "/")
	svc, err := c.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		// The slices go with their owner; Endpoints have no owner reference.
		err := c.client.CoreV1().Endpoints(ns).Delete(ctx, name, metav1.DeleteOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	}
	if err != nil {
		return err
	}
	if len(svc.Spec.Selector) == 0 || svc.Spec.Type == corev1.ServiceTypeExternalName {
		return nil
	}
	pods, err := c.pods.Pods(ns).List(labels.SelectorFromSet(svc.Spec.Selector))
	if err != nil {
		return err
	}
	var eps []endpoint
	for _, p := range pods {
		if p.Status.PodIP == "" || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		e := endpoint{pod: p, ready: podReady(p) || svc.Spec.PublishNotReadyAddresses, terminating: p.DeletionTimestamp != nil}
		for _, sp := range svc.Spec.Ports {
			port, ok := targetPort(sp, p)
			if !ok {
				continue
			}
			e.ports = append(e.ports, corev1.EndpointPort{Name: sp.Name, Port: port, Protocol: sp.Protocol, AppProtocol: sp.AppProtocol})
		}
		eps = append(eps, e)
	}
	sort.Slice(eps, func(i, j int) bool { return eps[i].pod.Name < eps[j].pod.Name })
	if err := c.syncEndpoints(ctx, svc, eps); err != nil {
		return err
	}
	return c.syncSlices(ctx, svc, eps)
}

func portsKey(ports []corev1.EndpointPort) string {
	var b strings.Builder
	for _, p := range ports {
		fmt.Fprintf(&b, "%s/%d/%s,", p.Name, p.Port, p.Protocol)
	}
	return b.String()
}

// syncEndpoints writes the Endpoints object: one subset per distinct port
// set, ready pods as addresses and the others as notReadyAddresses.
// Terminating pods are left out, as upstream does.
func (c *Controller) syncEndpoints(ctx context.Context, svc *corev1.Service, eps []endpoint) error {
	subsets := map[string]*corev1.EndpointSubset{}
	var order []string
	for _, e := range eps {
		if e.terminating {
			continue
		}
		k := portsKey(e.ports)
		ss := subsets[k]
		if ss == nil {
			ss = &corev1.EndpointSubset{Ports: e.ports}
			subsets[k] = ss
			order = append(order, k)
		}
		addr := corev1.EndpointAddress{IP: e.pod.Status.PodIP, NodeName: ptr.To(e.pod.Spec.NodeName),
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: e.pod.Namespace, Name: e.pod.Name, UID: e.pod.UID}}
		if e.pod.Spec.NodeName == "" {
			addr.NodeName = nil
		}
		if e.ready {
			ss.Addresses = append(ss.Addresses, addr)
		} else {
			ss.NotReadyAddresses = append(ss.NotReadyAddresses, addr)
		}
	}
	want := &corev1.Endpoints{ObjectMeta: metav1.ObjectMeta{Name: svc.Name, Namespace: svc.Namespace, Labels: svc.Labels}}
	for _, k := range order {
		want.Subsets = append(want.Subsets, *subsets[k])
	}
	api := c.client.CoreV1().Endpoints(svc.Namespace)
	cur, err := api.Get(ctx, svc.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = api.Create(ctx, want, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	if apiequality.Semantic.DeepEqual(cur.Subsets, want.Subsets) && apiequality.Semantic.DeepEqual(cur.Labels, want.Labels) {
		return nil
	}
	cur.Subsets, cur.Labels = want.Subsets, want.Labels
	_, err = api.Update(ctx, cur, metav1.UpdateOptions{})
	return err
}

// syncSlices writes the EndpointSlices: per distinct port set, chunks of up
// to maxPerSlice endpoints, owned by the service.
func (c *Controller) syncSlices(ctx context.Context, svc *corev1.Service, eps []endpoint) error {
	groups := map[string][]endpoint{}
	var order []string
	for _, e := range eps {
		k := portsKey(e.ports)
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], e)
	}
	var want []*discoveryv1.EndpointSlice
	for _, k := range order {
		g := groups[k]
		for start := 0; start < len(g); start += maxPerSlice {
			want = append(want, sliceOf(svc, g[start:min(start+maxPerSlice, len(g))], len(want)))
		}
	}
	if len(want) == 0 {
		want = append(want, sliceOf(svc, nil, 0)) // an empty slice says "no endpoints", as upstream
	}
	existing, err := c.slices.EndpointSlices(svc.Namespace).List(labels.SelectorFromSet(labels.Set{
		discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: ManagedBy}))
	if err != nil {
		return err
	}
	sort.Slice(existing, func(i, j int) bool { return existing[i].Name < existing[j].Name })
	api := c.client.DiscoveryV1().EndpointSlices(svc.Namespace)
	for i, w := range want {
		if i < len(existing) {
			cur := existing[i]
			if apiequality.Semantic.DeepEqual(cur.Endpoints, w.Endpoints) && apiequality.Semantic.DeepEqual(cur.Ports, w.Ports) {
				continue
			}
			upd := cur.DeepCopy()
			upd.Endpoints, upd.Ports, upd.Labels = w.Endpoints, w.Ports, w.Labels
			if _, err := api.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
				return err
			}
			continue
		}
		// A name taken means the informer has not shown our last create
		// yet: the retry will see it.
		if _, err := api.Create(ctx, w, metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	for _, extra := range existing[min(len(want), len(existing)):] {
		if err := api.Delete(ctx, extra.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return nil
}

// sliceName names the n-th slice of a service from its uid, so that a slice
// is never created twice under two names.
func sliceName(svc *corev1.Service, n int) string {
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%d", svc.UID, n)
	base := svc.Name
	if len(base) > 200 {
		base = base[:200]
	}
	return base + "-" + rand.SafeEncodeString(fmt.Sprint(h.Sum32()))[:5]
}

func sliceOf(svc *corev1.Service, eps []endpoint, n int) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: sliceName(svc, n), Namespace: svc.Namespace,
			Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name, discoveryv1.LabelManagedBy: ManagedBy},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{},
	}
	if len(eps) > 0 {
		for _, p := range eps[0].ports {
			s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: ptr.To(p.Name), Port: ptr.To(p.Port), Protocol: ptr.To(p.Protocol), AppProtocol: p.AppProtocol})
		}
	}
	for _, e := range eps {
		ep := discoveryv1.Endpoint{
			Addresses: []string{e.pod.Status.PodIP},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(e.ready && !e.terminating), Serving: ptr.To(e.ready),
				Terminating: ptr.To(e.terminating)},
			TargetRef: &corev1.ObjectReference{Kind: "Pod", Namespace: e.pod.Namespace, Name: e.pod.Name, UID: e.pod.UID},
		}
		if e.pod.Spec.NodeName != "" {
			ep.NodeName = ptr.To(e.pod.Spec.NodeName)
		}
		s.Endpoints = append(s.Endpoints, ep)
	}
	return s
}
