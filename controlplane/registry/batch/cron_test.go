package batch

import (
	"testing"
	"time"
)

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

func TestScheduleNext(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	at := func(loc *time.Location, s string) time.Time {
		t.Helper()
		v, err := time.ParseInLocation("2006-01-02 15:04:05", s, loc)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	cases := []struct {
		schedule string
		loc      *time.Location
		from     string
		want     []string
	}{
		{"* * * * *", time.UTC, "2026-03-01 10:00:30", []string{"2026-03-01 10:01:00", "2026-03-01 10:02:00"}},
		{"*/15 * * * *", time.UTC, "2026-03-01 10:00:00", []string{"2026-03-01 10:15:00", "2026-03-01 10:30:00", "2026-03-01 10:45:00", "2026-03-01 11:00:00"}},
		{"@hourly", time.UTC, "2026-03-01 23:59:59", []string{"2026-03-02 00:00:00", "2026-03-02 01:00:00"}},
		{"@daily", time.UTC, "2026-12-31 12:00:00", []string{"2027-01-01 00:00:00"}},
		{"@monthly", time.UTC, "2026-01-31 00:00:00", []string{"2026-02-01 00:00:00", "2026-03-01 00:00:00"}},
		{"0 9 * * mon-fri", time.UTC, "2026-11-27 10:00:00", []string{"2026-11-30 09:00:00", "2026-12-01 09:00:00"}}, // Friday -> Monday
		{"0 0 13 * 5", time.UTC, "2026-03-01 00:00:00", []string{"2026-03-06 00:00:00", "2026-03-13 00:00:00"}},      // day of month OR Friday
		{"0 0 * * 7", time.UTC, "2026-03-01 00:00:00", []string{"2026-03-08 00:00:00"}},                              // 7 is Sunday
		{"0 0 29 2 *", time.UTC, "2026-03-01 00:00:00", []string{"2028-02-29 00:00:00"}},
		{"5/20 * * * *", time.UTC, "2026-03-01 10:00:00", []string{"2026-03-01 10:05:00", "2026-03-01 10:25:00", "2026-03-01 10:45:00", "2026-03-01 11:05:00"}},
		{"@every 90s", time.UTC, "2026-03-01 10:00:00", []string{"2026-03-01 10:01:30", "2026-03-01 10:03:00"}},
		// Wall clock in the zone: 2:30 does not exist the day clocks go forward.
		{"30 2 * * *", ny, "2026-03-07 12:00:00", []string{"2026-03-09 02:30:00"}},
		{"0 9 * * *", ny, "2026-03-07 12:00:00", []string{"2026-03-08 09:00:00", "2026-03-09 09:00:00"}},
	}
	for _, c := range cases {
		s, err := ParseSchedule(c.schedule)
		if err != nil {
			t.Fatalf("ParseSchedule(%q): %v", c.schedule, err)
		}
		cur := at(c.loc, c.from)
		for _, w := range c.want {
			cur = s.Next(cur)
			if want := at(c.loc, w); !cur.Equal(want) {
				t.Errorf("%q from %s: got %s, want %s", c.schedule, c.from, cur, want)
				break
			}
		}
	}
	if s, _ := ParseSchedule("0 0 30 2 *"); !s.Next(time.Now()).IsZero() {
		t.Errorf("30 February fired")
	}
	if _, err := ParseSchedule("61 * * * *"); err == nil {
		t.Errorf("ParseSchedule accepted minute 61")
	}
	// In New York, 9:00 is 14:00 UTC in winter and 13:00 UTC in summer.
	s, _ := ParseSchedule("0 9 * * *")
	if got := s.Next(at(time.UTC, "2026-03-08 00:00:00").In(ny)).UTC(); !got.Equal(at(time.UTC, "2026-03-08 13:00:00")) {
		t.Errorf("9:00 New York after DST: %s", got)
	}
}
