package statefulset_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/controlplane/controllers/statefulset"
	"github.com/navarch/navarch/controlplane/scheduler"
	"github.com/navarch/navarch/node/sim"
)

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	apiservertest.Eventually(t, 30*time.Second, what, f)
}

// podEvent is what the recorder keeps of one watch event.
type podEvent struct {
	typ        watch.EventType
	name, uid  string
	ready      bool
	terminated bool // deletionTimestamp set
	image      string
}

// recorder keeps every pod watch event of a namespace, in order.
type recorder struct {
	mu     sync.Mutex
	events []podEvent
}

func record(t *testing.T, ctx context.Context, client kubernetes.Interface, ns string) *recorder {
	r := &recorder{}
	list, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rv := list.ResourceVersion
	go func() {
		for ctx.Err() == nil {
			w, err := client.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: rv})
			if err != nil {
				time.Sleep(50 * time.Millisecond)
				continue
			}
			for ev := range w.ResultChan() {
				p, ok := ev.Object.(*corev1.Pod)
				if !ok {
					continue
				}
				rv = p.ResourceVersion
				ready := false
				for _, c := range p.Status.Conditions {
					if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue && p.Status.Phase == corev1.PodRunning {
						ready = true
					}
				}
				r.mu.Lock()
				r.events = append(r.events, podEvent{typ: ev.Type, name: p.Name, uid: string(p.UID), ready: ready,
					terminated: p.DeletionTimestamp != nil, image: p.Spec.Containers[0].Image})
				r.mu.Unlock()
			}
		}
	}()
	return r
}

func (r *recorder) snapshot() []podEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]podEvent(nil), r.events...)
}

// first returns the index of the first event matching f, or -1.
func first(events []podEvent, f func(podEvent) bool) int {
	for i, e := range events {
		if f(e) {
			return i
		}
	}
	return -1
}

func newSet(name string, replicas int32, policy appsv1.PodManagementPolicyType) *appsv1.StatefulSet {
	return &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: appsv1.StatefulSetSpec{
		Replicas: ptr.To(replicas), ServiceName: name, PodManagementPolicy: policy,
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: name + ":1"}}}},
		VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "data"},
			Spec: corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
				Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("1Gi")}}}}},
	}}
}

