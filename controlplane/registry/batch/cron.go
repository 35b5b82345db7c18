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

// Schedule is a parsed cron schedule that can say when it fires next. The
// CronJob controller uses it; validation above gives the errors users see.
type Schedule struct {
	every time.Duration // @every: a fixed delay instead of the fields
	// One bit per allowed value of each field.
	minute, hour, dom, month, dow uint64
	// domStar and dowStar say the day fields were * or ?: cron then needs
	// both day fields to match; otherwise either one is enough.
	domStar, dowStar bool
}

var macros = map[string]string{
	"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
	"@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}

// ParseSchedule parses a schedule validateSchedule accepts.
func ParseSchedule(s string) (*Schedule, error) {
	if err := validateSchedule(s); err != nil {
		return nil, err
	}
	s = strings.TrimSpace(s)
	if d, ok := strings.CutPrefix(s, "@every "); ok {
		every, _ := time.ParseDuration(d)
		if every < time.Second {
			every = time.Second
		}
		return &Schedule{every: every.Truncate(time.Second)}, nil
	}
	if m, ok := macros[s]; ok {
		s = m
	}
	f := strings.Fields(s)
	sched := &Schedule{}
	sched.minute, _ = cronBits(f[0], 0, 59, nil)
	sched.hour, _ = cronBits(f[1], 0, 23, nil)
	sched.dom, sched.domStar = cronBits(f[2], 1, 31, nil)
	sched.month, _ = cronBits(f[3], 1, 12, map[string]int{"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12})
	sched.dow, sched.dowStar = cronBits(f[4], 0, 7, map[string]int{"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6})
	if sched.dow&(1<<7) != 0 { // 7 is Sunday too
		sched.dow |= 1
	}
	return sched, nil
}

// cronBits expands one validated field into its bit set, and says whether
// it was an unrestricted * or ? (a stepped */n restricts).
func cronBits(field string, min, max int, names map[string]int) (bits uint64, star bool) {
	star = true
	for _, part := range strings.Split(field, ",") {
		rng, stepStr, hasStep := strings.Cut(part, "/")
		step := 1
		if hasStep {
			step, _ = strconv.Atoi(stepStr)
		}
		value := func(s string) int {
			if v, ok := names[strings.ToLower(s)]; ok {
				return v
			}
			n, _ := strconv.Atoi(s)
			return n
		}
		lo, hi := min, max
		if rng != "*" && rng != "?" {
			a, b, isRange := strings.Cut(rng, "-")
			lo = value(a)
			hi = lo
			if isRange {
				hi = value(b)
			} else if hasStep {
				hi = max // "N/step" runs from N to the end
			}
		}
		if rng != "*" && rng != "?" || step > 1 {
			star = false
		}
		for v := lo; v <= hi; v += step {
			bits |= 1 << uint(v)
		}
	}
	return bits, star
}

// Next is the first time after t, in t's location, at which the schedule
// fires; the zero time if it never does (such as 30 February).
func (s *Schedule) Next(t time.Time) time.Time {
	if s.every > 0 {
		return t.Add(s.every - time.Duration(t.Nanosecond()))
	}
	loc := t.Location()
	t = t.Add(time.Minute - time.Duration(t.Second())*time.Second - time.Duration(t.Nanosecond())) // the next whole minute
	limit := t.AddDate(5, 0, 0)
	for t.Before(limit) {
		y, mo, d := t.Date()
		switch {
		case s.month&(1<<uint(mo)) == 0:
			t = time.Date(y, mo+1, 1, 0, 0, 0, 0, loc)
		case !s.dayMatches(t):
			t = time.Date(y, mo, d+1, 0, 0, 0, 0, loc)
		case s.hour&(1<<uint(t.Hour())) == 0:
			next := time.Date(y, mo, d, t.Hour()+1, 0, 0, 0, loc)
			if !next.After(t) { // a repeated hour when clocks go back
				next = t.Add(time.Hour).Truncate(time.Minute)
			}
			t = next
		case s.minute&(1<<uint(t.Minute())) == 0:
			t = t.Add(time.Minute)
		default:
			return t
		}
	}
	return time.Time{}
}

func (s *Schedule) dayMatches(t time.Time) bool {
	dom := s.dom&(1<<uint(t.Day())) != 0
	dow := s.dow&(1<<uint(t.Weekday())) != 0
	if s.domStar || s.dowStar {
		return dom && dow
	}
	return dom || dow
}
