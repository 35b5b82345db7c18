package others

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPriorityClassDefaults(t *testing.T) {
	r := priorityclasses()
	pc := &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "high"}, Value: 1000}
	r.Default(pc)
	if pc.PreemptionPolicy == nil || *pc.PreemptionPolicy != corev1.PreemptLowerPriority {
		t.Fatalf("preemptionPolicy default: %v", pc.PreemptionPolicy)
	}
	never := corev1.PreemptNever
	kept := &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "n"}, PreemptionPolicy: &never}
	r.Default(kept)
	if *kept.PreemptionPolicy != corev1.PreemptNever {
		t.Fatalf("default overrode Never: %v", *kept.PreemptionPolicy)
	}
	if errs := r.Validate(pc, nil); len(errs) != 0 {
		t.Fatalf("valid class refused: %v", errs)
	}
	row := r.Row(pc)
	if len(row) != len(r.Columns) || row[1] != int64(1000) || row[2] != false || row[4] != "PreemptLowerPriority" {
		t.Fatalf("row %v for columns %v", row, r.Columns)
	}
}

func TestPriorityClassValidation(t *testing.T) {
	r := priorityclasses()
	bogus := corev1.PreemptionPolicy("Sometimes")
	cases := []struct {
		name  string
		pc    schedulingv1.PriorityClass
		field string // "" when valid
		msg   string
	}{
		{"user max", schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "top"}, Value: HighestUserPriority}, "", ""},
		{"negative", schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "low"}, Value: -5}, "", ""},
		{"above user max", schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "top"}, Value: HighestUserPriority + 1},
			"value", "maximum allowed value of a user defined priority is 1000000000"},
		{"system prefix unknown", schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "system-mine"}, Value: 10},
			"metadata.name", "reserved for system use only. error: system-mine is not a known system priority class"},
		{"system class wrong value", schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: SystemNodeCritical}, Value: 10},
			"metadata.name", "value of system-node-critical PriorityClass must be 2000001000"},
		{"system class as default", schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: SystemClusterCritical}, Value: 2000000000, GlobalDefault: true},
			"metadata.name", "globalDefault of system-cluster-critical PriorityClass must be false"},
		{"bad policy", schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "p"}, PreemptionPolicy: &bogus},
			"preemptionPolicy", "Unsupported value"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pc := c.pc.DeepCopy()
			r.Default(pc)
			errs := r.Validate(pc, nil)
			if c.field == "" {
				if len(errs) != 0 {
					t.Fatalf("refused: %v", errs)
				}
				return
			}
			if len(errs) != 1 || errs[0].Field != c.field || !strings.Contains(errs[0].Error(), c.msg) {
				t.Fatalf("want one error at %s containing %q, got %v", c.field, c.msg, errs)
			}
		})
	}
	for _, s := range SystemPriorityClasses() {
		r.Default(s)
		if errs := r.Validate(s, nil); len(errs) != 0 {
			t.Fatalf("system class %s refused: %v", s.Name, errs)
		}
	}
}

func TestPriorityClassUpdate(t *testing.T) {
	r := priorityclasses()
	old := &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: "high"}, Value: 1000}
	r.Default(old)
	desc := old.DeepCopy()
	desc.Description = "now described"
	desc.GlobalDefault = true
	if errs := r.Validate(desc, old); len(errs) != 0 {
		t.Fatalf("description and globalDefault are mutable: %v", errs)
	}
	val := old.DeepCopy()
	val.Value = 2000
	if errs := r.Validate(val, old); len(errs) != 1 || errs[0].Field != "value" || !strings.Contains(errs[0].Error(), "may not be changed") {
		t.Fatalf("value change: %v", errs)
	}
	never := corev1.PreemptNever
	pol := old.DeepCopy()
	pol.PreemptionPolicy = &never
	if errs := r.Validate(pol, old); len(errs) != 1 || errs[0].Field != "preemptionPolicy" {
		t.Fatalf("policy change: %v", errs)
	}
}
