package apiserver

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/navarch/navarch/controlplane/registry"
	"github.com/navarch/navarch/controlplane/storage/cache"
)

// tooLargeWait is how long a read waits for the cache to reach a requested
// resourceVersion before answering "Too large resource version" as upstream.
const tooLargeWait = 3 * time.Second

// waitForVersion makes the cache current enough for a read: at least the
// requested resourceVersion, or for an unset one everything this server wrote.
// resourceVersion "0" means any state is fine.
func (s *Server) waitForVersion(ctx context.Context, rv string) error {
	var want int64
	switch rv {
	case "0":
		return nil
	case "":
		want = s.lastWrite.Load()
	default:
		n, err := strconv.ParseInt(rv, 10, 64)
		if err != nil || n < 0 {
			return badRequest("invalid resourceVersion %q", rv)
		}
		want = n
	}
	ctx, cancel := context.WithTimeout(ctx, tooLargeWait)
	defer cancel()
	if err := s.cache.WaitFor(ctx, want); err != nil {
		return apierrors.NewTimeoutError(fmt.Sprintf("Too large resource version: %d, current: %d", want, s.cache.Revision()), 1)
	}
	return nil
}

func (s *Server) get(w http.ResponseWriter, r *http.Request, req request) {
	if err := s.waitForVersion(r.Context(), r.URL.Query().Get("resourceVersion")); err != nil {
		writeErrorFor(w, r, err, req.res, req.name)
		return
	}
	e, _ := s.cache.Get(s.caches[req.res], s.key(req.res, req.namespace, req.name))
	e = s.view(req.res, e)
	if e == nil {
		writeErrorFor(w, r, apierrors.NewNotFound(req.res.GVR().GroupResource(), req.name), req.res, req.name)
		return
	}
	if asTable(r) {
		t := s.table(req.res, []*cache.Entry{e}, tableIncludeObject(r))
		t.ResourceVersion = strconv.FormatInt(e.Revision, 10)
		writeJSON(w, http.StatusOK, t)
		return
	}
	writeEntry(w, r, req.res, e)
}

// selector is a parsed label and field selector.
type selector struct {
	labels labels.Selector
	fields fields.Selector
}

func (s *Server) parseSelector(r *http.Request, res *registry.Resource) (selector, error) {
	q := r.URL.Query()
	sel := selector{labels: labels.Everything(), fields: fields.Everything()}
	var err error
	if v := q.Get("labelSelector"); v != "" {
		if sel.labels, err = labels.Parse(v); err != nil {
			return sel, badRequest("unable to parse requirement: %v", err)
		}
	}
	if v := q.Get("fieldSelector"); v != "" {
		if sel.fields, err = fields.ParseSelector(v); err != nil {
			return sel, badRequest("invalid field selector: %v", err)
		}
		// Only fields the resource can select on are allowed, as upstream.
		known := selectableFields(res, res.New(), "", "")
		for _, req := range sel.fields.Requirements() {
			if _, ok := known[req.Field]; !ok {
				return sel, badRequest("field label not supported: %s", req.Field)
			}
		}
	}
	return sel, nil
}

func (sel selector) everything() bool { return sel.labels.Empty() && sel.fields.Empty() }

func (sel selector) matches(e *cache.Entry) bool {
	return sel.labels.Matches(e.Labels) && sel.fields.Matches(e.Fields)
}

// continueToken is the opaque continue value of a paginated list.
type continueToken struct {
	Revision int64  `json:"rv"`
	Start    string `json:"start"`
}

