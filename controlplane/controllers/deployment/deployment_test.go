package deployment_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/controlplane/controllers/deployment"
	"github.com/navarch/navarch/controlplane/controllers/replicaset"
	"github.com/navarch/navarch/controlplane/scheduler"
	"github.com/navarch/navarch/node/sim"
)

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	apiservertest.Eventually(t, 30*time.Second, what, f)
}

// rolledOut is the check `kubectl rollout status` makes.
func rolledOut(d *appsv1.Deployment) error {
	replicas := ptr.Deref(d.Spec.Replicas, 1)
	st := d.Status
	switch {
	case st.ObservedGeneration < d.Generation:
		return fmt.Errorf("generation %d not observed (%d)", d.Generation, st.ObservedGeneration)
	case st.UpdatedReplicas < replicas:
		return fmt.Errorf("%d of %d updated", st.UpdatedReplicas, replicas)
	case st.Replicas > st.UpdatedReplicas:
		return fmt.Errorf("%d old replicas pending termination", st.Replicas-st.UpdatedReplicas)
	case st.AvailableReplicas < st.UpdatedReplicas:
		return fmt.Errorf("%d of %d updated replicas available", st.AvailableReplicas, st.UpdatedReplicas)
	}
	for _, c := range st.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Reason == "NewReplicaSetAvailable" && c.Status == corev1.ConditionTrue {
			return nil
		}
	}
	return fmt.Errorf("conditions %+v", st.Conditions)
}

func TestRollingUpdate(t *testing.T) {
	s := apiservertest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sim.New(s.Client, sim.DefaultConfig(3)).Run(ctx)
	go scheduler.New(s.Client).Run(ctx)
	go replicaset.New(s.Client, informers.NewSharedInformerFactory(s.Client, 0)).Run(ctx)
	go deployment.New(s.Client, informers.NewSharedInformerFactory(s.Client, 0)).Run(ctx)
	deploys := s.Client.AppsV1().Deployments("default")

	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: appsv1.DeploymentSpec{
		Replicas: ptr.To[int32](4), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "web:1"}}}}}}
	if _, err := deploys.Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	get := func() *appsv1.Deployment {
		got, err := deploys.Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	eventually(t, "first rollout", func() error { return rolledOut(get()) })
	if rev := get().Annotations[deployment.RevisionAnnotation]; rev != "1" {
		t.Fatalf("revision after the first rollout: %q", rev)
	}

	cur := get()
	cur.Spec.Template.Spec.Containers[0].Image = "web:2"
	if _, err := deploys.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "second rollout", func() error { return rolledOut(get()) })
	if rev := get().Annotations[deployment.RevisionAnnotation]; rev != "2" {
		t.Fatalf("revision after the update: %q", rev)
	}
	// Going back to the first template reuses its ReplicaSet as revision 3.
	back := get()
	back.Spec.Template.Spec.Containers[0].Image = "web:1"
	if _, err := deploys.Update(ctx, back, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "rollback", func() error { return rolledOut(get()) })
	if rev := get().Annotations[deployment.RevisionAnnotation]; rev != "3" {
		t.Fatalf("revision after going back: %q, want 3", rev)
	}
	rss, err := s.Client.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil || len(rss.Items) != 2 {
		t.Fatalf("replica sets: %v %d", err, len(rss.Items))
	}
	for _, rs := range rss.Items {
		want := int32(0)
		if rs.Spec.Template.Spec.Containers[0].Image == "web:1" {
			want = 4
		}
		if ptr.Deref(rs.Spec.Replicas, -1) != want {
			t.Errorf("replica set %s (%s): %d replicas, want %d", rs.Name, rs.Spec.Template.Spec.Containers[0].Image, *rs.Spec.Replicas, want)
		}
	}
	pods, _ := s.Client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Spec.Containers[0].Image != "web:1" {
			t.Errorf("pod %s still runs %s", p.Name, p.Spec.Containers[0].Image)
		}
	}
}
