package job

import (
	"testing"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
)

func TestIndexes(t *testing.T) {
	for _, c := range []struct {
		in          string
		completions int32
		want        string
	}{
		{"", 5, ""}, {"0", 5, "0"}, {"0-2,4", 5, "0-2,4"}, {"3,1,2", 5, "1-3"}, {"0,1", 5, "0-1"},
		{"1-3,7-9", 8, "1-3,7"}, // beyond completions is dropped
		{"0-1,x,4", 5, "0-1,4"},
	} {
		if got := formatIndexes(parseIndexes(c.in, c.completions)); got != c.want {
			t.Errorf("%q with %d completions: %q, want %q", c.in, c.completions, got, c.want)
		}
	}
}

func TestRestartsExceed(t *testing.T) {
	pod := func(restarts int32) *corev1.Pod {
		return &corev1.Pod{Status: corev1.PodStatus{ContainerStatuses: []corev1.ContainerStatus{{RestartCount: restarts}}}}
	}
	job := func(policy corev1.RestartPolicy, limit int32) *batchv1.Job {
		return &batchv1.Job{Spec: batchv1.JobSpec{BackoffLimit: &limit, Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: policy}}}}
	}
	for _, c := range []struct {
		job  *batchv1.Job
		pods []*corev1.Pod
		want bool
	}{
		{job(corev1.RestartPolicyOnFailure, 3), []*corev1.Pod{pod(1), pod(1)}, false},
		{job(corev1.RestartPolicyOnFailure, 3), []*corev1.Pod{pod(2), pod(1)}, true},
		{job(corev1.RestartPolicyOnFailure, 0), []*corev1.Pod{pod(1)}, true},
		{job(corev1.RestartPolicyOnFailure, 0), []*corev1.Pod{pod(0)}, false},
		{job(corev1.RestartPolicyNever, 1), []*corev1.Pod{pod(5)}, false},
	} {
		if got := restartsExceed(c.job, c.pods); got != c.want {
			t.Errorf("policy %s limit %d: %v, want %v", c.job.Spec.Template.Spec.RestartPolicy, *c.job.Spec.BackoffLimit, got, c.want)
		}
	}
}
