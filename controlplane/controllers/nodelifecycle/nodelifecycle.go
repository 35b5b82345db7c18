// Package nodelifecycle watches node heartbeats and says when a node is
// gone: a node whose Lease in kube-node-lease and whose Ready condition's
// lastHeartbeatTime have not moved for the grace period gets its Ready and
// pressure conditions set to Unknown, the pods on it marked not ready (so
// endpoints drop them), and the taints that follow from its conditions
// (node.kubernetes.io/unreachable and not-ready, NoExecute and NoSchedule,
// the pressure and unschedulable NoSchedule taints), as upstream's node
// lifecycle controller with TaintNodesByCondition does. Evicting pods from
// NoExecute taints is the tainteviction controller's job.
package nodelifecycle

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	coordlisters "k8s.io/client-go/listers/coordination/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
)

// Config tunes the controller.
type Config struct {
	// GracePeriod is how long a node may go without a heartbeat before it
	// is Unknown (upstream's --node-monitor-grace-period).
	GracePeriod time.Duration
	// MonitorPeriod is how often nodes are checked (--node-monitor-period).
	MonitorPeriod time.Duration
	// Clock is the time source; nil means the real clock. Tests pass a fake.
	Clock clock.WithTicker
}

// DefaultConfig is upstream's timing as the issue asks: a 50 s grace
// period checked every 5 s.
func DefaultConfig() Config {
	return Config{GracePeriod: 50 * time.Second, MonitorPeriod: 5 * time.Second}
}

// Upstream's condition texts for a node that stopped reporting.
const (
	reasonUnknown      = "NodeStatusUnknown"
	messageUnknown     = "Kubelet stopped posting node status."
	reasonNeverUpdated = "NodeStatusNeverUpdated"
	messageNever       = "Kubelet never posted node status."
)

// watchedConditions are the conditions set to Unknown when a node goes quiet.
var watchedConditions = []corev1.NodeConditionType{corev1.NodeReady, corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure}

// health is what the controller remembers of a node's heartbeats. probe is
// when this controller last saw one, on its own clock, so that skew between
// the node's clock and ours does not matter (as upstream).
type health struct {
	probe     time.Time
	heartbeat metav1.Time      // Ready's lastHeartbeatTime when last seen
	renew     metav1.MicroTime // the lease's renewTime when last seen
}

// Controller checks node health on a ticker.
type Controller struct {
	client  kubernetes.Interface
	factory informers.SharedInformerFactory
	cfg     Config
	nodes   corelisters.NodeLister
	leases  coordlisters.LeaseLister
	pods    corelisters.PodLister
	synced  []cache.InformerSynced
	// health is touched only by the monitor loop, so needs no lock.
	health map[string]*health
}

// New returns the controller; zero fields of cfg take DefaultConfig's values.
func New(client kubernetes.Interface, factory informers.SharedInformerFactory, cfg Config) *Controller {
	def := DefaultConfig()
	if cfg.GracePeriod <= 0 {
		cfg.GracePeriod = def.GracePeriod
	}
	if cfg.MonitorPeriod <= 0 {
		cfg.MonitorPeriod = def.MonitorPeriod
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	nodeInf, leaseInf, podInf := factory.Core().V1().Nodes(), factory.Coordination().V1().Leases(), factory.Core().V1().Pods()
	return &Controller{client: client, factory: factory, cfg: cfg, health: map[string]*health{},
		nodes: nodeInf.Lister(), leases: leaseInf.Lister(), pods: podInf.Lister(),
		synced: []cache.InformerSynced{nodeInf.Informer().HasSynced, leaseInf.Informer().HasSynced, podInf.Informer().HasSynced}}
}

// Run checks every node each monitor period until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	c.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return ctx.Err()
	}
	t := c.cfg.Clock.NewTicker(c.cfg.MonitorPeriod)
	defer t.Stop()
	for {
		c.monitor(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
	}
}

// monitor is one pass over every node. Failures are logged and retried on
// the next pass, which recomputes everything from the caches.
func (c *Controller) monitor(ctx context.Context) {
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		slog.Error("node lifecycle: list nodes", "err", err)
		return
	}
	now := c.cfg.Clock.Now()
	seen := make(map[string]bool, len(nodes))
	var unknown []string
	for _, n := range nodes {
		seen[n.Name] = true
		lease, _ := c.leases.Leases(corev1.NamespaceNodeLease).Get(n.Name)
		probe := c.observe(n, lease, now)
		ready, err := c.update(ctx, n, probe, now)
		if err != nil && ctx.Err() == nil {
			slog.Warn("node lifecycle: update failed, will retry", "node", n.Name, "err", err)
		}
		if ready == corev1.ConditionUnknown {
			unknown = append(unknown, n.Name)
		}
	}
	for name := range c.health {
		if !seen[name] {
			delete(c.health, name)
		}
	}
	if len(unknown) > 0 {
		c.markPodsNotReady(ctx, unknown)
	}
}

