package batch

import (
	"fmt"
	"math"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/registry"
	"github.com/navarch/navarch/controlplane/registry/core"
)

// Labels upstream puts on a Job's pods so that its generated selector finds them.
const (
	labelControllerUID       = "batch.kubernetes.io/controller-uid"
	labelJobName             = "batch.kubernetes.io/job-name"
	legacyLabelControllerUID = "controller-uid"
	legacyLabelJobName       = "job-name"
)

var spec = field.NewPath("spec")

func jobs() *registry.Resource {
	return &registry.Resource{Group: "batch", Version: "v1", Plural: "jobs", Singular: "job", Kind: "Job", Namespaced: true, Categories: []string{"all"}, Status: true,
		New: func() runtime.Object { return &batchv1.Job{} }, NewList: func() runtime.Object { return &batchv1.JobList{} },
		Default:          func(obj runtime.Object) { defaultJobSpec(&obj.(*batchv1.Job).Spec) },
		PrepareForCreate: func(obj runtime.Object) { generateJobSelector(obj.(*batchv1.Job)) },
		Validate: func(obj, old runtime.Object) field.ErrorList {
			job := obj.(*batchv1.Job)
			errs := validateJobSpec(&job.Spec, spec)
			if o, ok := old.(*batchv1.Job); ok {
				if !apiequality.Semantic.DeepEqual(job.Spec.Selector, o.Spec.Selector) {
					errs = append(errs, field.Invalid(spec.Child("selector"), job.Spec.Selector, "field is immutable"))
				}
				if !apiequality.Semantic.DeepEqual(job.Spec.Template, o.Spec.Template) {
					errs = append(errs, field.Invalid(spec.Child("template"), "", "field is immutable"))
				}
				if !apiequality.Semantic.DeepEqual(job.Spec.CompletionMode, o.Spec.CompletionMode) {
					errs = append(errs, field.Invalid(spec.Child("completionMode"), job.Spec.CompletionMode, "field is immutable"))
				}
			}
			return errs
		},
		Columns: []metav1.TableColumnDefinition{
			registry.NameColumn,
			{Name: "Status", Type: "string", Description: "Status of the job."},
			{Name: "Completions", Type: "string", Description: "The desired number of successfully finished pods the job should be run with."},
			{Name: "Duration", Type: "string", Description: "Time required to complete the job."},
			registry.AgeColumn,
			{Name: "Containers", Type: "string", Priority: 1, Description: "Names of each container in the template."},
			{Name: "Images", Type: "string", Priority: 1, Description: "Images referenced by each container in the template."},
			{Name: "Selector", Type: "string", Priority: 1, Description: "A label query over pods that should match the pod count."},
		},
		Row: func(obj runtime.Object) []interface{} {
			job := obj.(*batchv1.Job)
			names, images := core.ContainersAndImages(&job.Spec.Template.Spec)
			return []interface{}{job.Name, jobStatus(job), jobCompletions(job), jobDuration(job), registry.Age(job.CreationTimestamp), names, images, registry.SelectorColumn(job.Spec.Selector)}
		},
	}
}

func defaultJobSpec(s *batchv1.JobSpec) {
	if s.Completions == nil && s.Parallelism == nil {
		s.Completions, s.Parallelism = ptr.To[int32](1), ptr.To[int32](1)
	}
	if s.Parallelism == nil {
		s.Parallelism = ptr.To[int32](1)
	}
	if s.BackoffLimit == nil {
		if s.BackoffLimitPerIndex != nil {
			s.BackoffLimit = ptr.To[int32](math.MaxInt32)
		} else {
			s.BackoffLimit = ptr.To[int32](6)
		}
	}
	if s.CompletionMode == nil {
		m := batchv1.NonIndexedCompletion
		s.CompletionMode = &m
	}
	if s.Suspend == nil {
		f := false
		s.Suspend = &f
	}
	if s.PodReplacementPolicy == nil {
		p := batchv1.TerminatingOrFailed
		if s.PodFailurePolicy != nil {
			p = batchv1.Failed
		}
		s.PodReplacementPolicy = &p
	}
	if s.ManualSelector == nil {
		f := false
		s.ManualSelector = &f
	}
	core.DefaultPodSpec(&s.Template.Spec)
}

