package scheduler_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/controlplane/controllers/deployment"
	"github.com/navarch/navarch/controlplane/controllers/replicaset"
	"github.com/navarch/navarch/controlplane/scheduler"
	"github.com/navarch/navarch/node/sim"
)

// TestAntiAffinityDeployment: three hollow nodes in three zones, a
// Deployment whose pods must not share a hostname lands one replica per
// node, and a fourth replica stays Pending with the anti-affinity reason.
func TestAntiAffinityDeployment(t *testing.T) {
	s := apiservertest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sim.New(s.Client, sim.DefaultConfig(3)).Run(ctx)
	nodes := s.Client.CoreV1().Nodes()
	for i, zone := range []string{"zone-a", "zone-b", "zone-c"} {
		name := fmt.Sprintf("sim-%d", i)
		apiservertest.Eventually(t, 20*time.Second, "label "+name, func() error {
			n, err := nodes.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			n.Labels[corev1.LabelTopologyZone] = zone
			_, err = nodes.Update(ctx, n, metav1.UpdateOptions{})
			return err
		})
	}
	go scheduler.New(s.Client).Run(ctx)
	go replicaset.New(s.Client, informers.NewSharedInformerFactory(s.Client, 0)).Run(ctx)
	go deployment.New(s.Client, informers.NewSharedInformerFactory(s.Client, 0)).Run(ctx)

	labels := map[string]string{"app": "spread"}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "spread"},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](3), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				Containers: []corev1.Container{{Name: "c", Image: "busybox"}},
				Affinity: &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
					TopologyKey: corev1.LabelHostname, LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}}}},
			}}}}
	deps := s.Client.AppsV1().Deployments("default")
	if _, err := deps.Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := s.Client.CoreV1().Pods("default")
	apiservertest.Eventually(t, 30*time.Second, "three replicas running, one per node", func() error {
		list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: "app=spread", FieldSelector: "status.phase=Running"})
		if err != nil {
			return err
		}
		perNode := map[string]int{}
		for _, p := range list.Items {
			perNode[p.Spec.NodeName]++
		}
		if len(list.Items) != 3 || len(perNode) != 3 {
			return fmt.Errorf("%d running on %v", len(list.Items), perNode)
		}
		return nil
	})

	// A patch, as kubectl scale sends: the controllers write the
	// Deployment's status meanwhile, so a read-modify-update may conflict.
	if _, err := deps.Patch(ctx, "spread", types.MergePatchType, []byte(`{"spec":{"replicas":4}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	// Preemption may add its own sentence after this one, as upstream does.
	want := "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."
	apiservertest.Eventually(t, 30*time.Second, "the fourth replica Pending with the anti-affinity reason", func() error {
		list, err := pods.List(ctx, metav1.ListOptions{LabelSelector: "app=spread"})
		if err != nil {
			return err
		}
		if len(list.Items) != 4 {
			return fmt.Errorf("%d pods", len(list.Items))
		}
		for _, p := range list.Items {
			if p.Spec.NodeName != "" {
				continue
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
					if !strings.HasPrefix(c.Message, want) {
						return fmt.Errorf("pod %s: message %q, want %q", p.Name, c.Message, want)
					}
					if p.Status.Phase != corev1.PodPending {
						return fmt.Errorf("pod %s is %s", p.Name, p.Status.Phase)
					}
					return nil
				}
			}
			return fmt.Errorf("pod %s has conditions %+v", p.Name, p.Status.Conditions)
		}
		return fmt.Errorf("all four pods are bound")
	})
}