// observe records a node's heartbeats and returns when the last one was
// seen. A node first seen with no Ready condition counts from its creation,
// so a node that never reports gets one grace period from when it was made.
func (c *Controller) observe(n *corev1.Node, lease *coordinationv1.Lease, now time.Time) time.Time {
	ready := condition(n.Status.Conditions, corev1.NodeReady)
	h := c.health[n.Name]
	if h == nil {
		h = &health{probe: now}
		if ready == nil {
			h.probe = n.CreationTimestamp.Time
		} else {
			h.heartbeat = ready.LastHeartbeatTime
		}
		if lease != nil && lease.Spec.RenewTime != nil {
			h.renew = *lease.Spec.RenewTime
		}
		c.health[n.Name] = h
		return h.probe
	}
	if ready != nil && !ready.LastHeartbeatTime.Equal(&h.heartbeat) {
		h.heartbeat, h.probe = ready.LastHeartbeatTime, now
	}
	if lease != nil && lease.Spec.RenewTime != nil && lease.Spec.RenewTime.After(h.renew.Time) {
		h.renew, h.probe = *lease.Spec.RenewTime, now
	}
	return h.probe
}

// update writes the node's conditions and taints where they should change,
// and returns its Ready status as written.
func (c *Controller) update(ctx context.Context, n *corev1.Node, probe, now time.Time) (corev1.ConditionStatus, error) {
	conds, changed := staleConditions(n, probe, now, c.cfg.GracePeriod)
	if changed {
		cp := n.DeepCopy()
		cp.Status.Conditions = conds
		updated, err := c.client.CoreV1().Nodes().UpdateStatus(ctx, cp, metav1.UpdateOptions{})
		if err != nil {
			return readyStatus(n), fmt.Errorf("node %s status: %w", n.Name, err)
		}
		slog.Info("node stopped posting status", "node", n.Name, "since", probe.Format(time.RFC3339))
		n = updated
	}
	taints, changed := reconcileTaints(n.Spec.Taints, wantTaints(n), now)
	if changed {
		cp := n.DeepCopy()
		cp.Spec.Taints = taints
		if _, err := c.client.CoreV1().Nodes().Update(ctx, cp, metav1.UpdateOptions{}); err != nil {
			return readyStatus(n), fmt.Errorf("node %s taints: %w", n.Name, err)
		}
	}
	return readyStatus(n), nil
}

// markPodsNotReady sets Ready=False on the pods of unreachable nodes, as
// upstream does: nobody else will, with the node's agent gone.
func (c *Controller) markPodsNotReady(ctx context.Context, nodes []string) {
	on := make(map[string]bool, len(nodes))
	for _, n := range nodes {
		on[n] = true
	}
	pods, err := c.pods.List(labels.Everything())
	if err != nil {
		return
	}
	now := metav1.NewTime(c.cfg.Clock.Now())
	for _, p := range pods {
		if !on[p.Spec.NodeName] || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		cp := p.DeepCopy()
		marked := false
		for i := range cp.Status.Conditions {
			if cond := &cp.Status.Conditions[i]; cond.Type == corev1.PodReady && cond.Status != corev1.ConditionFalse {
				cond.Status, cond.LastTransitionTime, marked = corev1.ConditionFalse, now, true
			}
		}
		if !marked {
			continue
		}
		if _, err := c.client.CoreV1().Pods(p.Namespace).UpdateStatus(ctx, cp, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
			slog.Warn("node lifecycle: cannot mark pod not ready", "pod", p.Namespace+"/"+p.Name, "node", p.Spec.NodeName, "err", err)
		}
	}
}

func condition(conds []corev1.NodeCondition, t corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range conds {
		if conds[i].Type == t {
			return &conds[i]
		}
	}
	return nil
}

func readyStatus(n *corev1.Node) corev1.ConditionStatus {
	if c := condition(n.Status.Conditions, corev1.NodeReady); c != nil {
		return c.Status
	}
	return ""
}

