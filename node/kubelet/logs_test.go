package kubelet

import (
	"bytes"
	"context"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// criLog is a CRI log file: partial fragments, both streams, a malformed
// line, spread over three seconds.
const criLog = `2026-01-02T03:04:05.000000001Z stdout F one
2026-01-02T03:04:05.5Z stderr P tw
2026-01-02T03:04:05.6Z stdout F interleaved
2026-01-02T03:04:05.7Z stderr F o
not a cri line
2026-01-02T03:04:06Z stdout F three
2026-01-02T03:04:07Z stdout F 
2026-01-02T03:04:08Z stdout F five
`

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "0.log")
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func readLogWith(t *testing.T, path string, query string) string {
	t.Helper()
	q, _ := url.ParseQuery(query)
	o, err := parseLogOptions(q, time.Date(2026, 1, 2, 3, 4, 10, 0, time.UTC))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := writeLog(context.Background(), path, o, &b, func() {}, func() bool { return true }); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestWriteLog(t *testing.T) {
	p := writeTemp(t, criLog)
	for _, c := range []struct{ query, want string }{
		{"", "one\ninterleaved\ntwo\nthree\n\nfive\n"},
		{"tailLines=2", "\nfive\n"},
		{"tailLines=0", ""},
		{"tailLines=100", "one\ninterleaved\ntwo\nthree\n\nfive\n"},
		{"sinceTime=2026-01-02T03:04:06Z", "three\n\nfive\n"},
		{"sinceSeconds=3", "\nfive\n"}, // now is 03:04:10: since 03:04:07
		{"sinceTime=2026-01-02T03:04:06Z&tailLines=1", "five\n"},
		{"limitBytes=6", "one\nin"},
		{"timestamps=true&tailLines=3", "2026-01-02T03:04:06Z three\n2026-01-02T03:04:07Z \n2026-01-02T03:04:08Z five\n"},
		{"timestamps=true&tailLines=4", "2026-01-02T03:04:05.5Z two\n2026-01-02T03:04:06Z three\n2026-01-02T03:04:07Z \n2026-01-02T03:04:08Z five\n"},
		{"timestamps=1&limitBytes=10", "2026-01-02"},
	} {
		if got := readLogWith(t, p, c.query); got != c.want {
			t.Errorf("%q: got %q, want %q", c.query, got, c.want)
		}
	}
}

func TestParseLogOptionsRejects(t *testing.T) {
	for _, query := range []string{"tailLines=-1", "limitBytes=0", "sinceSeconds=0", "sinceSeconds=1&sinceTime=2026-01-02T03:04:06Z", "follow=maybe", "sinceTime=yesterday"} {
		q, _ := url.ParseQuery(query)
		if _, err := parseLogOptions(q, time.Now()); err == nil {
			t.Errorf("%q accepted", query)
		}
	}
}

// syncBuffer is a buffer the follower writes while the test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Following sees appended lines, a line written in two writes, and the
// lines of the file that replaced the old one (rotation), and ends when the
// container has exited.
func TestWriteLogFollow(t *testing.T) {
	p := writeTemp(t, "2026-01-02T03:04:05Z stdout F first\n")
	var out syncBuffer
	var mu sync.Mutex
	exited := false
	q, _ := url.ParseQuery("follow=true")
	o, _ := parseLogOptions(q, time.Now())
	ended := make(chan error, 1)
	go func() {
		ended <- writeLog(context.Background(), p, o, &out, func() {}, func() bool { mu.Lock(); defer mu.Unlock(); return exited })
	}()
	waitFor := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for out.String() != want {
			if time.Now().After(deadline) {
				t.Fatalf("followed %q, want %q", out.String(), want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("first\n")
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("2026-01-02T03:04:06Z stdout P sec")
	time.Sleep(2 * followPoll) // the follower sees the unterminated line
	f.WriteString("ond\n2026-01-02T03:04:06Z stdout F third\n")
	f.Close()
	waitFor("first\nsecondthird\n")
	// Rotation: the file is renamed away and a new one starts at the path.
	if err := os.Rename(p, p+".1"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte("2026-01-02T03:04:07Z stdout F after rotation\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor("first\nsecondthird\nafter rotation\n")
	select {
	case err := <-ended:
		t.Fatalf("follow ended before the container exited: %v", err)
	default:
	}
	mu.Lock()
	exited = true
	mu.Unlock()
	select {
	case err := <-ended:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("follow did not end after the container exited")
	}
	if strings.Count(out.String(), "\n") != 3 {
		t.Fatalf("followed %q", out.String())
	}
}
