// Package podgc deletes pods nobody else will, as upstream's pod garbage
// collector: terminated pods (Succeeded or Failed) beyond a threshold,
// oldest first; pods bound to nodes that no longer exist, once the node has
// been missing for a quarantine and a live read confirms it; terminating
// pods that were never scheduled; and terminating pods on not-ready nodes
// marked node.kubernetes.io/out-of-service. Deletions are forced (grace 0),
// since no node agent is left to finish them.
package podgc

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
)

// Config tunes the collector.
type Config struct {
	// TerminatedThreshold is how many terminated pods may stay
	// (--terminated-pod-gc-threshold); zero or less keeps them all.
	TerminatedThreshold int
	// Quarantine is how long a node must be missing before its pods go.
	Quarantine time.Duration
	// Period is how often the collector runs.
	Period time.Duration
	// Clock is the time source; nil is the real clock.
	Clock clock.WithTicker
}

// DefaultConfig is upstream's: 12500 terminated pods, a 40 s quarantine,
// a pass every 20 s.
func DefaultConfig() Config {
	return Config{TerminatedThreshold: 12500, Quarantine: 40 * time.Second, Period: 20 * time.Second}
}

// Collector is the pod garbage collector.
type Collector struct {
	client  kubernetes.Interface
	factory informers.SharedInformerFactory
	cfg     Config
	pods    corelisters.PodLister
	nodes   corelisters.NodeLister
	synced  []cache.InformerSynced
	// missing holds when each node named by a pod was first seen missing.
	// Only the collector's loop touches it.
	missing map[string]time.Time
}

// New returns the collector; zero Quarantine and Period take the defaults.
func New(client kubernetes.Interface, factory informers.SharedInformerFactory, cfg Config) *Collector {
	def := DefaultConfig()
	if cfg.Quarantine <= 0 {
		cfg.Quarantine = def.Quarantine
	}
	if cfg.Period <= 0 {
		cfg.Period = def.Period
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.RealClock{}
	}
	podInf, nodeInf := factory.Core().V1().Pods(), factory.Core().V1().Nodes()
	return &Collector{client: client, factory: factory, cfg: cfg, pods: podInf.Lister(), nodes: nodeInf.Lister(),
		synced:  []cache.InformerSynced{podInf.Informer().HasSynced, nodeInf.Informer().HasSynced},
		missing: map[string]time.Time{}}
}

// Run collects each period until ctx ends.
func (c *Collector) Run(ctx context.Context) error {
	c.factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), c.synced...) {
		return ctx.Err()
	}
	t := c.cfg.Clock.NewTicker(c.cfg.Period)
	defer t.Stop()
	for {
		c.collect(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C():
		}
	}
}

// victim is a pod to delete and why.
type victim struct {
	pod    *corev1.Pod
	reason string // for the log and, for orphans, the DisruptionTarget condition
	orphan bool
}

// collect is one pass.
func (c *Collector) collect(ctx context.Context) {
	pods, err := c.pods.List(labels.Everything())
	if err != nil {
		return
	}
	nodeList, err := c.nodes.List(labels.Everything())
	if err != nil {
		return
	}
	nodes := make(map[string]*corev1.Node, len(nodeList))
	for _, n := range nodeList {
		nodes[n.Name] = n
	}
	now := c.cfg.Clock.Now()
	var victims []victim
	victims = append(victims, terminatedOverThreshold(pods, c.cfg.TerminatedThreshold)...)
	victims = append(victims, outOfService(pods, nodes)...)
	victims = append(victims, unscheduledTerminating(pods)...)
	for _, name := range c.goneNodes(ctx, pods, nodes, now) {
		for _, p := range pods {
			if p.Spec.NodeName == name {
				victims = append(victims, victim{pod: p, reason: "node no longer exists", orphan: true})
			}
		}
	}
	done := map[string]bool{}
	for _, v := range victims {
		key := v.pod.Namespace + "/" + v.pod.Name
		if done[key] {
			continue
		}
		done[key] = true
		if err := c.delete(ctx, v); err != nil && ctx.Err() == nil {
			slog.Warn("pod gc: delete failed, will retry", "pod", key, "err", err)
		}
	}
}

