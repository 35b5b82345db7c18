package replicaset_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/controlplane/controllers/replicaset"
	"github.com/navarch/navarch/controlplane/scheduler"
	"github.com/navarch/navarch/node/sim"
)

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	apiservertest.Eventually(t, 20*time.Second, what, f)
}

func template(app string) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
}

func TestReplicaCountsConverge(t *testing.T) {
	s := apiservertest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sim.New(s.Client, sim.DefaultConfig(2)).Run(ctx)
	go scheduler.New(s.Client).Run(ctx)
	go replicaset.New(s.Client, informers.NewSharedInformerFactory(s.Client, 0)).Run(ctx)
	pods := s.Client.CoreV1().Pods("default")
	rss := s.Client.AppsV1().ReplicaSets("default")

	countPods := func(app string, want int) func() error {
		return func() error {
			list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
			if err != nil {
				return err
			}
			running := 0
			for _, p := range list.Items {
				if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
					running++
				}
			}
			if running != want || len(list.Items) != want {
				return fmt.Errorf("%d pods, %d running, want %d", len(list.Items), running, want)
			}
			return nil
		}
	}

	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web"}, Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To[int32](3),
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, Template: template("web")}}
	if _, err := rss.Create(ctx, rs, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "3 running pods", countPods("web", 3))
	eventually(t, "status", func() error {
		got, err := rss.Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if st := got.Status; st.Replicas != 3 || st.ReadyReplicas != 3 || st.AvailableReplicas != 3 || st.FullyLabeledReplicas != 3 || st.ObservedGeneration != got.Generation {
			return fmt.Errorf("status %+v at generation %d", st, got.Generation)
		}
		return nil
	})
	list, _ := pods.List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if ref := metav1.GetControllerOf(&list.Items[0]); ref == nil || ref.Kind != "ReplicaSet" || ref.Name != "web" {
		t.Fatalf("pod owner: %v", ref)
	}

	// Scale down, then an orphan that matches is adopted (and, being one too
	// many, one pod goes).
	scale := &autoscalingv1.Scale{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"}, Spec: autoscalingv1.ScaleSpec{Replicas: 1}}
	if _, err := rss.UpdateScale(ctx, "web", scale, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "1 running pod", countPods("web", 1))
	orphan := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "orphan", Labels: map[string]string{"app": "web"}}, Spec: template("web").Spec}
	if _, err := pods.Create(ctx, orphan, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "orphan adopted and extra pod removed", countPods("web", 1))

	// A ReplicationController works the same way.
	rc := &corev1.ReplicationController{ObjectMeta: metav1.ObjectMeta{Name: "legacy"}, Spec: corev1.ReplicationControllerSpec{
		Replicas: ptr.To[int32](2), Selector: map[string]string{"app": "legacy"}, Template: ptr.To(template("legacy"))}}
	if _, err := s.Client.CoreV1().ReplicationControllers("default").Create(ctx, rc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "2 legacy pods", countPods("legacy", 2))
}
