package kubelet

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"time"
)

// logOptions are upstream's PodLogOptions as the kubelet's containerLogs
// endpoint takes them.
type logOptions struct {
	follow     bool
	tail       int64 // lines from the end; -1: all
	limitBytes int64 // 0: no limit
	since      time.Time
	timestamps bool
}

// parseLogOptions reads upstream's query parameters (follow, tailLines,
// limitBytes, sinceSeconds, sinceTime, timestamps).
func parseLogOptions(q url.Values, now time.Time) (logOptions, error) {
	o := logOptions{tail: -1}
	var err error
	if o.follow, err = boolParam(q, "follow"); err != nil {
		return o, err
	}
	if o.timestamps, err = boolParam(q, "timestamps"); err != nil {
		return o, err
	}
	if v := q.Get("tailLines"); v != "" {
		if o.tail, err = strconv.ParseInt(v, 10, 64); err != nil || o.tail < 0 {
			return o, fmt.Errorf("tailLines %q: must be a non-negative integer", v)
		}
	}
	if v := q.Get("limitBytes"); v != "" {
		if o.limitBytes, err = strconv.ParseInt(v, 10, 64); err != nil || o.limitBytes < 1 {
			return o, fmt.Errorf("limitBytes %q: must be a positive integer", v)
		}
	}
	if q.Get("sinceSeconds") != "" && q.Get("sinceTime") != "" {
		return o, errors.New("at most one of sinceTime or sinceSeconds may be specified")
	}
	if v := q.Get("sinceSeconds"); v != "" {
		s, err := strconv.ParseInt(v, 10, 64)
		if err != nil || s < 1 {
			return o, fmt.Errorf("sinceSeconds %q: must be a positive integer", v)
		}
		o.since = now.Add(-time.Duration(s) * time.Second)
	}
	if v := q.Get("sinceTime"); v != "" {
		if o.since, err = time.Parse(time.RFC3339, v); err != nil {
			return o, fmt.Errorf("sinceTime %q: %w", v, err)
		}
	}
	return o, nil
}

func boolParam(q url.Values, name string) (bool, error) {
	v := q.Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, fmt.Errorf("%s %q: not a boolean", name, v)
	}
	return b, nil
}

// logEntry is one message of a container's log, its P fragments joined.
type logEntry struct {
	ts  time.Time
	msg []byte // with its trailing newline
}

// criParser turns the lines of a CRI log file (`TIMESTAMP STREAM P|F text`)
// into entries. A message the runtime split (P, partial) is joined with the
// fragments that follow on the same stream up to the F (full) one; it keeps
// the first fragment's timestamp.
type criParser struct {
	pending map[string]*logEntry // by stream
}

// line parses one line without its newline; it returns the completed entry,
// or nil while a message is partial or the line is malformed (skipped, as
// upstream does).
func (p *criParser) line(l []byte) *logEntry {
	f := bytes.SplitN(l, []byte(" "), 4)
	if len(f) < 3 {
		return nil
	}
	ts, err := time.Parse(time.RFC3339Nano, string(f[0]))
	if err != nil {
		return nil
	}
	var text []byte
	if len(f) == 4 {
		text = f[3]
	}
	stream := string(f[1])
	e := p.pending[stream]
	if e == nil {
		e = &logEntry{ts: ts}
	}
	e.msg = append(e.msg, text...)
	if string(f[2]) == "P" {
		if p.pending == nil {
			p.pending = map[string]*logEntry{}
		}
		p.pending[stream] = e
		return nil
	}
	delete(p.pending, stream)
	e.msg = append(e.msg, '\n')
	return e
}

// logWriter writes entries as upstream's kubelet does, up to limitBytes.
type logWriter struct {
	w          io.Writer
	timestamps bool
	left       int64 // bytes left before limitBytes; -1: unlimited
}

var errLimitReached = errors.New("limitBytes reached")

func (lw *logWriter) write(e *logEntry) error {
	out := e.msg
	if lw.timestamps {
		out = append([]byte(e.ts.UTC().Format(time.RFC3339Nano)+" "), out...)
	}
	if lw.left >= 0 && int64(len(out)) >= lw.left {
		_, err := lw.w.Write(out[:lw.left])
		lw.left = 0
		if err != nil {
			return err
		}
		return errLimitReached
	}
	if lw.left > 0 {
		lw.left -= int64(len(out))
	}
	_, err := lw.w.Write(out)
	return err
}

// followPoll is how often a followed log is checked for new lines.
const followPoll = 100 * time.Millisecond

// writeLog writes the log file at path to w per o. With o.follow it keeps
// writing what is appended until exited reports the container has exited
// (after a last read) or ctx ends; a file replaced at path (rotation, then
// the runtime's reopen) is followed into. flush is called whenever the
// writer has caught up with the file.
func writeLog(ctx context.Context, path string, o logOptions, w io.Writer, flush func(), exited func() bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer func() { f.Close() }()
	lw := &logWriter{w: w, timestamps: o.timestamps, left: -1}
	if o.limitBytes > 0 {
		lw.left = o.limitBytes
	}
	p := &criParser{}
	r := bufio.NewReader(f)
	var partial []byte // an unterminated last line, completed by a later read

	// First pass: everything written so far, filtered by since and tail.
	var tail []*logEntry
	for {
		l, err := r.ReadBytes('\n')
		if err != nil {
			partial = l
			break
		}
		e := p.line(bytes.TrimSuffix(l, []byte("\n")))
		if e == nil || (!o.since.IsZero() && e.ts.Before(o.since)) {
			continue
		}
		if o.tail < 0 {
			if err := lw.write(e); err != nil {
				return ignoreLimit(err)
			}
			continue
		}
		if o.tail == 0 {
			continue
		}
		if int64(len(tail)) == o.tail {
			tail = tail[1:]
		}
		tail = append(tail, e)
	}
	for _, e := range tail {
		if err := lw.write(e); err != nil {
			return ignoreLimit(err)
		}
	}
	flush()
	if !o.follow {
		return nil
	}

	// Follow: poll for appended lines until the container exits.
	done := false
	for {
		l, err := r.ReadBytes('\n')
		if err == nil {
			l = append(partial, l...)
			partial = nil
			if e := p.line(bytes.TrimSuffix(l, []byte("\n"))); e != nil && (o.since.IsZero() || !e.ts.Before(o.since)) {
				if err := lw.write(e); err != nil {
					return ignoreLimit(err)
				}
			}
			continue
		}
		partial = append(partial, l...)
		flush()
		if done {
			return nil
		}
		if rotated(f, path) {
			// The old file is drained; go on with the new one.
			nf, err := os.Open(path)
			if err == nil {
				f.Close()
				f, r, partial = nf, bufio.NewReader(nf), nil
				continue
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(followPoll):
		}
		// One more read after the exit is seen, for its last lines.
		done = exited()
	}
}

func ignoreLimit(err error) error {
	if errors.Is(err, errLimitReached) {
		return nil
	}
	return err
}

// rotated reports whether path is now another file than f.
func rotated(f *os.File, path string) bool {
	a, err1 := f.Stat()
	b, err2 := os.Stat(path)
	return err1 == nil && err2 == nil && !os.SameFile(a, b)
}
