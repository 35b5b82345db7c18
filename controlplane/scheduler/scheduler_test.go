package scheduler_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/controlplane/scheduler"
	"github.com/navarch/navarch/node/sim"
)

func waitFor(t *testing.T, what string, f func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ok, err := f()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSchedulerWithHollowNodes runs the scheduler and three hollow nodes
// against a real API server: pods spread and run; a pod that fits nowhere
// says why and is placed as soon as a node changes to fit it.
func TestSchedulerWithHollowNodes(t *testing.T) {
	s := apiservertest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sim.New(s.Client, sim.DefaultConfig(3)).Run(ctx)
	go scheduler.New(s.Client).Run(ctx)
	pods := s.Client.CoreV1().Pods("default")

	for i := 0; i < 6; i++ {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i)},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	perNode := map[string]int{}
	waitFor(t, "six running pods", func() (bool, error) {
		list, err := pods.List(ctx, metav1.ListOptions{FieldSelector: "status.phase=Running"})
		if err != nil || len(list.Items) != 6 {
			return false, fmt.Errorf("%v, %d running", err, len(list.Items))
		}
		perNode = map[string]int{}
		for _, p := range list.Items {
			perNode[p.Spec.NodeName]++
			if p.Status.PodIP == "" {
				return false, fmt.Errorf("pod %s has no IP", p.Name)
			}
		}
		return true, nil
	})
	if len(perNode) != 3 || perNode["sim-0"] != 2 {
		t.Errorf("six equal pods on three equal nodes: %v, want two each", perNode)
	}

	sel := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "wants-ssd"},
		Spec: corev1.PodSpec{NodeSelector: map[string]string{"disk": "ssd"}, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	if _, err := pods.Create(ctx, sel, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
	waitFor(t, "FailedScheduling", func() (bool, error) {
		evs, err := s.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=wants-ssd,reason=FailedScheduling"})
		if err != nil || len(evs.Items) == 0 {
			return false, err
		}
		p, err := pods.Get(ctx, "wants-ssd", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == "Unschedulable" && c.Message == want {
				return evs.Items[0].Message == want, fmt.Errorf("event says %q", evs.Items[0].Message)
			}
		}
		return false, fmt.Errorf("conditions %v", p.Status.Conditions)
	})

	// Labelling a node is a cluster change: the pod is retried and placed.
	node, err := s.Client.CoreV1().Nodes().Get(ctx, "sim-2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	node.Labels["disk"] = "ssd"
	if _, err := s.Client.CoreV1().Nodes().Update(ctx, node, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "wants-ssd running on sim-2", func() (bool, error) {
		p, err := pods.Get(ctx, "wants-ssd", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return p.Spec.NodeName == "sim-2" && p.Status.Phase == corev1.PodRunning, fmt.Errorf("node %q phase %s", p.Spec.NodeName, p.Status.Phase)
	})

	// Deleting a pod on a node completes through the hollow node.
	if err := pods.Delete(ctx, "p0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "p0 gone", func() (bool, error) {
		_, err := pods.Get(ctx, "p0", metav1.GetOptions{})
		return err != nil && strings.Contains(err.Error(), "not found"), err
	})
}