func (s *Server) list(w http.ResponseWriter, r *http.Request, req request) {
	q := r.URL.Query()
	sel, err := s.parseSelector(r, req.res)
	if err != nil {
		writeErrorFor(w, r, err, req.res, "")
		return
	}
	limit := 0
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 0 {
			writeErrorFor(w, r, badRequest("invalid limit %q", v), req.res, "")
			return
		}
	}
	var start string
	var tokenRev int64
	if v := q.Get("continue"); v != "" {
		tok, err := decodeContinue(v)
		if err != nil {
			writeErrorFor(w, r, err, req.res, "")
			return
		}
		start, tokenRev = tok.Start, tok.Revision
	} else if err := s.waitForVersion(r.Context(), q.Get("resourceVersion")); err != nil {
		writeErrorFor(w, r, err, req.res, "")
		return
	}
	prefix := s.prefix(req.res, req.namespace)
	var match func(*cache.Entry) bool
	if !sel.everything() {
		match = sel.matches
	}
	entries, rev, more := s.cache.List(s.caches[req.res], prefix, start, limit, match)
	entries = s.views(req.res, entries)
	if tokenRev != 0 {
		rev = tokenRev
	}
	lm := metav1.ListMeta{ResourceVersion: strconv.FormatInt(rev, 10)}
	if more && len(entries) > 0 {
		lm.Continue = encodeContinue(continueToken{Revision: rev, Start: entries[len(entries)-1].Key})
	}
	if asTable(r) {
		t := s.table(req.res, entries, tableIncludeObject(r))
		t.ListMeta = lm
		writeJSON(w, http.StatusOK, t)
		return
	}
	writeList(w, r, req.res, lm, entries)
}

// encodeList writes a list by splicing the cached encodings of its items,
// without decoding or re-encoding any object.
func encodeList(res *registry.Resource, lm metav1.ListMeta, entries []*cache.Entry) []byte {
	size := 128
	for _, e := range entries {
		size += len(e.Data) + 1
	}
	var b bytes.Buffer
	b.Grow(size)
	meta, _ := json.Marshal(lm)
	fmt.Fprintf(&b, `{"kind":%q,"apiVersion":%q,"metadata":%s,"items":[`, res.Kind+"List", res.GroupVersion().String(), meta)
	for i, e := range entries {
		if i > 0 {
			b.WriteByte(',')
		}
		b.Write(e.Data)
	}
	b.WriteString("]}\n")
	return b.Bytes()
}

func encodeContinue(t continueToken) string {
	data, _ := json.Marshal(t)
	return base64.RawURLEncoding.EncodeToString(data)
}

func decodeContinue(v string) (continueToken, error) {
	var t continueToken
	data, err := base64.RawURLEncoding.DecodeString(v)
	if err == nil {
		err = json.Unmarshal(data, &t)
	}
	if err != nil || t.Start == "" {
		return t, badRequest("continue key is not valid")
	}
	return t, nil
}

