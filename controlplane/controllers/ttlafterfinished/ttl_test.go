package ttlafterfinished_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/controlplane/controllers/job"
	"github.com/navarch/navarch/controlplane/controllers/ttlafterfinished"
	"github.com/navarch/navarch/controlplane/scheduler"
	"github.com/navarch/navarch/node/sim"
)

func TestFinishedJobIsDeletedAfterTTL(t *testing.T) {
	s := apiservertest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go sim.New(s.Client, sim.DefaultConfig(1)).Run(ctx)
	go scheduler.New(s.Client).Run(ctx)
	factory := informers.NewSharedInformerFactory(s.Client, 0)
	go job.New(s.Client, factory).Run(ctx)
	go ttlafterfinished.New(s.Client, factory).Run(ctx)
	jobs := s.Client.BatchV1().Jobs("default")

	mk := func(name string, ttl *int32) {
		j := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: batchv1.JobSpec{TTLSecondsAfterFinished: ttl,
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{sim.DurationAnnotation: "50ms"}},
				Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}}
		if _, err := jobs.Create(ctx, j, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mk("keep", nil)
	mk("brief", ptr.To[int32](2))

	var finished time.Time
	apiservertest.Eventually(t, 30*time.Second, "brief completes", func() error {
		j, err := jobs.Get(ctx, "brief", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range j.Status.Conditions {
			if c.Type == batchv1.JobComplete && c.Status == corev1.ConditionTrue {
				finished = c.LastTransitionTime.Time
				return nil
			}
		}
		return fmt.Errorf("conditions %+v", j.Status.Conditions)
	})
	apiservertest.Eventually(t, 30*time.Second, "brief deleted", func() error {
		_, err := jobs.Get(ctx, "brief", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("still there: %v", err)
	})
	if early := finished.Add(2 * time.Second).Sub(time.Now()); early > 0 {
		t.Errorf("deleted %s before its TTL ran out", early)
	}
	// A Job without a TTL stays.
	j, err := jobs.Get(ctx, "keep", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !job.Finished(j) {
		t.Errorf("keep did not finish: %+v", j.Status)
	}
}
