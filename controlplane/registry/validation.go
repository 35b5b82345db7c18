package registry

import (
	"fmt"

	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// ValidateCountOrPercent checks values like maxSurge or minAvailable: a
// non-negative count or a percentage from 0% to 100%.
func ValidateCountOrPercent(v *intstr.IntOrString, fld *field.Path) field.ErrorList {
	if v == nil {
		return nil
	}
	if v.Type == intstr.Int {
		if v.IntVal < 0 {
			return field.ErrorList{field.Invalid(fld, v.IntVal, "must be greater than or equal to 0")}
		}
		return nil
	}
	var pct int
	if _, err := fmt.Sscanf(v.StrVal, "%d%%", &pct); err != nil || fmt.Sprintf("%d%%", pct) != v.StrVal || pct < 0 {
		return field.ErrorList{field.Invalid(fld, v.StrVal, "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')")}
	}
	if pct > 100 {
		return field.ErrorList{field.Invalid(fld, v.StrVal, "must not be greater than 100%")}
	}
	return nil
}
