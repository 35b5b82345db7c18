package batch

import "testing"

func TestValidateSchedule(t *testing.T) {
	good := []string{"*/5 * * * *", "0 0 * * 0", "30 2 1-15/2 JAN-MAR mon,wed,FRI", "@hourly", "@every 90s", "0 0 ? * *", "59 23 31 12 7"}
	bad := []string{"", "* * * *", "60 * * * *", "* 24 * * *", "* * 0 * *", "* * * 13 *", "5-1 * * * *", "*/0 * * * *", "@sometimes", "a b c d e"}
	for _, s := range good {
		if err := validateSchedule(s); err != nil {
			t.Errorf("validateSchedule(%q) = %v, want nil", s, err)
		}
	}
	for _, s := range bad {
		if err := validateSchedule(s); err == nil {
			t.Errorf("validateSchedule(%q) accepted", s)
		}
	}
}
