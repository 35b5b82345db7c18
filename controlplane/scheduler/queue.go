package scheduler

import (
	"container/heap"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/navarch/navarch/controlplane/scheduler/preemption"
)

// activeQueue is the order pods are tried in, as upstream's active queue:
// higher priority first, then the older pod, then first come. It is the
// storage under the work queue (which keeps de-duplication, back-off and
// the processing set), so only the order changes.
type activeQueue struct {
	lookup func(key string) *corev1.Pod // nil when the pod is unknown
	items  queueItems
	seq    uint64
}

type queueItem struct {
	key      string
	priority int32
	created  time.Time
	seq      uint64
}

type queueItems []queueItem

func (q queueItems) Len() int { return len(q) }
func (q queueItems) Less(i, j int) bool {
	a, b := q[i], q[j]
	if a.priority != b.priority {
		return a.priority > b.priority
	}
	if !a.created.Equal(b.created) {
		return a.created.Before(b.created)
	}
	return a.seq < b.seq
}
func (q queueItems) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queueItems) Push(x any)   { *q = append(*q, x.(queueItem)) }
func (q *queueItems) Pop() any {
	old := *q
	it := old[len(old)-1]
	*q = old[:len(old)-1]
	return it
}

var _ workqueue.Queue[string] = (*activeQueue)(nil)

// Push adds a pod key, ordered by the pod's priority and age (both
// immutable, so they are read once).
func (q *activeQueue) Push(key string) {
	it := queueItem{key: key, seq: q.seq}
	q.seq++
	if p := q.lookup(key); p != nil {
		it.priority, it.created = preemption.Priority(p), p.CreationTimestamp.Time
	}
	heap.Push(&q.items, it)
}

// Touch leaves a re-added key where it is: its order cannot have changed.
func (q *activeQueue) Touch(string) {}

func (q *activeQueue) Len() int { return q.items.Len() }

func (q *activeQueue) Pop() string { return heap.Pop(&q.items).(queueItem).key }

// newQueue is the scheduler's work queue over an activeQueue.
func newQueue(lookup func(key string) *corev1.Pod) workqueue.TypedRateLimitingInterface[string] {
	inner := workqueue.NewTypedWithConfig(workqueue.TypedQueueConfig[string]{Name: "scheduler", Queue: &activeQueue{lookup: lookup}})
	return workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](10*time.Millisecond, 10*time.Second),
		workqueue.TypedRateLimitingQueueConfig[string]{
			DelayingQueue: workqueue.NewTypedDelayingQueueWithConfig(workqueue.TypedDelayingQueueConfig[string]{Queue: inner}),
		})
}

// lookupPod reads a queued pod from the scheduler's pod cache.
func (s *Scheduler) lookupPod(key string) *corev1.Pod {
	if s.pods == nil {
		return nil
	}
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	p, err := s.pods.Pods(ns).Get(name)
	if err != nil {
		return nil
	}
	return p
}
