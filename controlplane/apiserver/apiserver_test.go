package apiserver_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/navarch/navarch/controlplane/apiserver"
	"github.com/navarch/navarch/controlplane/registry"
	"github.com/navarch/navarch/controlplane/registry/apps"
	"github.com/navarch/navarch/controlplane/registry/core"
	"github.com/navarch/navarch/controlplane/storage/etcd"
)

// trustAll authenticates every request as an admin: these tests exercise the
// API semantics over plain HTTP; TLS client-certificate authentication is
// covered by the end-to-end tests against the real binary.
type trustAll struct{}

func (trustAll) Authenticate(*http.Request) (*apiserver.User, bool, error) {
	return &apiserver.User{Name: "admin", Groups: []string{"system:masters"}}, true, nil
}

type testServer struct {
	url    string
	api    *apiserver.Server
	client kubernetes.Interface
	store  *etcd.Store
}

func startServer(t testing.TB) *testServer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	member, err := etcd.StartEmbedded(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := etcd.NewStore(member.Client)
	var resources []*registry.Resource
	resources = append(resources, core.Resources()...)
	resources = append(resources, apps.Resources()...)
	api, err := apiserver.New(apiserver.Config{Store: store, Resources: resources, Authenticators: []apiserver.Authenticator{trustAll{}}})
	if err != nil {
		t.Fatal(err)
	}
	if err := api.Start(ctx); err != nil {
		t.Fatal(err)
	}
	api.MarkReady()
	hs := httptest.NewServer(api.Handler())
	t.Cleanup(func() {
		hs.CloseClientConnections()
		hs.Close()
		cancel()
		member.Close()
	})
	client := kubernetes.NewForConfigOrDie(&rest.Config{Host: hs.URL, QPS: 1000, Burst: 1000})
	for _, ns := range []string{"default", "test"} {
		if _, err := client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	return &testServer{url: hs.URL, api: api, client: client, store: store}
}

func configMap(name, value string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"k": value}}
}

