package cronjob_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/controlplane/controllers/cronjob"
)

// With the clock a minute ahead, a CronJob due every minute makes its Job;
// Forbid holds the next back until that Job finishes.
func TestCronJobCreatesJobs(t *testing.T) {
	s := apiservertest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	clock := clocktesting.NewFakePassiveClock(time.Now().Add(65 * time.Second))
	c := cronjob.New(s.Client, informers.NewSharedInformerFactory(s.Client, 0))
	c.Clock = clock
	go c.Run(ctx)

	cj := &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: "tick"}, Spec: batchv1.CronJobSpec{Schedule: "* * * * *", ConcurrencyPolicy: batchv1.ForbidConcurrent,
		JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}}}}
	created, err := s.Client.BatchV1().CronJobs("default").Create(ctx, cj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	jobsOf := func() ([]batchv1.Job, error) {
		list, err := s.Client.BatchV1().Jobs("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, err
		}
		var out []batchv1.Job
		for _, j := range list.Items {
			if ref := metav1.GetControllerOf(&j); ref != nil && ref.UID == created.UID {
				out = append(out, j)
			}
		}
		return out, nil
	}
	var first batchv1.Job
	apiservertest.Eventually(t, 20*time.Second, "first job", func() error {
		jobs, err := jobsOf()
		if err != nil || len(jobs) != 1 {
			return fmt.Errorf("%d jobs, %v", len(jobs), err)
		}
		first = jobs[0]
		got, err := s.Client.BatchV1().CronJobs("default").Get(ctx, "tick", metav1.GetOptions{})
		if err != nil || len(got.Status.Active) != 1 || got.Status.Active[0].UID != first.UID || got.Status.LastScheduleTime == nil {
			return fmt.Errorf("status %+v %v", got.Status, err)
		}
		return nil
	})
	sched, err := time.Parse(time.RFC3339, first.Annotations[cronjob.ScheduledTimestampAnnotation])
	if err != nil || first.Name != fmt.Sprintf("tick-%d", sched.Unix()/60) || sched.After(clock.Now()) || sched.Second() != 0 {
		t.Fatalf("job %s scheduled %q (%v)", first.Name, first.Annotations[cronjob.ScheduledTimestampAnnotation], err)
	}

	// A minute later, Forbid starts nothing while the first Job runs.
	clock.SetTime(clock.Now().Add(time.Minute))
	poke := func() {
		patch := []byte(fmt.Sprintf(`{"metadata":{"annotations":{"poke":"%d"}}}`, time.Now().UnixNano()))
		if _, err := s.Client.BatchV1().CronJobs("default").Patch(ctx, "tick", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	poke()
	time.Sleep(300 * time.Millisecond) // time for a wrong second Job to appear
	if jobs, _ := jobsOf(); len(jobs) != 1 {
		t.Fatalf("Forbid let %d jobs run", len(jobs))
	}

	// Once it completes, the schedule that was held back runs.
	done := first.DeepCopy()
	now := metav1.Now()
	done.Status.StartTime = &now
	done.Status.CompletionTime = &now
	done.Status.Conditions = []batchv1.JobCondition{{Type: batchv1.JobComplete, Status: corev1.ConditionTrue, LastTransitionTime: now}}
	if _, err := s.Client.BatchV1().Jobs("default").UpdateStatus(ctx, done, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	apiservertest.Eventually(t, 20*time.Second, "second job", func() error {
		jobs, err := jobsOf()
		if err != nil || len(jobs) != 2 {
			return fmt.Errorf("%d jobs, %v", len(jobs), err)
		}
		got, err := s.Client.BatchV1().CronJobs("default").Get(ctx, "tick", metav1.GetOptions{})
		if err != nil || got.Status.LastSuccessfulTime == nil || len(got.Status.Active) != 1 || got.Status.Active[0].UID == first.UID {
			return fmt.Errorf("status %+v %v", got.Status, err)
		}
		return nil
	})
}
