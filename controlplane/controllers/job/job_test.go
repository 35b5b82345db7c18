package job_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/apiserver/apiservertest"
	"github.com/navarch/navarch/controlplane/controllers/job"
	"github.com/navarch/navarch/controlplane/scheduler"
	"github.com/navarch/navarch/node/sim"
)

func eventually(t *testing.T, what string, f func() error) {
	t.Helper()
	apiservertest.Eventually(t, 30*time.Second, what, f)
}

// cluster is an API server with hollow nodes, the scheduler and the Job
// controller (with a short back-off).
func cluster(t *testing.T) (kubernetes.Interface, context.Context) {
	s := apiservertest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go sim.New(s.Client, sim.DefaultConfig(3)).Run(ctx)
	go scheduler.New(s.Client).Run(ctx)
	c := job.New(s.Client, informers.NewSharedInformerFactory(s.Client, 0))
	c.BackoffBase = 50 * time.Millisecond
	go c.Run(ctx)
	return s.Client, ctx
}

func newJob(name string, completions, parallelism *int32, annotations map[string]string) *batchv1.Job {
	return &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: batchv1.JobSpec{
		Completions: completions, Parallelism: parallelism,
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Annotations: annotations},
			Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}}
}

func conditionTypes(j *batchv1.Job) []string {
	var out []string
	for _, c := range j.Status.Conditions {
		if c.Status == corev1.ConditionTrue {
			out = append(out, string(c.Type)+"/"+c.Reason)
		}
	}
	return out
}

// waitFor polls a Job until check passes.
func waitFor(t *testing.T, ctx context.Context, client kubernetes.Interface, name, what string, check func(*batchv1.Job) error) *batchv1.Job {
	t.Helper()
	var got *batchv1.Job
	eventually(t, what, func() error {
		j, err := client.BatchV1().Jobs("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		got = j
		return check(j)
	})
	return got
}

func finishedWith(want ...string) func(*batchv1.Job) error {
	return func(j *batchv1.Job) error {
		if got := strings.Join(conditionTypes(j), " "); got != strings.Join(want, " ") {
			return fmt.Errorf("conditions %q, want %q; status %+v", got, strings.Join(want, " "), j.Status)
		}
		return nil
	}
}

// maxActive watches a Job's pods and reports the most that were active
// (neither finished nor being deleted) at once.
func maxActive(t *testing.T, ctx context.Context, client kubernetes.Interface, jobName string) func() int {
	w, err := client.CoreV1().Pods("default").Watch(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + jobName})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	most := 0
	active := map[types.UID]bool{}
	go func() {
		for ev := range w.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			mu.Lock()
			delete(active, p.UID)
			if ev.Type != watch.Deleted && p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
				active[p.UID] = true
			}
			most = max(most, len(active))
			mu.Unlock()
		}
	}()
	t.Cleanup(w.Stop)
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return most
	}
}

