// Package nodeipam gives every node without one a pod CIDR (spec.podCIDR
// and spec.podCIDRs) carved from the cluster CIDR (--cluster-cidr,
// --node-cidr-mask-size), as upstream's range allocator: no subnet goes to
// two nodes, the used set is rebuilt from the nodes at start, and a deleted
// node's subnet is released. Nodes that bring their own pod CIDR (hollow
// nodes do) keep it; it is marked used when it lies inside the range.
package nodeipam

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/navarch/navarch/controlplane/controllers/workloop"
	"github.com/navarch/navarch/controlplane/events"
)

// Defaults of --cluster-cidr and --node-cidr-mask-size.
const (
	DefaultClusterCIDR = "10.42.0.0/16"
	DefaultMaskSize    = 24
)

// Controller allocates node pod CIDRs.
type Controller struct {
	client  kubernetes.Interface
	factory informers.SharedInformerFactory
	queue   workqueue.TypedRateLimitingInterface[string]
	nodes   corelisters.NodeLister

	mu  sync.Mutex
	set *cidrSet
	// assigned is each node's subnet as this controller knows it. It
	// outlives the informer's view, so a node seen again before our
	// update shows up is given the same subnet, never a second one.
	assigned map[string]string
}

// New returns the controller, or an error if the range is not valid.
func New(client kubernetes.Interface, factory informers.SharedInformerFactory, clusterCIDR string, maskSize int) (*Controller, error) {
	set, err := parseRange(clusterCIDR, maskSize)
	if err != nil {
		return nil, err
	}
	return &Controller{client: client, factory: factory, set: set, assigned: map[string]string{},
		nodes: factory.Core().V1().Nodes().Lister(),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "nodeipam"})}, nil
}

// Run works until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	inf := c.factory.Core().V1().Nodes().Informer()
	enqueue := func(obj interface{}) {
		if n, ok := obj.(*corev1.Node); ok {
			c.queue.Add(n.Name)
		}
	}
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj interface{}) { enqueue(obj) },
		DeleteFunc: func(obj interface{}) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if n, ok := obj.(*corev1.Node); ok {
				c.forgetNode(n)
			}
		},
	})
	c.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return ctx.Err()
	}
	// Every subnet in use must be known before the first allocation.
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	c.mu.Lock()
	for _, n := range nodes {
		c.occupy(n)
	}
	c.mu.Unlock()
	// One worker: allocations are quick, and one at a time keeps them simple.
	return workloop.Run(ctx, "nodeipam", c.queue, 1, c.sync, inf.HasSynced)
}

// occupy records the subnets a node already has. Callers hold mu.
func (c *Controller) occupy(n *corev1.Node) {
	cidrs := n.Spec.PodCIDRs
	if len(cidrs) == 0 && n.Spec.PodCIDR != "" {
		cidrs = []string{n.Spec.PodCIDR}
	}
	for _, cidr := range cidrs {
		if c.set.occupy(cidr) {
			c.assigned[n.Name] = cidr
		}
	}
}

// forgetNode releases a deleted node's subnet.
func (c *Controller) forgetNode(n *corev1.Node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cidr := range append([]string{n.Spec.PodCIDR}, n.Spec.PodCIDRs...) {
		c.set.release(cidr)
	}
	if cidr, ok := c.assigned[n.Name]; ok {
		c.set.release(cidr)
		delete(c.assigned, n.Name)
	}
}

// sync gives one node a subnet if it has none.
func (c *Controller) sync(ctx context.Context, name string) error {
	n, err := c.nodes.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	c.mu.Lock()
	if n.Spec.PodCIDR != "" || len(n.Spec.PodCIDRs) > 0 {
		c.occupy(n)
		c.mu.Unlock()
		return nil
	}
	cidr, ok := c.assigned[name]
	if !ok {
		cidr, err = c.set.allocate()
		if err == nil {
			c.assigned[name] = cidr
		}
	}
	c.mu.Unlock()
	if errors.Is(err, ErrExhausted) {
		c.event(ctx, n, "CIDRNotAvailable", fmt.Sprintf("Node %s status is now: CIDRNotAvailable", name))
		return fmt.Errorf("node %s: %w", name, err)
	}
	if err != nil {
		return fmt.Errorf("node %s: %w", name, err)
	}
	cp := n.DeepCopy()
	cp.Spec.PodCIDR, cp.Spec.PodCIDRs = cidr, []string{cidr}
	if _, err := c.client.CoreV1().Nodes().Update(ctx, cp, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsNotFound(err) {
			c.forgetNode(cp)
			return nil
		}
		return fmt.Errorf("node %s: set pod CIDR %s: %w", name, cidr, err)
	}
	slog.Info("node pod CIDR allocated", "node", name, "podCIDR", cidr)
	return nil
}

// event records an event on a node.
func (c *Controller) event(ctx context.Context, n *corev1.Node, reason, msg string) {
	events.NewRecorder(c.client, "cidrAllocator").Event(ctx, events.Ref("v1", "Node", n), corev1.EventTypeNormal, reason, msg)
}