func TestStatefulSet(t *testing.T) {
	s := apiservertest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sim.New(s.Client, sim.DefaultConfig(3)).Run(ctx)
	go scheduler.New(s.Client).Run(ctx)
	go statefulset.New(s.Client, informers.NewSharedInformerFactory(s.Client, 0)).Run(ctx)
	sets := s.Client.AppsV1().StatefulSets("default")
	pods := s.Client.CoreV1().Pods("default")
	rec := record(t, ctx, s.Client, "default")

	if _, err := sets.Create(ctx, newSet("web", 3, ""), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	get := func() *appsv1.StatefulSet {
		t.Helper()
		got, err := sets.Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	ready := func(want int32) func() error {
		return func() error {
			st := get().Status
			if st.ReadyReplicas != want || st.Replicas != want || st.ObservedGeneration != get().Generation {
				return fmt.Errorf("status %+v", st)
			}
			return nil
		}
	}
	eventually(t, "3 ready replicas", ready(3))

	// Strict order: each pod is created only once the one before it is Ready.
	events := rec.snapshot()
	added := func(name string) int {
		return first(events, func(e podEvent) bool { return e.typ == watch.Added && e.name == name })
	}
	for i := 1; i < 3; i++ {
		prev, cur := fmt.Sprintf("web-%d", i-1), fmt.Sprintf("web-%d", i)
		readyAt := first(events, func(e podEvent) bool { return e.name == prev && e.ready })
		if at := added(cur); at < 0 || readyAt < 0 || at < readyAt {
			t.Errorf("%s created at event %d, %s ready at event %d: want creation after readiness", cur, at, prev, readyAt)
		}
	}

	st := get().Status
	if st.CurrentRevision == "" || st.CurrentRevision != st.UpdateRevision || st.CurrentReplicas != 3 || st.UpdatedReplicas != 3 ||
		st.AvailableReplicas != 3 || st.CollisionCount == nil {
		t.Errorf("status after creation: %+v", st)
	}
	firstRevision := st.UpdateRevision
	for i := 0; i < 3; i++ {
		name := fmt.Sprintf("web-%d", i)
		p, err := pods.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ref := metav1.GetControllerOf(p)
		if ref == nil || ref.Kind != "StatefulSet" || ref.Name != "web" || !ptr.Deref(ref.BlockOwnerDeletion, false) {
			t.Errorf("%s: controller ref %+v", name, ref)
		}
		if p.Labels["statefulset.kubernetes.io/pod-name"] != name || p.Labels["apps.kubernetes.io/pod-index"] != fmt.Sprint(i) ||
			p.Labels["controller-revision-hash"] != firstRevision || p.Labels["app"] != "web" {
			t.Errorf("%s: labels %v", name, p.Labels)
		}
		if p.Spec.Hostname != name || p.Spec.Subdomain != "web" {
			t.Errorf("%s: hostname %q subdomain %q", name, p.Spec.Hostname, p.Spec.Subdomain)
		}
		claim := fmt.Sprintf("data-web-%d", i)
		found := false
		for _, v := range p.Spec.Volumes {
			found = found || v.Name == "data" && v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == claim
		}
		if !found {
			t.Errorf("%s: no volume for claim %s in %+v", name, claim, p.Spec.Volumes)
		}
		pvc, err := s.Client.CoreV1().PersistentVolumeClaims("default").Get(ctx, claim, metav1.GetOptions{})
		if err != nil {
			t.Errorf("claim %s: %v", claim, err)
			continue
		}
		if pvc.Labels["app"] != "web" || pvc.Status.Phase != corev1.ClaimPending || len(pvc.OwnerReferences) != 0 {
			t.Errorf("claim %s: labels %v phase %q owners %v", claim, pvc.Labels, pvc.Status.Phase, pvc.OwnerReferences)
		}
	}
	evs, err := s.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=web"})
	if err != nil {
		t.Fatal(err)
	}
	msgs := map[string]bool{}
	for _, e := range evs.Items {
		msgs[e.Reason+": "+e.Message] = true
	}
	for _, want := range []string{"SuccessfulCreate: create Pod web-0 in StatefulSet web successful",
		"SuccessfulCreate: create Claim data-web-2 Pod web-2 in StatefulSet web success"} {
		if !msgs[want] {
			t.Errorf("no event %q in %v", want, msgs)
		}
	}
	revs, err := s.Client.AppsV1().ControllerRevisions("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil || len(revs.Items) != 1 || revs.Items[0].Name != firstRevision || revs.Items[0].Revision != 1 {
		t.Fatalf("revisions after creation: %v %+v", err, revs)
	}

	// A rolling update with partition 1 replaces web-2, then web-1, and
	// leaves web-0 at the old revision.
	set := get()
	set.Spec.UpdateStrategy.RollingUpdate = &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptr.To[int32](1)}
	set.Spec.Template.Spec.Containers[0].Image = "web:2"
	if _, err := sets.Update(ctx, set, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "partitioned rollout", func() error {
		st := get().Status
		if st.UpdatedReplicas != 2 || st.ReadyReplicas != 3 || st.CurrentReplicas != 1 || st.ObservedGeneration != get().Generation {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
	st = get().Status
	if st.CurrentRevision != firstRevision || st.UpdateRevision == firstRevision {
		t.Errorf("revisions during a partitioned rollout: current %q update %q (first %q)", st.CurrentRevision, st.UpdateRevision, firstRevision)
	}
	for i, want := range []string{"web:1", "web:2", "web:2"} {
		p, err := pods.Get(ctx, fmt.Sprintf("web-%d", i), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wantRev := st.UpdateRevision
		if i == 0 {
			wantRev = firstRevision
		}
		if p.Spec.Containers[0].Image != want || p.Labels["controller-revision-hash"] != wantRev {
			t.Errorf("web-%d: image %s revision %s, want %s %s", i, p.Spec.Containers[0].Image, p.Labels["controller-revision-hash"], want, wantRev)
		}
	}
	events = rec.snapshot()
	newWeb2Ready := first(events, func(e podEvent) bool { return e.name == "web-2" && e.image == "web:2" && e.ready })
	web1Deleted := first(events, func(e podEvent) bool { return e.name == "web-1" && e.terminated })
	if newWeb2Ready < 0 || web1Deleted < 0 || web1Deleted < newWeb2Ready {
		t.Errorf("web-1 replaced at event %d, new web-2 ready at event %d: want web-2 first", web1Deleted, newWeb2Ready)
	}
	if first(events, func(e podEvent) bool { return e.name == "web-0" && e.terminated }) >= 0 {
		t.Error("web-0, below the partition, was replaced")
	}
	revs, _ = s.Client.AppsV1().ControllerRevisions("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if len(revs.Items) != 2 {
		t.Errorf("%d revisions after the update, want 2", len(revs.Items))
	}

	// Scale down removes the highest ordinal first, one at a time; the
	// claims stay (whenScaled: Retain).
	mark := len(rec.snapshot())
	scale, err := sets.GetScale(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = 1
	if _, err := sets.UpdateScale(ctx, "web", scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "scaled to 1", ready(1))
	events = rec.snapshot()[mark:]
	web2Gone := first(events, func(e podEvent) bool { return e.name == "web-2" && e.typ == watch.Deleted })
	web1Terminating := first(events, func(e podEvent) bool { return e.name == "web-1" && e.terminated })
	if web2Gone < 0 || web1Terminating < 0 || web1Terminating < web2Gone {
		t.Errorf("web-1 deleted at event %d, web-2 gone at event %d: want web-2 gone first", web1Terminating, web2Gone)
	}
	claims, err := s.Client.CoreV1().PersistentVolumeClaims("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil || len(claims.Items) != 3 {
		t.Errorf("claims after scale-down: %v %d, want 3 retained", err, len(claims.Items))
	}
}

// TestParallel: Parallel creates every pod at once, without waiting for
// any to be ready (here none can be: no node runs them). The retention
// policy (Delete, Delete) shows in the claims' owners: the set's while the
// ordinal is in range, the pod's once it is scaled away.
func TestParallel(t *testing.T) {
	s := apiservertest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go statefulset.New(s.Client, informers.NewSharedInformerFactory(s.Client, 0)).Run(ctx)
	sets := s.Client.AppsV1().StatefulSets("default")
	set := newSet("par", 3, appsv1.ParallelPodManagement)
	set.Spec.PersistentVolumeClaimRetentionPolicy = &appsv1.StatefulSetPersistentVolumeClaimRetentionPolicy{
		WhenDeleted: appsv1.DeletePersistentVolumeClaimRetentionPolicyType, WhenScaled: appsv1.DeletePersistentVolumeClaimRetentionPolicyType}
	created, err := sets.Create(ctx, set, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "3 pods and claims", func() error {
		list, err := s.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=par"})
		if err != nil || len(list.Items) != 3 {
			return fmt.Errorf("pods: %v %v", err, list)
		}
		claims, err := s.Client.CoreV1().PersistentVolumeClaims("default").List(ctx, metav1.ListOptions{LabelSelector: "app=par"})
		if err != nil || len(claims.Items) != 3 {
			return fmt.Errorf("claims: %v %v", err, claims)
		}
		for _, c := range claims.Items {
			// whenDeleted: Delete makes the set an owner of its claims.
			if len(c.OwnerReferences) != 1 || c.OwnerReferences[0].UID != created.UID || c.OwnerReferences[0].Kind != "StatefulSet" {
				return fmt.Errorf("claim %s owners %+v", c.Name, c.OwnerReferences)
			}
		}
		return nil
	})
	eventually(t, "status", func() error {
		got, err := sets.Get(ctx, "par", metav1.GetOptions{})
		if err != nil || got.Status.Replicas != 3 || got.Status.ReadyReplicas != 0 {
			return fmt.Errorf("status %v %+v", err, got.Status)
		}
		return nil
	})

	par2, err := s.Client.CoreV1().Pods("default").Get(ctx, "par-2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scale, err := sets.GetScale(ctx, "par", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = 2
	if _, err := sets.UpdateScale(ctx, "par", scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "par-2 scaled away with its claim handed to it", func() error {
		if _, err := s.Client.CoreV1().Pods("default").Get(ctx, "par-2", metav1.GetOptions{}); err == nil {
			return fmt.Errorf("par-2 still there")
		}
		c, err := s.Client.CoreV1().PersistentVolumeClaims("default").Get(ctx, "data-par-2", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(c.OwnerReferences) != 1 || c.OwnerReferences[0].Kind != "Pod" || c.OwnerReferences[0].UID != par2.UID {
			return fmt.Errorf("data-par-2 owners %+v, want pod par-2 only", c.OwnerReferences)
		}
		return nil
	})
	kept, err := s.Client.CoreV1().PersistentVolumeClaims("default").Get(ctx, "data-par-1", metav1.GetOptions{})
	if err != nil || len(kept.OwnerReferences) != 1 || kept.OwnerReferences[0].UID != created.UID {
		t.Errorf("data-par-1 (in range): %v owners %+v, want the set only", err, kept.OwnerReferences)
	}
}

// TestMinReadyAndOnDelete: OrderedReady waits minReadySeconds after a pod
// is ready before the next; OnDelete leaves pods alone until deleted, and a
// deleted pod comes back at the update revision.
func TestMinReadyAndOnDelete(t *testing.T) {
	s := apiservertest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sim.New(s.Client, sim.DefaultConfig(2)).Run(ctx)
	go scheduler.New(s.Client).Run(ctx)
	go statefulset.New(s.Client, informers.NewSharedInformerFactory(s.Client, 0)).Run(ctx)
	sets := s.Client.AppsV1().StatefulSets("default")
	pods := s.Client.CoreV1().Pods("default")
	set := newSet("db", 2, "")
	set.Spec.MinReadySeconds = 1
	set.Spec.UpdateStrategy = appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType}
	if _, err := sets.Create(ctx, set, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "2 available", func() error {
		got, err := sets.Get(ctx, "db", metav1.GetOptions{})
		if err != nil || got.Status.AvailableReplicas != 2 {
			return fmt.Errorf("status %v %+v", err, got.Status)
		}
		return nil
	})
	db0, err := pods.Get(ctx, "db-0", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	db1, err := pods.Get(ctx, "db-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var readyAt time.Time
	for _, c := range db0.Status.Conditions {
		if c.Type == corev1.PodReady {
			readyAt = c.LastTransitionTime.Time
		}
	}
	// Both times are kept to the second; a gap of at least 1s survives that.
	if gap := db1.CreationTimestamp.Sub(readyAt); gap < time.Second {
		t.Errorf("db-1 created %s after db-0 was ready, want at least minReadySeconds (1s)", gap)
	}

	cur, err := sets.Get(ctx, "db", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	oldRev := cur.Status.CurrentRevision
	cur.Spec.Template.Spec.Containers[0].Image = "db:2"
	if _, err := sets.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "update revision observed", func() error {
		got, err := sets.Get(ctx, "db", metav1.GetOptions{})
		if err != nil || got.Status.ObservedGeneration != got.Generation || got.Status.UpdateRevision == oldRev || got.Status.CurrentRevision != oldRev {
			return fmt.Errorf("status %v %+v", err, got.Status)
		}
		return nil
	})
	if err := pods.Delete(ctx, "db-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "db-1 back at the update revision", func() error {
		p, err := pods.Get(ctx, "db-1", metav1.GetOptions{})
		if err != nil || p.UID == db1.UID || p.Spec.Containers[0].Image != "db:2" {
			return fmt.Errorf("db-1: %v", err)
		}
		got, _ := sets.Get(ctx, "db", metav1.GetOptions{})
		if got.Status.UpdatedReplicas != 1 || got.Status.CurrentReplicas != 1 || got.Status.ReadyReplicas != 2 {
			return fmt.Errorf("status %+v", got.Status)
		}
		return nil
	})
	if p, err := pods.Get(ctx, "db-0", metav1.GetOptions{}); err != nil || p.UID != db0.UID || p.Spec.Containers[0].Image != "db:1" {
		t.Errorf("db-0 was replaced under OnDelete: %v", err)
	}
}