// watch streams changes as JSON watch events, one per line, or as
// length-delimited protobuf WatchEvent frames for clients that ask for them.
func (s *Server) watch(w http.ResponseWriter, r *http.Request, req request) {
	q := r.URL.Query()
	sel, err := s.parseSelector(r, req.res)
	if err != nil {
		writeErrorFor(w, r, err, req.res, "")
		return
	}
	rv := q.Get("resourceVersion")
	initial := rv == "" || rv == "0" || q.Get("sendInitialEvents") == "true"
	var from int64
	if !initial {
		if from, err = strconv.ParseInt(rv, 10, 64); err != nil {
			writeErrorFor(w, r, badRequest("invalid resourceVersion %q", rv), req.res, "")
			return
		}
		if err := s.waitForVersion(r.Context(), rv); err != nil {
			writeErrorFor(w, r, err, req.res, "")
			return
		}
	} else if rv != "0" {
		if err := s.waitForVersion(r.Context(), ""); err != nil {
			writeErrorFor(w, r, err, req.res, "")
			return
		}
	}
	prefix := s.prefix(req.res, req.namespace)
	if req.name != "" {
		prefix = s.key(req.res, req.namespace, req.name)
	}
	var match func(*cache.Entry) bool
	if !sel.everything() || req.name != "" {
		name := req.name
		match = func(e *cache.Entry) bool { return (name == "" || e.Name == name) && sel.matches(e) }
	}
	cres := s.caches[req.res]
	watcher, backlog, startRev, err := s.cache.Watch(cres, prefix, from, initial, match)
	table := asTable(r)
	pb := !table && wantsProtobuf(r, req.res)
	if errors.Is(err, cache.ErrGone) {
		// Upstream answers a too-old version with a 200 and an ERROR event.
		st := apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %d (%d)", from, s.cache.Revision())).Status()
		st.Kind, st.APIVersion = "Status", "v1"
		if pb {
			if data, err := encodeProtobuf(&st); err == nil {
				w.Header().Set("Content-Type", contentTypeProtobufWatch)
				w.WriteHeader(http.StatusOK)
				newProtobufWatch(w).send("ERROR", data)
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		data, _ := json.Marshal(&st)
		fmt.Fprintf(w, "{\"type\":\"ERROR\",\"object\":%s}\n", data)
		return
	}
	if err != nil {
		writeErrorFor(w, r, err, req.res, "")
		return
	}
	defer s.cache.Stop(cres, watcher)

	timeout := 30 * time.Minute
	if v := q.Get("timeoutSeconds"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			timeout = time.Duration(n) * time.Second
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()

	include := tableIncludeObject(r)
	bookmarks := q.Get("allowWatchBookmarks") == "true"
	if pb {
		w.Header().Set("Content-Type", contentTypeProtobufWatch)
	} else {
		w.Header().Set("Content-Type", "application/json")
	}
	w.Header().Set("Transfer-Encoding", "chunked")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	var buf bytes.Buffer
	// send writes one event whose object is already encoded (JSON, or
	// protobuf with its envelope).
	send := func(typ cache.EventType, obj []byte) bool {
		buf.Reset()
		fmt.Fprintf(&buf, "{\"type\":%q,\"object\":", typ)
		buf.Write(obj)
		buf.WriteString("}\n")
		if _, err := w.Write(buf.Bytes()); err != nil {
			return false
		}
		return true
	}
	if pb {
		stream := newProtobufWatch(w)
		send = func(typ cache.EventType, obj []byte) bool { return stream.send(string(typ), obj) == nil }
	}
	sendEvent := func(ev cache.Event) bool {
		ev.Entry = s.view(req.res, ev.Entry)
		if table {
			t := s.table(req.res, []*cache.Entry{ev.Entry}, include)
			t.ResourceVersion = strconv.FormatInt(ev.Revision, 10)
			data, _ := json.Marshal(t)
			return send(ev.Type, data)
		}
		if pb {
			// One encode per change, shared by every protobuf watcher.
			data, err := entryProtobuf(ev.Entry)
			if err != nil {
				slog.Warn("cannot encode watch event as protobuf", "key", ev.Entry.Key, "err", err)
				return false
			}
			return send(ev.Type, data)
		}
		return send(ev.Type, ev.Entry.Data)
	}
	bookmark := func(rev int64, initialEnd bool) bool {
		if pb {
			data, err := bookmarkProtobuf(req.res, rev, initialEnd)
			if err != nil {
				slog.Warn("cannot encode bookmark as protobuf", "resource", req.res.GVR().String(), "err", err)
				return false
			}
			return send(cache.Bookmark, data)
		}
		ann := ""
		if initialEnd {
			ann = `,"annotations":{"k8s.io/initial-events-end":"true"}`
		}
		obj := fmt.Sprintf(`{"kind":%q,"apiVersion":%q,"metadata":{"resourceVersion":"%d","creationTimestamp":null%s}}`,
			req.res.Kind, req.res.GroupVersion().String(), rev, ann)
		return send(cache.Bookmark, []byte(obj))
	}
	for _, ev := range backlog {
		if !sendEvent(ev) {
			return
		}
	}
	if q.Get("sendInitialEvents") == "true" && bookmarks {
		if !bookmark(startRev, true) {
			return
		}
	}
	if flusher != nil {
		flusher.Flush()
	}
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if bookmarks {
				if !bookmark(s.cache.Revision(), false) {
					return
				}
				if flusher != nil {
					flusher.Flush()
				}
			}
		case ev, ok := <-watcher.Events():
			if !ok {
				return
			}
			if !sendEvent(ev) {
				return
			}
			// Drain what is already queued before flushing, so bursts cost one flush.
			for more := true; more; {
				select {
				case ev, ok := <-watcher.Events():
					if !ok {
						if flusher != nil {
							flusher.Flush()
						}
						return
					}
					if !sendEvent(ev) {
						return
					}
				default:
					more = false
				}
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
	}
}

// asTable reports whether the client asked for a meta.k8s.io Table.
func asTable(r *http.Request) bool {
	for _, part := range strings.Split(r.Header.Get("Accept"), ",") {
		if strings.Contains(part, "as=Table") && strings.Contains(part, "g=meta.k8s.io") {
			return true
		}
	}
	return false
}

func tableIncludeObject(r *http.Request) metav1.IncludeObjectPolicy {
	switch v := r.URL.Query().Get("includeObject"); v {
	case "None", "Object":
		return metav1.IncludeObjectPolicy(v)
	}
	return metav1.IncludeMetadata
}