// staleConditions returns the node's conditions with Ready and the
// pressure conditions set to Unknown if its last heartbeat (probe) is more
// than grace ago, and whether that changed anything. Missing conditions are
// added as never updated, with the node's creation as their heartbeat.
func staleConditions(n *corev1.Node, probe, now time.Time, grace time.Duration) ([]corev1.NodeCondition, bool) {
	if !now.After(probe.Add(grace)) {
		return n.Status.Conditions, false
	}
	conds := append([]corev1.NodeCondition(nil), n.Status.Conditions...)
	changed := false
	ts := metav1.NewTime(now)
	for _, t := range watchedConditions {
		cond := condition(conds, t)
		switch {
		case cond == nil:
			conds = append(conds, corev1.NodeCondition{Type: t, Status: corev1.ConditionUnknown, Reason: reasonNeverUpdated,
				Message: messageNever, LastHeartbeatTime: n.CreationTimestamp, LastTransitionTime: ts})
			changed = true
		case cond.Status != corev1.ConditionUnknown:
			cond.Status, cond.Reason, cond.Message, cond.LastTransitionTime = corev1.ConditionUnknown, reasonUnknown, messageUnknown, ts
			changed = true
		}
	}
	return conds, changed
}

// managed is every taint this controller owns: it adds and removes these
// and leaves every other taint alone.
var managed = []corev1.Taint{
	{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoExecute},
	{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoExecute},
	{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodeMemoryPressure, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodeDiskPressure, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodePIDPressure, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodeNetworkUnavailable, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule},
}

// wantTaints is the managed taints a node's conditions call for.
func wantTaints(n *corev1.Node) []corev1.Taint {
	var want []corev1.Taint
	add := func(key string, effects ...corev1.TaintEffect) {
		for _, e := range effects {
			want = append(want, corev1.Taint{Key: key, Effect: e})
		}
	}
	for _, c := range n.Status.Conditions {
		switch {
		case c.Type == corev1.NodeReady && c.Status == corev1.ConditionFalse:
			add(corev1.TaintNodeNotReady, corev1.TaintEffectNoExecute, corev1.TaintEffectNoSchedule)
		case c.Type == corev1.NodeReady && c.Status == corev1.ConditionUnknown:
			add(corev1.TaintNodeUnreachable, corev1.TaintEffectNoExecute, corev1.TaintEffectNoSchedule)
		case c.Type == corev1.NodeMemoryPressure && c.Status == corev1.ConditionTrue:
			add(corev1.TaintNodeMemoryPressure, corev1.TaintEffectNoSchedule)
		case c.Type == corev1.NodeDiskPressure && c.Status == corev1.ConditionTrue:
			add(corev1.TaintNodeDiskPressure, corev1.TaintEffectNoSchedule)
		case c.Type == corev1.NodePIDPressure && c.Status == corev1.ConditionTrue:
			add(corev1.TaintNodePIDPressure, corev1.TaintEffectNoSchedule)
		case c.Type == corev1.NodeNetworkUnavailable && c.Status == corev1.ConditionTrue:
			add(corev1.TaintNodeNetworkUnavailable, corev1.TaintEffectNoSchedule)
		}
	}
	if n.Spec.Unschedulable {
		add(corev1.TaintNodeUnschedulable, corev1.TaintEffectNoSchedule)
	}
	return want
}

func isManaged(t corev1.Taint) bool {
	for _, m := range managed {
		if m.Key == t.Key && m.Effect == t.Effect {
			return true
		}
	}
	return false
}

func hasTaint(taints []corev1.Taint, key string, effect corev1.TaintEffect) bool {
	for _, t := range taints {
		if t.Key == key && t.Effect == effect {
			return true
		}
	}
	return false
}

// reconcileTaints returns cur with the managed taints made to match want,
// keeping other taints and the managed ones already present as they are
// (their timeAdded tells when the condition began), and whether it changed.
// NoExecute taints get timeAdded, as upstream sets it.
func reconcileTaints(cur, want []corev1.Taint, now time.Time) ([]corev1.Taint, bool) {
	var out []corev1.Taint
	changed := false
	for _, t := range cur {
		if isManaged(t) && !hasTaint(want, t.Key, t.Effect) {
			changed = true
			continue
		}
		out = append(out, t)
	}
	for _, w := range want {
		if hasTaint(out, w.Key, w.Effect) {
			continue
		}
		if w.Effect == corev1.TaintEffectNoExecute {
			ts := metav1.NewTime(now)
			w.TimeAdded = &ts
		}
		out = append(out, w)
		changed = true
	}
	if !changed {
		return cur, false
	}
	return out, true
}
