package batch

import (
	"strings"
	"time"
	_ "time/tzdata" // time zones of CronJobs must resolve on hosts without tzdata

	batchv1 "k8s.io/api/batch/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/navarch/navarch/controlplane/registry"
	"github.com/navarch/navarch/controlplane/registry/core"
)

func cronjobs() *registry.Resource {
	return &registry.Resource{Group: "batch", Version: "v1", Plural: "cronjobs", Singular: "cronjob", Kind: "CronJob", Namespaced: true, ShortNames: []string{"cj"}, Categories: []string{"all"}, Status: true,
		New: func() runtime.Object { return &batchv1.CronJob{} }, NewList: func() runtime.Object { return &batchv1.CronJobList{} },
		Default: func(obj runtime.Object) {
			cj := obj.(*batchv1.CronJob)
			if cj.Spec.ConcurrencyPolicy == "" {
				cj.Spec.ConcurrencyPolicy = batchv1.AllowConcurrent
			}
			if cj.Spec.Suspend == nil {
				f := false
				cj.Spec.Suspend = &f
			}
			if cj.Spec.SuccessfulJobsHistoryLimit == nil {
				cj.Spec.SuccessfulJobsHistoryLimit = ptr.To[int32](3)
			}
			if cj.Spec.FailedJobsHistoryLimit == nil {
				cj.Spec.FailedJobsHistoryLimit = ptr.To[int32](1)
			}
			core.DefaultPodSpec(&cj.Spec.JobTemplate.Spec.Template.Spec)
		},
		Validate: func(obj, old runtime.Object) field.ErrorList {
			cj := obj.(*batchv1.CronJob)
			var errs field.ErrorList
			if strings.Contains(cj.Spec.Schedule, "TZ") {
				errs = append(errs, field.Invalid(spec.Child("schedule"), cj.Spec.Schedule, "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"))
			} else if err := validateSchedule(cj.Spec.Schedule); err != nil {
				errs = append(errs, field.Invalid(spec.Child("schedule"), cj.Spec.Schedule, err.Error()))
			}
			if tz := cj.Spec.TimeZone; tz != nil {
				if _, err := time.LoadLocation(*tz); err != nil || *tz == "" || strings.EqualFold(*tz, "local") {
					errs = append(errs, field.Invalid(spec.Child("timeZone"), *tz, "unknown time zone "+*tz))
				}
			}
			switch cj.Spec.ConcurrencyPolicy {
			case batchv1.AllowConcurrent, batchv1.ForbidConcurrent, batchv1.ReplaceConcurrent:
			default:
				errs = append(errs, field.NotSupported(spec.Child("concurrencyPolicy"), cj.Spec.ConcurrencyPolicy, []string{"Allow", "Forbid", "Replace"}))
			}
			if d := cj.Spec.StartingDeadlineSeconds; d != nil && *d < 0 {
				errs = append(errs, field.Invalid(spec.Child("startingDeadlineSeconds"), *d, "must be greater than or equal to 0"))
			}
			if len(cj.Name) > 52 {
				errs = append(errs, field.Invalid(field.NewPath("metadata", "name"), cj.Name, "must be no more than 52 characters"))
			}
			// The job template gets its selector when the Job is made.
			tmpl := cj.Spec.JobTemplate.Spec.DeepCopy()
			tmpl.Selector, tmpl.ManualSelector = nil, nil
			defaultJobSpec(tmpl)
			return append(errs, validateJobSpec(tmpl, spec.Child("jobTemplate", "spec"))...)
		},
		Columns: []metav1.TableColumnDefinition{
			registry.NameColumn,
			{Name: "Schedule", Type: "string", Description: "The schedule in Cron format."},
			{Name: "Timezone", Type: "string", Description: "The time zone name for the given schedule."},
			{Name: "Suspend", Type: "boolean", Description: "This flag tells the controller to suspend subsequent executions."},
			{Name: "Active", Type: "integer", Description: "A list of pointers to currently running jobs."},
			{Name: "Last Schedule", Type: "string", Description: "Information when was the last time the job was successfully scheduled."},
			registry.AgeColumn,
			{Name: "Containers", Type: "string", Priority: 1, Description: "Names of each container in the template."},
			{Name: "Images", Type: "string", Priority: 1, Description: "Images referenced by each container in the template."},
			{Name: "Selector", Type: "string", Priority: 1, Description: "A label query over pods that should match the pod count."},
		},
		Row: func(obj runtime.Object) []interface{} {
			cj := obj.(*batchv1.CronJob)
			names, images := core.ContainersAndImages(&cj.Spec.JobTemplate.Spec.Template.Spec)
			last := "<none>"
			if cj.Status.LastScheduleTime != nil {
				last = registry.Age(*cj.Status.LastScheduleTime)
			}
			tz := "<none>"
			if cj.Spec.TimeZone != nil {
				tz = *cj.Spec.TimeZone
			}
			// kubectl shows True/False here, as upstream's printer writes it.
			suspend := "<unset>"
			if cj.Spec.Suspend != nil {
				suspend = map[bool]string{true: "True", false: "False"}[*cj.Spec.Suspend]
			}
			return []interface{}{cj.Name, cj.Spec.Schedule, tz, suspend, int64(len(cj.Status.Active)), last,
				registry.Age(cj.CreationTimestamp), names, images, registry.SelectorColumn(cj.Spec.JobTemplate.Spec.Selector)}
		},
	}
}
