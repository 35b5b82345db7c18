package scheduler

import (
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestActiveQueueOrder(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	mk := func(prio int32, minute int) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.NewTime(t0.Add(time.Duration(minute) * time.Minute))},
			Spec: corev1.PodSpec{Priority: &prio}}
	}
	pods := map[string]*corev1.Pod{
		"default/low-old": mk(0, 0), "default/low-new": mk(0, 5),
		"default/high-new": mk(100, 9), "default/high-old": mk(100, 1),
		"default/negative": mk(-10, 0),
	}
	q := &activeQueue{lookup: func(k string) *corev1.Pod { return pods[k] }}
	for _, k := range []string{"default/low-new", "default/negative", "default/gone-a", "default/high-new", "default/low-old", "default/gone-b", "default/high-old"} {
		q.Push(k)
	}
	var got []string
	for q.Len() > 0 {
		got = append(got, q.Pop())
	}
	// A key whose pod is unknown counts as priority 0 and the oldest, in
	// arrival order: it is popped at once and found gone.
	want := []string{"default/high-old", "default/high-new", "default/gone-a", "default/gone-b", "default/low-old", "default/low-new", "default/negative"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("order %v\nwant  %v", got, want)
	}
}

// The work queue over activeQueue still de-duplicates and pops by priority.
func TestQueuePopsHighestPriorityFirst(t *testing.T) {
	high, low := int32(10), int32(1)
	pods := map[string]*corev1.Pod{"a/low": {Spec: corev1.PodSpec{Priority: &low}}, "a/high": {Spec: corev1.PodSpec{Priority: &high}}}
	q := newQueue(func(k string) *corev1.Pod { return pods[k] })
	defer q.ShutDown()
	q.Add("a/low")
	q.Add("a/high")
	q.Add("a/low")
	if q.Len() != 2 {
		t.Fatalf("len %d, want 2", q.Len())
	}
	if k, _ := q.Get(); k != "a/high" {
		t.Fatalf("first %s, want a/high", k)
	}
}
