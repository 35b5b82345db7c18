package sim_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/node/sim"
)

// A pod with a non-zero exit code annotation ends Failed with that code;
// without one it succeeds.
func TestExitCodeAnnotation(t *testing.T) {
	s := apiservertest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sim.New(s.Client, sim.DefaultConfig(1)).Run(ctx)
	pods := s.Client.CoreV1().Pods("default")
	for name, code := range map[string]string{"fails": "3", "succeeds": "0"} {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{sim.DurationAnnotation: "100ms", sim.ExitCodeAnnotation: code}},
			Spec: corev1.PodSpec{NodeName: "sim-0", RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]struct {
		phase  corev1.PodPhase
		code   int32
		reason string
	}{"fails": {corev1.PodFailed, 3, "Error"}, "succeeds": {corev1.PodSucceeded, 0, "Completed"}}
	for name, w := range want {
		apiservertest.Eventually(t, 20*time.Second, name, func() error {
			p, err := pods.Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if p.Status.Phase != w.phase || len(p.Status.ContainerStatuses) != 1 {
				return fmt.Errorf("phase %s", p.Status.Phase)
			}
			if term := p.Status.ContainerStatuses[0].State.Terminated; term == nil || term.ExitCode != w.code || term.Reason != w.reason {
				return fmt.Errorf("container state %+v", p.Status.ContainerStatuses[0].State)
			}
			return nil
		})
	}
}
