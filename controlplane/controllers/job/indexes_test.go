package job

import "testing"

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