func TestCRUDSemantics(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	cms := s.client.CoreV1().ConfigMaps("test")

	created, err := cms.Create(ctx, configMap("a", "1"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if created.UID == "" || created.ResourceVersion == "" || created.CreationTimestamp.IsZero() {
		t.Fatalf("server did not set uid/resourceVersion/creationTimestamp: %+v", created.ObjectMeta)
	}
	if _, err := cms.Create(ctx, configMap("a", "1"), metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) {
		t.Fatalf("second create: got %v, want AlreadyExists", err)
	}

	// A stale update is a 409 Conflict.
	upd := created.DeepCopy()
	upd.Data["k"] = "2"
	if _, err := cms.Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	upd.Data["k"] = "3"
	if _, err := cms.Update(ctx, upd, metav1.UpdateOptions{}); !apierrors.IsConflict(err) {
		t.Fatalf("stale update: got %v, want Conflict", err)
	}

	// An update without a resourceVersion is unconditional.
	unconditional := configMap("a", "4")
	if got, err := cms.Update(ctx, unconditional, metav1.UpdateOptions{}); err != nil || got.Data["k"] != "4" {
		t.Fatalf("unconditional update: %v %v", err, got)
	}

	// A patch without a resourceVersion applies to whatever is current; one
	// with a stale resourceVersion is a conflict.
	if _, err := cms.Patch(ctx, "a", types.MergePatchType, []byte(`{"data":{"k":"5"}}`), metav1.PatchOptions{}); err != nil {
		t.Fatalf("unconditional patch: %v", err)
	}
	stalePatch := fmt.Sprintf(`{"metadata":{"resourceVersion":%q},"data":{"k":"6"}}`, created.ResourceVersion)
	if _, err := cms.Patch(ctx, "a", types.MergePatchType, []byte(stalePatch), metav1.PatchOptions{}); !apierrors.IsConflict(err) {
		t.Fatalf("patch with a stale resourceVersion: got %v, want Conflict", err)
	}

	// generateName gets a random suffix.
	gen, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "gen-"}}, metav1.CreateOptions{})
	if err != nil || len(gen.Name) != len("gen-")+5 {
		t.Fatalf("generateName: %v %q", err, gen.GetName())
	}

	// dryRun stores nothing.
	if _, err := cms.Create(ctx, configMap("dry", "1"), metav1.CreateOptions{DryRun: []string{"All"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Get(ctx, "dry", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("dry-run object was stored: %v", err)
	}

	// Creating in a missing namespace is refused.
	if _, err := s.client.CoreV1().ConfigMaps("nope").Create(ctx, configMap("x", "1"), metav1.CreateOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("create in missing namespace: got %v, want NotFound", err)
	}

	// Invalid names come back as 422 with the field path.
	_, err = cms.Create(ctx, configMap("Bad_Name", "1"), metav1.CreateOptions{})
	if !apierrors.IsInvalid(err) {
		t.Fatalf("bad name: got %v, want Invalid", err)
	}
	if st := err.(apierrors.APIStatus).Status(); len(st.Details.Causes) == 0 || st.Details.Causes[0].Field != "metadata.name" {
		t.Fatalf("bad name: causes %+v, want metadata.name", st.Details)
	}

	// Label selectors and pagination.
	for i := 0; i < 5; i++ {
		cm := configMap(fmt.Sprintf("page-%d", i), "x")
		cm.Labels = map[string]string{"page": "yes"}
		if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	opts := metav1.ListOptions{LabelSelector: "page=yes", Limit: 2}
	for {
		list, err := cms.List(ctx, opts)
		if err != nil {
			t.Fatal(err)
		}
		for _, cm := range list.Items {
			names = append(names, cm.Name)
		}
		if list.Continue == "" {
			break
		}
		opts.Continue = list.Continue
	}
	if len(names) != 5 || names[0] != "page-0" || names[4] != "page-4" {
		t.Fatalf("paginated list: %v", names)
	}

	// Deleting an object with a finalizer only marks it; removing the
	// finalizer completes the deletion.
	fin := configMap("fin", "1")
	fin.Finalizers = []string{"example.com/hold"}
	if _, err := cms.Create(ctx, fin, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cms.Delete(ctx, "fin", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	held, err := cms.Get(ctx, "fin", metav1.GetOptions{})
	if err != nil || held.DeletionTimestamp == nil {
		t.Fatalf("finalized object: %v, deletionTimestamp %v", err, held.GetDeletionTimestamp())
	}
	held.Finalizers = nil
	if _, err := cms.Update(ctx, held, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cms.Get(ctx, "fin", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("object still there after its last finalizer went: %v", err)
	}
}

func TestStatusSubresourceIgnoresSpec(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	pods := s.client.CoreV1().Pods("test")
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	created, err := pods.Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	created.Status.Phase = corev1.PodRunning
	created.Spec.ActiveDeadlineSeconds = new(int64)
	updated, err := pods.UpdateStatus(ctx, created, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if updated.Status.Phase != corev1.PodRunning || updated.Spec.ActiveDeadlineSeconds != nil {
		t.Fatalf("status update: phase %q, activeDeadlineSeconds %v", updated.Status.Phase, updated.Spec.ActiveDeadlineSeconds)
	}
	updated.Status.Phase = corev1.PodFailed
	updated.Labels = map[string]string{"a": "b"}
	again, err := pods.Update(ctx, updated, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if again.Status.Phase != corev1.PodRunning || again.Labels["a"] != "b" {
		t.Fatalf("main update changed status or lost labels: phase %q labels %v", again.Status.Phase, again.Labels)
	}
}

// TestInformerSeesEveryChangeInOrder drives an informer through creates,
// updates and deletes of pods and checks it saw each, in order.
func TestInformerSeesEveryChangeInOrder(t *testing.T) {
	s := startServer(t)
	checkInformerOrder(t, s, s.client, 20)
}

// checkInformerOrder runs a pod informer over client while n pods are each
// created, relabelled and deleted through the test's own client, and fails
// unless it saw every change in order.
func checkInformerOrder(t *testing.T, s *testServer, client kubernetes.Interface, n int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var seen []string
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace("test"))
	inf := factory.Core().V1().Pods().Informer()
	record := func(what string, obj interface{}) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		p := obj.(*corev1.Pod)
		mu.Lock()
		seen = append(seen, fmt.Sprintf("%s %s %s", what, p.Name, p.Labels["step"]))
		mu.Unlock()
	}
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj interface{}) { record("add", obj) },
		UpdateFunc: func(_, obj interface{}) { record("update", obj) },
		DeleteFunc: func(obj interface{}) { record("delete", obj) },
	})
	factory.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		t.Fatal("informer did not sync")
	}
	pods := s.client.CoreV1().Pods("test")
	var want []string
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("p%d", i)
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"step": "1"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
		created, err := pods.Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		created.Labels["step"] = "2"
		if _, err := pods.Update(ctx, created, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := pods.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		want = append(want, "add "+name+" 1", "update "+name+" 2", "delete "+name+" 2")
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		got := len(seen)
		mu.Unlock()
		if got >= len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("informer saw\n%v\nwant\n%v", seen, want)
	}
}

// TestWatchFromCompactedVersionIsGone checks the 410 a client gets for a
// compacted resourceVersion, and that an informer recovers by relisting.
func TestWatchFromCompactedVersionIsGone(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	cms := s.client.CoreV1().ConfigMaps("test")
	first, err := cms.Create(ctx, configMap("c0", "0"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i < 5; i++ {
		if _, err := cms.Create(ctx, configMap(fmt.Sprintf("c%d", i), "x"), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.api.Compact(ctx); err != nil {
		t.Fatal(err)
	}
	w, err := cms.Watch(ctx, metav1.ListOptions{ResourceVersion: first.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	ev, ok := <-w.ResultChan()
	w.Stop()
	if !ok || ev.Type != watch.Error {
		t.Fatalf("watch from compacted version: got %v %v, want an ERROR event", ev.Type, ok)
	}
	if st, _ := ev.Object.(*metav1.Status); st == nil || st.Code != http.StatusGone {
		t.Fatalf("watch from compacted version: got %#v, want a 410 Status", ev.Object)
	}

	// An informer whose first watch asks for the compacted version is
	// refused, relists, and then follows changes again.
	var calls sync.Mutex
	watches := 0
	lw := &cache.ListWatch{
		ListFunc: func(o metav1.ListOptions) (runtime.Object, error) { return cms.List(ctx, o) },
		WatchFunc: func(o metav1.ListOptions) (watch.Interface, error) {
			calls.Lock()
			watches++
			if watches == 1 {
				o.ResourceVersion = first.ResourceVersion
			}
			calls.Unlock()
			return cms.Watch(ctx, o)
		},
	}
	inf := cache.NewSharedIndexInformer(lw, &corev1.ConfigMap{}, 0, cache.Indexers{})
	stop := make(chan struct{})
	defer close(stop)
	go inf.Run(stop)
	if !cache.WaitForCacheSync(stop, inf.HasSynced) {
		t.Fatal("informer did not sync")
	}
	if _, err := cms.Create(ctx, configMap("after", "x"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, exists, _ := inf.GetStore().GetByKey("test/after")
		if exists {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("informer did not recover from a 410: %d watches, store has %v", watches, inf.GetStore().ListKeys())
		}
		time.Sleep(20 * time.Millisecond)
	}
	calls.Lock()
	defer calls.Unlock()
	if watches < 2 {
		t.Fatalf("informer made %d watches, want a second one after the 410", watches)
	}
	if n := len(inf.GetStore().ListKeys()); n != 6 {
		t.Fatalf("informer holds %d config maps, want 6", n)
	}
}

// TestSystemNamespacesCannotBeDeleted checks upstream's NamespaceLifecycle
// rule: default, kube-system and kube-public are refused with 403, other
// namespaces are not.
func TestSystemNamespacesCannotBeDeleted(t *testing.T) {
	s := startServer(t)
	ctx := context.Background()
	nss := s.client.CoreV1().Namespaces()
	for _, name := range []string{"default", "kube-system", "kube-public"} {
		if _, err := nss.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		err := nss.Delete(ctx, name, metav1.DeleteOptions{})
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "this namespace may not be deleted") {
			t.Errorf("delete namespace %s: got %v, want Forbidden: this namespace may not be deleted", name, err)
		}
		if _, err := nss.Get(ctx, name, metav1.GetOptions{}); err != nil {
			t.Errorf("namespace %s after a refused delete: %v", name, err)
		}
	}
	if err := nss.Delete(ctx, "test", metav1.DeleteOptions{}); err != nil {
		t.Errorf("delete of an ordinary namespace: %v", err)
	}
}
