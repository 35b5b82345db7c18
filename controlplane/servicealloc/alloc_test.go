package servicealloc

import (
	"context"
	"fmt"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/navarch/navarch/controlplane/storage/etcd"
)

func newAllocator(t *testing.T, cidr string, ports int) *Allocator {
	t.Helper()
	member, err := etcd.StartEmbedded(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(member.Close)
	a, err := New(etcd.NewStore(member.Client), cidr, 30000, ports)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func nodePortService(name string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Port: 80}, {Port: 443}}}}
}

func TestConcurrentAllocationsNeverCollide(t *testing.T) {
	// A /26 has 62 addresses: 60 concurrent services fill most of it, so
	// random picks collide often and must be resolved by the store.
	a := newAllocator(t, "10.43.0.0/26", 200)
	ctx := context.Background()
	const n = 60
	svcs := make([]*corev1.Service, n)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		svcs[i] = nodePortService(fmt.Sprintf("s%d", i))
		wg.Add(1)
		go func(svc *corev1.Service) {
			defer wg.Done()
			if _, err := a.BeforeCreate(ctx, svc); err != nil {
				errs <- err
			}
		}(svcs[i])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	ips, ports := map[string]string{}, map[int32]string{}
	for _, svc := range svcs {
		if other, dup := ips[svc.Spec.ClusterIP]; dup {
			t.Fatalf("%s and %s both got %s", svc.Name, other, svc.Spec.ClusterIP)
		}
		ips[svc.Spec.ClusterIP] = svc.Name
		for _, p := range svc.Spec.Ports {
			if other, dup := ports[p.NodePort]; dup {
				t.Fatalf("%s and %s both got node port %d", svc.Name, other, p.NodePort)
			}
			if p.NodePort < 30000 || p.NodePort >= 30200 {
				t.Fatalf("node port %d outside the range", p.NodePort)
			}
			ports[p.NodePort] = svc.Name
		}
	}
}

func TestReleaseAndExplicitValues(t *testing.T) {
	a := newAllocator(t, "10.43.0.0/29", 2) // 6 addresses, 2 ports
	ctx := context.Background()
	first := nodePortService("first")
	if _, err := a.BeforeCreate(ctx, first); err != nil {
		t.Fatal(err)
	}
	// Both ports are taken now: the next NodePort service cannot get any.
	if _, err := a.BeforeCreate(ctx, nodePortService("second")); !apierrors.IsInvalid(err) {
		t.Fatalf("allocation from a full port range: got %v, want Invalid", err)
	}
	// Asking for an IP that is held is a 422 on spec.clusterIPs[0].
	taken := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "taken", Namespace: "default"},
		Spec: corev1.ServiceSpec{ClusterIP: first.Spec.ClusterIP, Ports: []corev1.ServicePort{{Port: 80}}}}
	_, err := a.BeforeCreate(ctx, taken)
	if !apierrors.IsInvalid(err) || err.(apierrors.APIStatus).Status().Details.Causes[0].Field != "spec.clusterIPs[0]" {
		t.Fatalf("taken IP: got %v", err)
	}
	outside := taken.DeepCopy()
	outside.Spec.ClusterIP = "192.168.0.1"
	if _, err := a.BeforeCreate(ctx, outside); !apierrors.IsInvalid(err) {
		t.Fatalf("IP outside the range: got %v, want Invalid", err)
	}
	// Deleting the first service returns its IP and ports.
	a.AfterDelete(ctx, first)
	again := taken.DeepCopy()
	again.Spec.Type = corev1.ServiceTypeNodePort
	again.Spec.Ports = []corev1.ServicePort{{Port: 80, NodePort: first.Spec.Ports[0].NodePort}}
	if _, err := a.BeforeCreate(ctx, again); err != nil {
		t.Fatalf("re-using released IP and port: %v", err)
	}
	// A failed create undoes its claims: the last free port comes back.
	onePort := func(name string) *corev1.Service {
		svc := nodePortService(name)
		svc.Spec.Ports = svc.Spec.Ports[:1]
		return svc
	}
	undo, err := a.BeforeCreate(ctx, onePort("undone"))
	if err != nil {
		t.Fatal(err)
	}
	undo()
	if _, err := a.BeforeCreate(ctx, onePort("after-undo")); err != nil {
		t.Fatalf("claims were not undone: %v", err)
	}
}
