package tainteviction

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
)

var (
	unreachable = corev1.Taint{Key: corev1.TaintNodeUnreachable, Effect: corev1.TaintEffectNoExecute}
	notReady    = corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoExecute}
)

func tol(key string, secs *int64) corev1.Toleration {
	return corev1.Toleration{Key: key, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: secs}
}

func TestTolerationTime(t *testing.T) {
	for _, tc := range []struct {
		name    string
		taints  []corev1.Taint
		tols    []corev1.Toleration
		d       time.Duration
		forever bool
	}{
		{"no taints", nil, nil, 0, true},
		{"not tolerated", []corev1.Taint{unreachable}, nil, 0, false},
		{"another key tolerated", []corev1.Taint{unreachable}, []corev1.Toleration{tol(corev1.TaintNodeNotReady, nil)}, 0, false},
		{"tolerated forever", []corev1.Taint{unreachable}, []corev1.Toleration{tol(corev1.TaintNodeUnreachable, nil)}, 0, true},
		{"wildcard", []corev1.Taint{unreachable}, []corev1.Toleration{{Operator: corev1.TolerationOpExists}}, 0, true},
		{"for a while", []corev1.Taint{unreachable}, []corev1.Toleration{tol(corev1.TaintNodeUnreachable, ptr.To[int64](300))}, 300 * time.Second, false},
		{"shortest of two matching", []corev1.Taint{unreachable},
			[]corev1.Toleration{tol(corev1.TaintNodeUnreachable, nil), tol(corev1.TaintNodeUnreachable, ptr.To[int64](30))}, 30 * time.Second, false},
		{"shortest over taints", []corev1.Taint{unreachable, notReady},
			[]corev1.Toleration{tol(corev1.TaintNodeUnreachable, ptr.To[int64](20)), tol(corev1.TaintNodeNotReady, ptr.To[int64](10))}, 10 * time.Second, false},
		{"one of two taints untolerated", []corev1.Taint{unreachable, notReady},
			[]corev1.Toleration{tol(corev1.TaintNodeUnreachable, nil)}, 0, false},
		{"negative seconds", []corev1.Taint{unreachable}, []corev1.Toleration{tol(corev1.TaintNodeUnreachable, ptr.To[int64](-5))}, 0, false},
	} {
		d, forever := tolerationTime(tc.taints, tc.tols)
		if d != tc.d || forever != tc.forever {
			t.Errorf("%s: got %s forever=%v, want %s forever=%v", tc.name, d, forever, tc.d, tc.forever)
		}
	}
}

type fixture struct {
	t      *testing.T
	ctx    context.Context
	client *fake.Clientset
	clk    *clocktesting.FakeClock
	c      *Controller
	f      informers.SharedInformerFactory
}

func newFixture(t *testing.T, objs ...*corev1.Pod) *fixture {
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{Taints: []corev1.Taint{unreachable}}}
	client := fake.NewSimpleClientset(node)
	f := informers.NewSharedInformerFactory(client, 0)
	clk := clocktesting.NewFakeClock(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	c := New(client, f, clk)
	t.Cleanup(c.queue.ShutDown)
	f.Core().V1().Nodes().Informer().GetIndexer().Add(node)
	for _, p := range objs {
		client.Tracker().Add(p)
		f.Core().V1().Pods().Informer().GetIndexer().Add(p)
	}
	return &fixture{t: t, ctx: context.Background(), client: client, clk: clk, c: c, f: f}
}

func pod(name string, tols ...corev1.Toleration) *corev1.Pod {
	return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name)},
		Spec: corev1.PodSpec{NodeName: "n1", Tolerations: tols}}
}

func (f *fixture) sync(name string) {
	f.t.Helper()
	if err := f.c.sync(f.ctx, "default/"+name); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) exists(name string) bool {
	_, err := f.client.CoreV1().Pods("default").Get(f.ctx, name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		f.t.Fatal(err)
	}
	return err == nil
}

func (f *fixture) events(reason string) []corev1.Event {
	evs, err := f.client.CoreV1().Events("default").List(f.ctx, metav1.ListOptions{})
	if err != nil {
		f.t.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range evs.Items {
		if e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

func TestUntoleratedPodEvictedAtOnce(t *testing.T) {
	f := newFixture(t, pod("p"))
	f.sync("p")
	if f.exists("p") {
		t.Fatal("untolerating pod not evicted")
	}
	evs := f.events("TaintManagerEviction")
	if len(evs) != 1 || evs[0].Message != "Marking for deletion Pod default/p" || evs[0].InvolvedObject.Name != "p" {
		t.Fatalf("events %+v", evs)
	}
}

func TestEvictionAfterTolerationSeconds(t *testing.T) {
	f := newFixture(t, pod("p", tol(corev1.TaintNodeUnreachable, ptr.To[int64](300))))
	f.sync("p") // the clock starts now
	f.clk.Step(299 * time.Second)
	f.sync("p")
	if !f.exists("p") {
		t.Fatal("evicted before tolerationSeconds ran out")
	}
	f.clk.Step(time.Second)
	f.sync("p")
	if f.exists("p") {
		t.Fatal("not evicted once tolerationSeconds ran out")
	}
}

func TestEvictionCancelledWhenTaintGoes(t *testing.T) {
	f := newFixture(t, pod("p", tol(corev1.TaintNodeUnreachable, ptr.To[int64](60))))
	f.sync("p")
	f.clk.Step(30 * time.Second)
	healthy := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	f.f.Core().V1().Nodes().Informer().GetIndexer().Update(healthy)
	f.sync("p")
	if len(f.events("TaintManagerEviction")) != 1 {
		t.Fatalf("no cancellation event: %+v", f.events("TaintManagerEviction"))
	}
	// Tainted again: the clock starts over rather than going on from before.
	f.f.Core().V1().Nodes().Informer().GetIndexer().Update(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Spec: corev1.NodeSpec{Taints: []corev1.Taint{unreachable}}})
	f.sync("p")
	f.clk.Step(40 * time.Second)
	f.sync("p")
	if !f.exists("p") {
		t.Fatal("evicted on the earlier clock")
	}
	f.clk.Step(20 * time.Second)
	f.sync("p")
	if f.exists("p") {
		t.Fatal("not evicted after a full toleration")
	}
}

func TestToleratedForeverStays(t *testing.T) {
	f := newFixture(t, pod("p", tol(corev1.TaintNodeUnreachable, nil)))
	f.sync("p")
	f.clk.Step(24 * time.Hour)
	f.sync("p")
	if !f.exists("p") {
		t.Fatal("pod tolerating forever was evicted")
	}
}