// generateJobSelector gives a Job without a manual selector the selector and
// pod labels upstream generates from its uid.
func generateJobSelector(job *batchv1.Job) {
	if job.Spec.ManualSelector != nil && *job.Spec.ManualSelector {
		return
	}
	uid := string(job.UID)
	if job.Spec.Template.Labels == nil {
		job.Spec.Template.Labels = map[string]string{}
	}
	for k, v := range map[string]string{labelControllerUID: uid, legacyLabelControllerUID: uid, labelJobName: job.Name, legacyLabelJobName: job.Name} {
		job.Spec.Template.Labels[k] = v
	}
	job.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{labelControllerUID: uid}}
}

func validateJobSpec(s *batchv1.JobSpec, fld *field.Path) field.ErrorList {
	var errs field.ErrorList
	for name, v := range map[string]*int32{"parallelism": s.Parallelism, "completions": s.Completions, "backoffLimit": s.BackoffLimit} {
		if v != nil && *v < 0 {
			errs = append(errs, field.Invalid(fld.Child(name), *v, "must be greater than or equal to 0"))
		}
	}
	if a := s.ActiveDeadlineSeconds; a != nil && *a <= 0 {
		errs = append(errs, field.Invalid(fld.Child("activeDeadlineSeconds"), *a, "must be greater than or equal to 1"))
	}
	if t := s.TTLSecondsAfterFinished; t != nil && *t < 0 {
		errs = append(errs, field.Invalid(fld.Child("ttlSecondsAfterFinished"), *t, "must be greater than or equal to 0"))
	}
	if m := s.CompletionMode; m != nil && *m != batchv1.NonIndexedCompletion && *m != batchv1.IndexedCompletion {
		errs = append(errs, field.NotSupported(fld.Child("completionMode"), *m, []string{"NonIndexed", "Indexed"}))
	}
	if m := s.CompletionMode; m != nil && *m == batchv1.IndexedCompletion && s.Completions == nil {
		errs = append(errs, field.Required(fld.Child("completions"), "when completion mode is Indexed"))
	}
	if s.Selector == nil {
		if s.ManualSelector != nil && *s.ManualSelector {
			errs = append(errs, field.Required(fld.Child("selector"), ""))
		}
	} else if sel, err := metav1.LabelSelectorAsSelector(s.Selector); err != nil {
		errs = append(errs, field.Invalid(fld.Child("selector"), s.Selector, err.Error()))
	} else if !sel.Matches(labelsSet(s.Template.Labels)) {
		errs = append(errs, field.Invalid(fld.Child("template", "metadata", "labels"), s.Template.Labels, "`selector` does not match template `labels`"))
	}
	errs = append(errs, core.ValidatePodTemplateSpec(&s.Template, fld.Child("template"))...)
	if p := s.Template.Spec.RestartPolicy; p != corev1.RestartPolicyOnFailure && p != corev1.RestartPolicyNever {
		errs = append(errs, field.NotSupported(fld.Child("template", "spec", "restartPolicy"), p, []string{"OnFailure", "Never"}))
	}
	return errs
}

func jobStatus(job *batchv1.Job) string {
	status := "Running"
	for _, c := range job.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete:
			return "Complete"
		case batchv1.JobFailed:
			return "Failed"
		case batchv1.JobSuspended:
			status = "Suspended"
		case batchv1.JobFailureTarget:
			status = "FailureTarget"
		case batchv1.JobSuccessCriteriaMet:
			status = "SuccessCriteriaMet"
		}
	}
	if job.DeletionTimestamp != nil {
		return "Terminating"
	}
	return status
}

func jobCompletions(job *batchv1.Job) string {
	if job.Spec.Completions != nil {
		return fmt.Sprintf("%d/%d", job.Status.Succeeded, *job.Spec.Completions)
	}
	parallelism := int32(0)
	if job.Spec.Parallelism != nil {
		parallelism = *job.Spec.Parallelism
	}
	if parallelism > 1 {
		return fmt.Sprintf("%d/1 of %d", job.Status.Succeeded, parallelism)
	}
	return fmt.Sprintf("%d/1", job.Status.Succeeded)
}

func jobDuration(job *batchv1.Job) string {
	switch {
	case job.Status.StartTime == nil:
		return ""
	case job.Status.CompletionTime == nil:
		return duration.HumanDuration(time.Since(job.Status.StartTime.Time))
	}
	return duration.HumanDuration(job.Status.CompletionTime.Sub(job.Status.StartTime.Time))
}
