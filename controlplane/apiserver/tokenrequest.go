package apiserver

import (
	"fmt"
	"net/http"
	"slices"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsjson "sigs.k8s.io/json"
)

var tokenRequestKind = authenticationv1.SchemeGroupVersion.WithKind("TokenRequest").GroupKind()

// tokenRequest serves POST serviceaccounts/NAME/token: an
// authentication.k8s.io/v1 TokenRequest in, the same with status.token and
// status.expirationTimestamp out, as upstream's TokenRequest API. Nothing is
// stored; the token is good for as long as the service account (and the
// pod, secret or node it is bound to) lives, or until it expires.
func (s *Server) tokenRequest(w http.ResponseWriter, r *http.Request, req request) {
	fail := func(err error) { writeErrorFor(w, r, err, req.res, req.name) }
	tokens := s.serviceAccountTokens()
	if tokens == nil {
		fail(apierrors.NewNotFound(schema.GroupResource{Resource: "serviceaccounts/token"}, req.name))
		return
	}
	body, err := readBody(r, func() runtime.Object { return &authenticationv1.TokenRequest{} })
	if err != nil {
		fail(err)
		return
	}
	var tr authenticationv1.TokenRequest
	if len(body) > 0 {
		if err := sigsjson.UnmarshalCaseSensitivePreserveInts(body, &tr); err != nil {
			fail(badRequest("invalid TokenRequest: %v", err))
			return
		}
	}
	if tr.Name != "" && tr.Name != req.name {
		fail(apierrors.NewInvalid(tokenRequestKind, req.name, field.ErrorList{
			field.Invalid(field.NewPath("metadata", "name"), tr.Name, "must match the service account name if specified")}))
		return
	}
	if tr.Namespace != "" && tr.Namespace != req.namespace {
		fail(apierrors.NewInvalid(tokenRequestKind, req.name, field.ErrorList{
			field.Invalid(field.NewPath("metadata", "namespace"), tr.Namespace, "must match the service account namespace if specified")}))
		return
	}
	ctx := r.Context()
	obj, err := s.Get(ctx, "", "v1", "serviceaccounts", req.namespace, req.name)
	if err != nil {
		fail(err)
		return
	}
	sa := obj.(*corev1.ServiceAccount)

	// Defaults, as upstream's: the API server's audiences, an hour.
	if len(tr.Spec.Audiences) == 0 {
		tr.Spec.Audiences = append([]string(nil), tokens.audiences...)
	}
	if tr.Spec.ExpirationSeconds == nil {
		hour := int64(3600)
		tr.Spec.ExpirationSeconds = &hour
	}
	tr.Name, tr.Namespace = sa.Name, sa.Namespace
	now := tokens.now()
	tr.CreationTimestamp = metav1.NewTime(now)
	tr.Status = authenticationv1.TokenRequestStatus{}
	var errs field.ErrorList
	exp := *tr.Spec.ExpirationSeconds
	if exp < int64((10 * time.Minute).Seconds()) {
		errs = append(errs, field.Invalid(field.NewPath("spec", "expirationSeconds"), exp, "may not specify a duration less than 10 minutes"))
	}
	if exp > 1<<32 {
		errs = append(errs, field.Invalid(field.NewPath("spec", "expirationSeconds"), exp, "may not specify a duration larger than 2^32 seconds"))
	}
	if len(errs) > 0 {
		fail(apierrors.NewInvalid(tokenRequestKind, "", errs))
		return
	}

	var bound tokenBinding
	if ref := tr.Spec.BoundObjectRef; ref != nil {
		gvk := schema.FromAPIVersionAndKind(ref.APIVersion, ref.Kind)
		var uid, plural string
		switch {
		case gvk.Group == "" && gvk.Kind == "Pod":
			obj, err := s.Get(ctx, "", "v1", "pods", req.namespace, ref.Name)
			if err != nil {
				fail(err)
				return
			}
			bound.pod = obj.(*corev1.Pod)
			if bound.pod.Spec.ServiceAccountName != sa.Name {
				fail(apierrors.NewBadRequest(fmt.Sprintf("cannot bind token for serviceaccount %q to pod running with different serviceaccount name.", sa.Name)))
				return
			}
			uid, plural = string(bound.pod.UID), "pods"
			// The node the pod runs on is recorded for whoever reads the
			// token; a node that cannot be read is recorded by name.
			if n := bound.pod.Spec.NodeName; n != "" {
				bound.node = &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}
				if obj, err := s.Get(ctx, "", "v1", "nodes", "", n); err == nil {
					bound.node = obj.(*corev1.Node)
				}
			}
		case gvk.Group == "" && gvk.Kind == "Node":
			obj, err := s.Get(ctx, "", "v1", "nodes", "", ref.Name)
			if err != nil {
				fail(err)
				return
			}
			bound.node = obj.(*corev1.Node)
			uid, plural = string(bound.node.UID), "nodes"
		case gvk.Group == "" && gvk.Kind == "Secret":
			obj, err := s.Get(ctx, "", "v1", "secrets", req.namespace, ref.Name)
			if err != nil {
				fail(err)
				return
			}
			bound.secret = obj.(*corev1.Secret)
			uid, plural = string(bound.secret.UID), "secrets"
		default:
			fail(apierrors.NewBadRequest(fmt.Sprintf("cannot bind token for serviceaccount %q to object of type %s.", sa.Name, gvk.String())))
			return
		}
		if ref.UID != "" && string(ref.UID) != uid {
			fail(apierrors.NewConflict(schema.GroupResource{Resource: plural}, ref.Name,
				fmt.Errorf("the UID in the bound object reference (%s) does not match the UID in record. The object might have been deleted and then recreated", ref.UID)))
			return
		}
	}

	// A pod-bound token of the kubelet's default volume is signed for a
	// year but reported (and refreshed) as the hour asked for, as upstream
	// does, so clients that never re-read the file keep working.
	lifetime, warnAfter := time.Duration(exp)*time.Second, time.Duration(0)
	if bound.pod != nil && exp == warnOnlyExpirationSeconds && tokens.apiAudiences(tr.Spec.Audiences) {
		lifetime, warnAfter = extendedExpirationSeconds*time.Second, time.Duration(exp)*time.Second
	}
	token, err := tokens.issue(sa, bound, tr.Spec.Audiences, now, lifetime, warnAfter)
	if err != nil {
		fail(err)
		return
	}
	tr.Status = authenticationv1.TokenRequestStatus{Token: token, ExpirationTimestamp: metav1.NewTime(now.Add(time.Duration(exp) * time.Second))}
	tr.TypeMeta = metav1.TypeMeta{APIVersion: "authentication.k8s.io/v1", Kind: "TokenRequest"}
	if prefersProtobuf(r.Header.Get("Accept")) {
		if data, err := encodeProtobuf(&tr); err == nil {
			writeProtobuf(w, http.StatusCreated, data)
			return
		}
	}
	writeJSON(w, http.StatusCreated, &tr)
}

// apiAudiences reports whether every one of auds is an audience of the API
// server.
func (t *ServiceAccountTokens) apiAudiences(auds []string) bool {
	for _, a := range auds {
		if !slices.Contains(t.audiences, a) {
			return false
		}
	}
	return true
}
