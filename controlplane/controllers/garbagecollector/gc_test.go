package garbagecollector_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/controlplane/controllers/deployment"
	"github.com/navarch/navarch/controlplane/controllers/garbagecollector"
	"github.com/navarch/navarch/controlplane/controllers/replicaset"
	"github.com/navarch/navarch/controlplane/scheduler"
	"github.com/navarch/navarch/node/sim"
)

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	apiservertest.Eventually(t, 30*time.Second, what, f)
}

// TestPropagationPolicies deletes a Deployment with each propagation policy
// and checks what happens to its ReplicaSet and pods, as upstream.
func TestPropagationPolicies(t *testing.T) {
	s := apiservertest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, run := range []func(context.Context) error{
		sim.New(s.Client, sim.DefaultConfig(2)).Run, scheduler.New(s.Client).Run, replicaset.New(s.Client, informers.NewSharedInformerFactory(s.Client, 0)).Run,
		deployment.New(s.Client, informers.NewSharedInformerFactory(s.Client, 0)).Run, garbagecollector.New(s.Client, dynamic.NewForConfigOrDie(s.Config), informers.NewSharedInformerFactory(s.Client, 0)).Run,
	} {
		go run(ctx)
	}
	deploys := s.Client.AppsV1().Deployments("default")
	counts := func(app string) (rs, pods int, err error) {
		rsl, err := s.Client.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return 0, 0, err
		}
		pl, err := s.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		return len(rsl.Items), len(pl.Items), err
	}
	deploy := func(app string) {
		t.Helper()
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: app}, Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}}}}
		if _, err := deploys.Create(ctx, d, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, app+" up", func() error {
			rs, pods, err := counts(app)
			if err != nil || rs != 1 || pods != 2 {
				return fmt.Errorf("%d replica sets, %d pods, %v", rs, pods, err)
			}
			return nil
		})
	}
	gone := func(app string) func() error {
		return func() error {
			if _, err := deploys.Get(ctx, app, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("deployment still there: %v", err)
			}
			return nil
		}
	}

	// Background: the deployment goes at once, its replica set and pods after.
	deploy("bg")
	if err := deploys.Delete(ctx, "bg", metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationBackground)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "background", func() error {
		if err := gone("bg")(); err != nil {
			return err
		}
		if rs, pods, err := counts("bg"); err != nil || rs != 0 || pods != 0 {
			return fmt.Errorf("%d replica sets, %d pods left, %v", rs, pods, err)
		}
		return nil
	})

	// Orphan: the deployment goes, its replica set and pods stay, unowned.
	deploy("orph")
	if err := deploys.Delete(ctx, "orph", metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationOrphan)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "orphan", gone("orph"))
	rsl, err := s.Client.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{LabelSelector: "app=orph"})
	if err != nil || len(rsl.Items) != 1 || len(rsl.Items[0].OwnerReferences) != 0 {
		all, _ := s.Client.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{})
		var names []string
		for _, rs := range all.Items {
			names = append(names, fmt.Sprintf("%s(labels %v, owners %d, deleting %v)", rs.Name, rs.Labels, len(rs.OwnerReferences), rs.DeletionTimestamp != nil))
		}
		t.Fatalf("orphaned replica set: %v %+v; all: %v", err, rsl.Items, names)
	}
	time.Sleep(300 * time.Millisecond) // nothing may collect the orphans later either
	if rs, pods, _ := counts("orph"); rs != 1 || pods != 2 {
		t.Fatalf("orphans collected: %d replica sets, %d pods", rs, pods)
	}

	// Foreground: the deployment stays, marked, until its dependents are gone.
	deploy("fg")
	if err := deploys.Delete(ctx, "fg", metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)}); err != nil {
		t.Fatal(err)
	}
	d, err := deploys.Get(ctx, "fg", metav1.GetOptions{})
	if err != nil || d.DeletionTimestamp == nil || d.Finalizers[0] != metav1.FinalizerDeleteDependents {
		t.Fatalf("foreground deletion did not hold the deployment: %v %+v", err, d.ObjectMeta)
	}
	eventually(t, "foreground", func() error {
		rs, pods, err := counts("fg")
		if err := gone("fg")(); err != nil {
			return fmt.Errorf("%v (%d replica sets, %d pods left)", err, rs, pods)
		}
		if rs != 0 || pods != 0 {
			return fmt.Errorf("deployment went before its dependents: %d replica sets, %d pods", rs, pods)
		}
		return err
	})
}
