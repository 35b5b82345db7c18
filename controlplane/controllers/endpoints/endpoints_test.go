package endpoints_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/controlplane/controllers/endpoints"
	"github.com/navarch/navarch/controlplane/controllers/garbagecollector"
	"github.com/navarch/navarch/controlplane/controllers/replicaset"
	"github.com/navarch/navarch/controlplane/scheduler"
	"github.com/navarch/navarch/node/sim"
)

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	apiservertest.Eventually(t, 20*time.Second, what, f)
}

func TestServiceEndpointsFollowPods(t *testing.T) {
	s := apiservertest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, run := range []func(context.Context) error{
		sim.New(s.Client, sim.DefaultConfig(2)).Run, scheduler.New(s.Client).Run, replicaset.New(s.Client, informers.NewSharedInformerFactory(s.Client, 0)).Run,
		endpoints.New(s.Client, informers.NewSharedInformerFactory(s.Client, 0)).Run, garbagecollector.New(s.Client, dynamic.NewForConfigOrDie(s.Config), informers.NewSharedInformerFactory(s.Client, 0)).Run,
	} {
		go run(ctx)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "web"},
		Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}}}
	if _, err := s.Client.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To[int32](3),
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}}}}}
	if _, err := s.Client.AppsV1().ReplicaSets("default").Create(ctx, rs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	check := func(want int) func() error {
		return func() error {
			ep, err := s.Client.CoreV1().Endpoints("default").Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if len(ep.Subsets) != 1 || len(ep.Subsets[0].Addresses) != want || ep.Subsets[0].Ports[0].Port != 8080 {
				return fmt.Errorf("endpoints %+v", ep.Subsets)
			}
			slices, err := s.Client.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
			if err != nil || len(slices.Items) != 1 {
				return fmt.Errorf("slices: %v %d", err, len(slices.Items))
			}
			sl := slices.Items[0]
			ready := 0
			for _, e := range sl.Endpoints {
				if *e.Conditions.Ready {
					ready++
				}
			}
			if ready != want || len(sl.Ports) != 1 || *sl.Ports[0].Port != 8080 || *sl.Ports[0].Name != "http" {
				return fmt.Errorf("slice: %d ready endpoints, ports %+v", ready, sl.Ports)
			}
			return nil
		}
	}
	eventually(t, "three endpoints", check(3))
	scale, err := s.Client.AppsV1().ReplicaSets("default").GetScale(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scale.Spec.Replicas = 1
	if _, err := s.Client.AppsV1().ReplicaSets("default").UpdateScale(ctx, "web", scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "one endpoint", check(1))

	// Deleting the service removes its Endpoints and (through their owner) slices.
	if err := s.Client.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "endpoints gone", func() error {
		if _, err := s.Client.CoreV1().Endpoints("default").Get(ctx, "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("endpoints still there: %v", err)
		}
		slices, _ := s.Client.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
		if len(slices.Items) != 0 {
			return fmt.Errorf("%d slices left", len(slices.Items))
		}
		return nil
	})
}
