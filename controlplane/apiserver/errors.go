package apiserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/navarch/navarch/controlplane/registry"
	"github.com/navarch/navarch/controlplane/storage"
)

// This file is the one place where errors become API Status responses.

// statusError converts any error into an APIStatus. Errors that already are
// Statuses pass through; storage errors become the matching API error for the
// object named; anything else is an internal error.
func statusError(err error, r *registry.Resource, name string) *apierrors.StatusError {
	var se *apierrors.StatusError
	if errors.As(err, &se) {
		return se
	}
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		return &apierrors.StatusError{ErrStatus: st.Status()}
	}
	gr := schema.GroupResource{}
	if r != nil {
		gr = schema.GroupResource{Group: r.Group, Resource: r.Plural}
	}
	switch {
	case errors.Is(err, storage.ErrNotFound):
		return apierrors.NewNotFound(gr, name)
	case errors.Is(err, storage.ErrExists):
		return apierrors.NewAlreadyExists(gr, name)
	case errors.Is(err, storage.ErrConflict):
		return apierrors.NewConflict(gr, name, errors.New("the object has been modified; please apply your changes to the latest version and try again"))
	case errors.Is(err, storage.ErrCompacted):
		return apierrors.NewResourceExpired("The resourceVersion for the provided list is too old.")
	}
	if cancelled(err) {
		// The client went away or the server is stopping: nobody is
		// waiting for this answer, and nothing is wrong.
		slog.Debug("request cancelled", "resource", gr.String(), "name", name, "err", err)
		return apierrors.NewTimeoutError("the request was cancelled", 0)
	}
	slog.Error("internal error", "resource", gr.String(), "name", name, "err", err)
	return apierrors.NewInternalError(err)
}

// invalid builds the 422 response for validation errors.
func invalid(r *registry.Resource, name string, errs field.ErrorList) error {
	return apierrors.NewInvalid(schema.GroupKind{Group: r.Group, Kind: r.Kind}, name, errs)
}

func badRequest(format string, args ...interface{}) error {
	return apierrors.NewBadRequest(fmt.Sprintf(format, args...))
}

// writeStatus writes err as a Status object with its HTTP code.
func writeStatus(w http.ResponseWriter, st apierrors.APIStatus) {
	s := st.Status()
	s.Kind = "Status"
	s.APIVersion = "v1"
	if s.Status == "" {
		s.Status = metav1.StatusFailure
	}
	code := int(s.Code)
	if code == 0 {
		code = http.StatusInternalServerError
	}
	writeJSON(w, code, &s)
}

func writeError(w http.ResponseWriter, err error, r *registry.Resource, name string) {
	writeStatus(w, statusError(err, r, name))
}

func writeJSON(w http.ResponseWriter, code int, v interface{}) {
	data, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeRaw(w, code, data)
}

func writeRaw(w http.ResponseWriter, code int, data []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(data)
}

func requestTooLarge() error {
	return apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("limit is %d", maxBodyBytes))
}

// fieldErrors is a one-error list for simple checks outside the registry.
func fieldErrors(path string, value interface{}, detail string) field.ErrorList {
	return field.ErrorList{field.Invalid(field.NewPath(path), value, detail)}
}

func unsupportedMediaType(ct string) error {
	return &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusUnsupportedMediaType,
		Reason: metav1.StatusReasonUnsupportedMediaType, Message: fmt.Sprintf("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf; got %q", ct)}}
}

// cancelled reports an error that only says the request was abandoned: its
// context ended, or the etcd member cancelled it while stopping (which etcd
// reports as an untyped "request cancelled").
func cancelled(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) ||
		strings.HasSuffix(rpctypes.ErrorDesc(err), "etcdserver: request cancelled")
}