func terminated(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// terminatedOverThreshold picks the oldest terminated pods beyond threshold.
func terminatedOverThreshold(pods []*corev1.Pod, threshold int) []victim {
	if threshold <= 0 {
		return nil
	}
	var done []*corev1.Pod
	for _, p := range pods {
		if terminated(p) {
			done = append(done, p)
		}
	}
	if len(done) <= threshold {
		return nil
	}
	sort.SliceStable(done, func(i, j int) bool {
		a, b := done[i].CreationTimestamp, done[j].CreationTimestamp
		if !a.Equal(&b) {
			return a.Before(&b)
		}
		return done[i].Namespace+"/"+done[i].Name < done[j].Namespace+"/"+done[j].Name
	})
	var out []victim
	for _, p := range done[:len(done)-threshold] {
		out = append(out, victim{pod: p, reason: "terminated pods over threshold"})
	}
	return out
}

// unscheduledTerminating picks pods being deleted that no node will finish.
func unscheduledTerminating(pods []*corev1.Pod) []victim {
	var out []victim
	for _, p := range pods {
		if p.DeletionTimestamp != nil && p.Spec.NodeName == "" {
			out = append(out, victim{pod: p, reason: "terminating and never scheduled"})
		}
	}
	return out
}

// outOfService picks terminating pods on not-ready nodes that an operator
// marked out of service: their node will not finish them.
func outOfService(pods []*corev1.Pod, nodes map[string]*corev1.Node) []victim {
	var out []victim
	for _, p := range pods {
		n := nodes[p.Spec.NodeName]
		if p.DeletionTimestamp == nil || n == nil || nodeReady(n) {
			continue
		}
		for _, t := range n.Spec.Taints {
			if t.Key == corev1.TaintNodeOutOfService && (t.Effect == corev1.TaintEffectNoExecute || t.Effect == corev1.TaintEffectNoSchedule) {
				out = append(out, victim{pod: p, reason: "terminating on an out-of-service node"})
				break
			}
		}
	}
	return out
}

func nodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// missingNodes updates the quarantine with the nodes pods name that the
// cache does not have, and returns those missing for longer than it.
func missingNodes(pods []*corev1.Pod, nodes map[string]*corev1.Node, since map[string]time.Time, now time.Time, quarantine time.Duration) []string {
	named := map[string]bool{}
	for _, p := range pods {
		if p.Spec.NodeName != "" && nodes[p.Spec.NodeName] == nil {
			named[p.Spec.NodeName] = true
		}
	}
	for n := range since {
		if !named[n] {
			delete(since, n) // back, or no pods left on it
		}
	}
	var out []string
	for n := range named {
		first, ok := since[n]
		if !ok {
			since[n] = now
			continue
		}
		if now.Sub(first) >= quarantine {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// goneNodes is missingNodes confirmed by a live read, as upstream does, so
// a lagging cache never costs a live node its pods.
func (c *Collector) goneNodes(ctx context.Context, pods []*corev1.Pod, nodes map[string]*corev1.Node, now time.Time) []string {
	var out []string
	for _, name := range missingNodes(pods, nodes, c.missing, now, c.cfg.Quarantine) {
		_, err := c.client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			out = append(out, name)
		case err == nil:
			delete(c.missing, name)
		}
	}
	return out
}

// delete force-deletes one pod; an orphan is first marked Failed with a
// DisruptionTarget condition, as upstream does.
func (c *Collector) delete(ctx context.Context, v victim) error {
	p := v.pod
	pods := c.client.CoreV1().Pods(p.Namespace)
	if v.orphan {
		cp := p.DeepCopy()
		if !terminated(cp) {
			cp.Status.Phase = corev1.PodFailed
		}
		cond := corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: "DeletionByPodGC",
			Message: "PodGC: node no longer exists", LastTransitionTime: metav1.NewTime(c.cfg.Clock.Now())}
		found := false
		for i := range cp.Status.Conditions {
			if cp.Status.Conditions[i].Type == cond.Type {
				cp.Status.Conditions[i], found = cond, true
			}
		}
		if !found {
			cp.Status.Conditions = append(cp.Status.Conditions, cond)
		}
		if _, err := pods.UpdateStatus(ctx, cp, metav1.UpdateOptions{}); err != nil && !apierrors.IsNotFound(err) {
			slog.Debug("pod gc: cannot mark pod failed", "pod", p.Namespace+"/"+p.Name, "err", err)
		}
	}
	slog.Info("pod gc: deleting pod", "pod", p.Namespace+"/"+p.Name, "node", p.Spec.NodeName, "why", v.reason)
	err := pods.Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0)), Preconditions: metav1.NewUIDPreconditions(string(p.UID))})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	return nil
}
