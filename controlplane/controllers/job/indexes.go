package job

import (
	"sort"
	"strconv"
	"strings"
)

// parseIndexes reads status.completedIndexes ("0-2,4"), keeping the indexes
// below completions.
func parseIndexes(s string, completions int32) map[int]bool {
	out := map[int]bool{}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			continue
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil {
				continue
			}
		}
		for i := max(a, 0); i <= b && i < int(completions); i++ {
			out[i] = true
		}
	}
	return out
}

// formatIndexes writes a set of indexes as upstream does: ascending, runs of
// consecutive indexes as "first-last", separated by commas.
func formatIndexes(set map[int]bool) string {
	ixs := make([]int, 0, len(set))
	for i := range set {
		ixs = append(ixs, i)
	}
	sort.Ints(ixs)
	var b strings.Builder
	for i := 0; i < len(ixs); {
		j := i
		for j+1 < len(ixs) && ixs[j+1] == ixs[j]+1 {
			j++
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(ixs[i]))
		if j > i {
			b.WriteString("-" + strconv.Itoa(ixs[j]))
		}
		i = j + 1
	}
	return b.String()
}