func podsOf(t *testing.T, ctx context.Context, client kubernetes.Interface, jobName string) []corev1.Pod {
	t.Helper()
	list, err := client.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "batch.kubernetes.io/job-name=" + jobName})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func TestCompletionsWithinParallelism(t *testing.T) {
	client, ctx := cluster(t)
	peak := maxActive(t, ctx, client, "five")
	if _, err := client.BatchV1().Jobs("default").Create(ctx, newJob("five", ptr.To[int32](5), ptr.To[int32](2), map[string]string{sim.DurationAnnotation: "200ms"}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	j := waitFor(t, ctx, client, "five", "complete", finishedWith("SuccessCriteriaMet/CompletionsReached", "Complete/CompletionsReached"))
	st := j.Status
	if st.Succeeded != 5 || st.Failed != 0 || st.Active != 0 || st.StartTime == nil || st.CompletionTime == nil || st.CompletionTime.Before(st.StartTime) {
		t.Errorf("status %+v", st)
	}
	if u := st.UncountedTerminatedPods; u != nil && len(u.Succeeded)+len(u.Failed) > 0 {
		t.Errorf("uncounted pods left: %+v", u)
	}
	if n := peak(); n > 2 || n == 0 {
		t.Errorf("at most %d pods active at once, want 2", n)
	}
	pods := podsOf(t, ctx, client, "five")
	if len(pods) != 5 {
		t.Errorf("%d pods, want 5", len(pods))
	}
	for _, p := range pods {
		ref := metav1.GetControllerOf(&p)
		if ref == nil || ref.UID != j.UID || p.Labels["batch.kubernetes.io/controller-uid"] != string(j.UID) || p.Labels["controller-uid"] != string(j.UID) || p.Labels["job-name"] != "five" {
			t.Errorf("pod %s: owner %v labels %v", p.Name, ref, p.Labels)
		}
		if len(p.Finalizers) != 0 || p.Status.Phase != corev1.PodSucceeded {
			t.Errorf("pod %s: finalizers %v phase %s", p.Name, p.Finalizers, p.Status.Phase)
		}
	}
}

func TestIndexedJob(t *testing.T) {
	client, ctx := cluster(t)
	j := newJob("ix", ptr.To[int32](4), ptr.To[int32](2), map[string]string{sim.DurationAnnotation: "100ms"})
	j.Spec.CompletionMode = ptr.To(batchv1.IndexedCompletion)
	if _, err := client.BatchV1().Jobs("default").Create(ctx, j, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got := waitFor(t, ctx, client, "ix", "complete", finishedWith("SuccessCriteriaMet/CompletionsReached", "Complete/CompletionsReached"))
	if got.Status.CompletedIndexes != "0-3" || got.Status.Succeeded != 4 {
		t.Errorf("completedIndexes %q succeeded %d", got.Status.CompletedIndexes, got.Status.Succeeded)
	}
	seen := map[string]bool{}
	for _, p := range podsOf(t, ctx, client, "ix") {
		ix := p.Annotations[job.CompletionIndexKey]
		seen[ix] = true
		if p.Labels[job.CompletionIndexKey] != ix || p.Spec.Hostname != "ix-"+ix || !strings.HasPrefix(p.Name, "ix-"+ix+"-") {
			t.Errorf("pod %s: index %q label %q hostname %q", p.Name, ix, p.Labels[job.CompletionIndexKey], p.Spec.Hostname)
		}
		env := p.Spec.Containers[0].Env
		if len(env) != 1 || env[0].Name != "JOB_COMPLETION_INDEX" || env[0].ValueFrom == nil || env[0].ValueFrom.FieldRef == nil {
			t.Errorf("pod %s env %+v", p.Name, env)
		}
	}
	if len(seen) != 4 {
		t.Errorf("indexes of the pods: %v", seen)
	}
}

func TestBackoffLimit(t *testing.T) {
	client, ctx := cluster(t)
	j := newJob("failing", nil, nil, map[string]string{sim.DurationAnnotation: "50ms", sim.ExitCodeAnnotation: "2"})
	j.Spec.BackoffLimit = ptr.To[int32](2)
	if _, err := client.BatchV1().Jobs("default").Create(ctx, j, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got := waitFor(t, ctx, client, "failing", "failed", finishedWith("FailureTarget/BackoffLimitExceeded", "Failed/BackoffLimitExceeded"))
	if got.Status.Failed != 3 || got.Status.Succeeded != 0 || got.Status.Active != 0 || got.Status.CompletionTime != nil {
		t.Errorf("status %+v", got.Status)
	}
	time.Sleep(300 * time.Millisecond) // long enough for a wrongly made replacement to appear
	if pods := podsOf(t, ctx, client, "failing"); len(pods) != 3 {
		t.Errorf("%d pods, want 3 (one try and two retries)", len(pods))
	}
}

func TestActiveDeadline(t *testing.T) {
	client, ctx := cluster(t)
	j := newJob("slow", nil, ptr.To[int32](2), map[string]string{sim.DurationAnnotation: "1h"})
	j.Spec.ActiveDeadlineSeconds = ptr.To[int64](1)
	if _, err := client.BatchV1().Jobs("default").Create(ctx, j, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	got := waitFor(t, ctx, client, "slow", "failed", finishedWith("FailureTarget/DeadlineExceeded", "Failed/DeadlineExceeded"))
	if got.Status.Active != 0 || got.Status.Failed != 2 {
		t.Errorf("status %+v", got.Status)
	}
	eventually(t, "pods removed", func() error {
		if pods := podsOf(t, ctx, client, "slow"); len(pods) != 0 {
			return fmt.Errorf("%d pods left", len(pods))
		}
		return nil
	})
}

func TestSuspendAndResume(t *testing.T) {
	client, ctx := cluster(t)
	j := newJob("later", ptr.To[int32](2), ptr.To[int32](2), map[string]string{sim.DurationAnnotation: "100ms"})
	j.Spec.Suspend = ptr.To(true)
	if _, err := client.BatchV1().Jobs("default").Create(ctx, j, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, client, "later", "suspended", finishedWith("Suspended/JobSuspended"))
	if pods := podsOf(t, ctx, client, "later"); len(pods) != 0 {
		t.Fatalf("a suspended job has %d pods", len(pods))
	}
	patch := []byte(`{"spec":{"suspend":false}}`)
	if _, err := client.BatchV1().Jobs("default").Patch(ctx, "later", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	got := waitFor(t, ctx, client, "later", "complete", finishedWith("SuccessCriteriaMet/CompletionsReached", "Complete/CompletionsReached"))
	if got.Status.Succeeded != 2 || got.Status.StartTime == nil {
		t.Errorf("status %+v", got.Status)
	}
}

// Pods of a deleted Job lose the tracking finalizer, so they can go.
func TestDeletedJobReleasesPods(t *testing.T) {
	client, ctx := cluster(t)
	if _, err := client.BatchV1().Jobs("default").Create(ctx, newJob("gone", nil, ptr.To[int32](2), nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "two pods", func() error {
		if n := len(podsOf(t, ctx, client, "gone")); n != 2 {
			return fmt.Errorf("%d pods", n)
		}
		return nil
	})
	if err := client.BatchV1().Jobs("default").Delete(ctx, "gone", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "finalizers removed", func() error {
		for _, p := range podsOf(t, ctx, client, "gone") {
			if len(p.Finalizers) > 0 {
				return fmt.Errorf("pod %s finalizers %v", p.Name, p.Finalizers)
			}
		}
		return nil
	})
}
