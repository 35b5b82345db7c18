package batch

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// validateSchedule checks a cron schedule as CronJobs accept it: five fields
// (minute hour day-of-month month day-of-week) with *, ?, ranges, steps,
// lists and month/day names, or one of the @ macros.
func validateSchedule(s string) error {
	s = strings.TrimSpace(s)
	if s == "" {
		return fmt.Errorf("empty spec string")
	}
	if strings.HasPrefix(s, "@") {
		switch s {
		case "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly":
			return nil
		}
		if d, ok := strings.CutPrefix(s, "@every "); ok {
			if _, err := time.ParseDuration(d); err != nil {
				return fmt.Errorf("failed to parse duration %s: %v", s, err)
			}
			return nil
		}
		return fmt.Errorf("unrecognized descriptor: %s", s)
	}
	fields := strings.Fields(s)
	if len(fields) != 5 {
		return fmt.Errorf("expected exactly 5 fields, found %d: %s", len(fields), s)
	}
	bounds := []struct {
		min, max int
		names    map[string]int
	}{
		{0, 59, nil}, {0, 23, nil}, {1, 31, nil},
		{1, 12, map[string]int{"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12}},
		{0, 7, map[string]int{"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}},
	}
	for i, f := range fields {
		for _, part := range strings.Split(f, ",") {
			if err := validateCronPart(part, bounds[i].min, bounds[i].max, bounds[i].names); err != nil {
				return err
			}
		}
	}
	return nil
}

func validateCronPart(part string, min, max int, names map[string]int) error {
	rng, step, hasStep := strings.Cut(part, "/")
	if hasStep {
		n, err := strconv.Atoi(step)
		if err != nil || n <= 0 {
			return fmt.Errorf("failed to parse int from %s", step)
		}
	}
	if rng == "*" || rng == "?" {
		return nil
	}
	lo, hi, isRange := strings.Cut(rng, "-")
	value := func(s string) (int, error) {
		if v, ok := names[strings.ToLower(s)]; ok {
			return v, nil
		}
		n, err := strconv.Atoi(s)
		if err != nil {
			return 0, fmt.Errorf("failed to parse int from %s: %v", s, err)
		}
		if n < min || n > max {
			return 0, fmt.Errorf("end of range (%d) above maximum (%d): %s", n, max, part)
		}
		return n, nil
	}
	a, err := value(lo)
	if err != nil {
		return err
	}
	if isRange {
		b, err := value(hi)
		if err != nil {
			return err
		}
		if b < a {
			return fmt.Errorf("beginning of range (%d) beyond end of range (%d): %s", a, b, part)
		}
	}
	return nil
}
