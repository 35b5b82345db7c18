package cache

// Watcher receives the events of one resource that pass its filter.
type Watcher struct {
	ch     chan Event
	prefix string
	match  func(*Entry) bool
	closed bool
}

// watchBuffer is how many events a slow client may lag before its watch is
// ended (it then resumes from its last revision, as clients do).
const watchBuffer = 1000

// Events delivers the watch's events; it is closed when the watch ends.
func (w *Watcher) Events() <-chan Event { return w.ch }

// Watch starts a watch on the entries under prefix that pass match.
// With initial, it first sends an Added event for every current entry (the
// "list then watch" a watch without resourceVersion means); otherwise it
// replays the events after fromRevision, or fails with ErrGone when the cache
// no longer remembers them. The returned revision is where the watch starts.
func (c *Cache) Watch(r *Resource, prefix string, fromRevision int64, initial bool, match func(*Entry) bool) (*Watcher, []Event, int64, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := &Watcher{ch: make(chan Event, watchBuffer), prefix: prefix, match: match}
	var backlog []Event
	if initial {
		r.items.AscendGreaterOrEqual(&Entry{Key: prefix}, func(e *Entry) bool {
			if len(e.Key) < len(prefix) || e.Key[:len(prefix)] != prefix {
				return false
			}
			if match == nil || match(e) {
				backlog = append(backlog, Event{Type: Added, Entry: e, Revision: e.Revision})
			}
			return true
		})
	} else {
		if fromRevision < r.oldest {
			return nil, nil, 0, ErrGone
		}
		for _, ev := range r.history {
			if ev.Revision <= fromRevision {
				continue
			}
			if out, ok := w.filter(ev); ok {
				// Superseded versions are kept slim; this watcher needs
				// the object itself.
				e, err := r.fatten(out.Entry)
				if err != nil {
					return nil, nil, 0, ErrGone // the client relists
				}
				out.Entry = e
				backlog = append(backlog, out)
			}
		}
	}
	r.watchers[w] = struct{}{}
	return w, backlog, c.revision, nil
}

// Stop ends a watch.
func (c *Cache) Stop(r *Resource, w *Watcher) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r.stop(w)
}

func (r *Resource) stop(w *Watcher) {
	if _, ok := r.watchers[w]; ok {
		delete(r.watchers, w)
		close(w.ch)
	}
}

// filter turns a change into what this watcher sees: an object that starts
// matching is Added, one that stops matching is Deleted.
func (w *Watcher) filter(ev Event) (Event, bool) {
	if len(ev.Entry.Key) < len(w.prefix) || ev.Entry.Key[:len(w.prefix)] != w.prefix {
		return ev, false
	}
	if w.match == nil {
		return ev, true
	}
	now := w.match(ev.Entry)
	before := ev.Prev != nil && w.match(ev.Prev)
	switch ev.Type {
	case Added:
		return ev, now
	case Deleted:
		return ev, before
	}
	switch {
	case now && before:
		return ev, true
	case now:
		ev.Type = Added
		return ev, true
	case before:
		ev.Type = Deleted
		return ev, true
	}
	return ev, false
}

// offer hands an event to the watcher without blocking the cache; a watcher
// that cannot keep up is ended.
func (w *Watcher) offer(r *Resource, ev Event) {
	out, ok := w.filter(ev)
	if !ok {
		return
	}
	select {
	case w.ch <- out:
	default:
		r.stop(w)
	}
}
