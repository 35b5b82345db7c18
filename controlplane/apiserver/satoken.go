package apiserver

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
)

// This file holds service account tokens: JWTs the server signs for
// TokenRequest (tokenrequest.go) and the bearer-token authenticator that
// accepts them, with upstream's claims so that tools reading the token
// (client libraries, OIDC-style verifiers of the kubernetes.io claim) see
// what they expect.

// DefaultServiceAccountIssuer is the issuer (iss) of service account tokens
// and the API server's audience, as upstream clusters commonly configure
// --service-account-issuer and --api-audiences.
const DefaultServiceAccountIssuer = "https://kubernetes.default.svc.cluster.local"

// LegacyServiceAccountIssuer is the issuer of the long-lived tokens of
// kubernetes.io/service-account-token Secrets.
const LegacyServiceAccountIssuer = "kubernetes/serviceaccount"

const (
	// boundTokenLeeway is how long past exp (and before nbf) a token is
	// still accepted, and how long a bound pod may be in deletion before its
	// tokens stop working, as upstream's one minute of clock skew.
	boundTokenLeeway = time.Minute
	// warnOnlyExpirationSeconds is what the kubelet's default token volume
	// asks for; upstream then signs the token for a year and only warns
	// after the hour, so clients that never re-read the file keep working.
	warnOnlyExpirationSeconds = 3607
	extendedExpirationSeconds = 365 * 24 * 60 * 60
)

// ServiceAccountTokens issues service account tokens and authenticates the
// requests that bear them. It checks what a token names (the service
// account, the pod or secret it is bound to) against the objects of the
// Server it is configured on, read through the watch cache; put it in that
// Server's Config.Authenticators and New binds it. One value serves one
// Server.
type ServiceAccountTokens struct {
	key       crypto.Signer
	alg       string
	keyID     string
	issuer    string
	audiences []string
	reader    Reader // the Server's, set by New
	now       func() time.Time
}

// NewServiceAccountTokens signs with key (ECDSA P-256/P-384/P-521: ES256,
// ES384, ES512; RSA: RS256). issuer "" means DefaultServiceAccountIssuer;
// audiences (upstream's --api-audiences) default to the issuer.
func NewServiceAccountTokens(key crypto.Signer, issuer string, audiences []string) (*ServiceAccountTokens, error) {
	if issuer == "" {
		issuer = DefaultServiceAccountIssuer
	}
	if len(audiences) == 0 {
		audiences = []string{issuer}
	}
	t := &ServiceAccountTokens{key: key, issuer: issuer, audiences: audiences, now: time.Now}
	switch k := key.Public().(type) {
	case *ecdsa.PublicKey:
		switch k.Curve.Params().BitSize {
		case 256:
			t.alg = "ES256"
		case 384:
			t.alg = "ES384"
		case 521:
			t.alg = "ES512"
		default:
			return nil, fmt.Errorf("service account key: unsupported curve %s", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		t.alg = "RS256"
	default:
		return nil, fmt.Errorf("service account key: unsupported key type %T", k)
	}
	// The key id is upstream's: the unpadded base64url SHA-256 of the
	// public key's PKIX form, so verifiers can pick the key by it.
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("service account key: %w", err)
	}
	sum := sha256.Sum256(der)
	t.keyID = base64.RawURLEncoding.EncodeToString(sum[:])
	return t, nil
}

// bindServiceAccountTokens hands the server to the service account token
// authenticators among its Authenticators.
func bindServiceAccountTokens(s *Server) {
	for _, a := range s.cfg.Authenticators {
		if t, ok := a.(*ServiceAccountTokens); ok {
			t.reader = s
		}
	}
}

// serviceAccountTokens is the issuer TokenRequest uses, or nil.
func (s *Server) serviceAccountTokens() *ServiceAccountTokens {
	for _, a := range s.cfg.Authenticators {
		if t, ok := a.(*ServiceAccountTokens); ok {
			return t
		}
	}
	return nil
}

// tokenClaims are the JWT claims of a service account token.
type tokenClaims struct {
	Issuer     string            `json:"iss"`
	Subject    string            `json:"sub"`
	Audience   audience          `json:"aud"`
	Expiry     int64             `json:"exp"`
	IssuedAt   int64             `json:"iat"`
	NotBefore  int64             `json:"nbf"`
	ID         string            `json:"jti,omitempty"`
	Kubernetes *kubernetesClaims `json:"kubernetes.io,omitempty"`
	legacyClaims
}

// legacyClaims are the private claims of Secret-held tokens, upstream's.
type legacyClaims struct {
	LegacyNamespace      string    `json:"kubernetes.io/serviceaccount/namespace,omitempty"`
	LegacySecretName     string    `json:"kubernetes.io/serviceaccount/secret.name,omitempty"`
	LegacyServiceAccount string    `json:"kubernetes.io/serviceaccount/service-account.name,omitempty"`
	LegacyUID            types.UID `json:"kubernetes.io/serviceaccount/service-account.uid,omitempty"`
}

// legacyToken is the whole claim set of a Secret-held token: no expiry, no
// audience.
type legacyToken struct {
	Issuer  string `json:"iss"`
	Subject string `json:"sub"`
	legacyClaims
}

// kubernetesClaims is the private "kubernetes.io" claim: what the token is
// for and bound to.
type kubernetesClaims struct {
	Namespace      string     `json:"namespace"`
	ServiceAccount objectRef  `json:"serviceaccount"`
	Pod            *objectRef `json:"pod,omitempty"`
	Secret         *objectRef `json:"secret,omitempty"`
	Node           *objectRef `json:"node,omitempty"`
	WarnAfter      *int64     `json:"warnafter,omitempty"`
}

type objectRef struct {
	Name string    `json:"name"`
	UID  types.UID `json:"uid"`
}

// audience is the aud claim, which JWT allows as one string or a list.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*a = many
	return nil
}

// tokenBinding is what a new token names besides its service account.
type tokenBinding struct {
	pod    *corev1.Pod
	secret *corev1.Secret
	node   *corev1.Node
}

// issue signs a token for sa valid for lifetime from now, bound as b.
// warnAfter, when not 0, is recorded as the time after which using the
// token is warned about (the extended-expiration tokens).
func (t *ServiceAccountTokens) issue(sa *corev1.ServiceAccount, b tokenBinding, audiences []string, now time.Time, lifetime time.Duration, warnAfter time.Duration) (string, error) {
	c := tokenClaims{
		Issuer: t.issuer, Subject: serviceAccountUser(sa.Namespace, sa.Name), Audience: audiences,
		IssuedAt: now.Unix(), NotBefore: now.Unix(), Expiry: now.Add(lifetime).Unix(), ID: string(uuid.NewUUID()),
		Kubernetes: &kubernetesClaims{Namespace: sa.Namespace, ServiceAccount: objectRef{Name: sa.Name, UID: sa.UID}},
	}
	if b.pod != nil {
		c.Kubernetes.Pod = &objectRef{Name: b.pod.Name, UID: b.pod.UID}
	}
	if b.secret != nil {
		c.Kubernetes.Secret = &objectRef{Name: b.secret.Name, UID: b.secret.UID}
	}
	if b.node != nil {
		c.Kubernetes.Node = &objectRef{Name: b.node.Name, UID: b.node.UID}
	}
	if warnAfter > 0 {
		w := now.Add(warnAfter).Unix()
		c.Kubernetes.WarnAfter = &w
	}
	return t.sign(c)
}

func serviceAccountUser(namespace, name string) string {
	return "system:serviceaccount:" + namespace + ":" + name
}

func (t *ServiceAccountTokens) hash() (crypto.Hash, hash.Hash) {
	switch t.alg {
	case "ES384":
		return crypto.SHA384, sha512.New384()
	case "ES512":
		return crypto.SHA512, sha512.New()
	}
	return crypto.SHA256, sha256.New()
}

// LegacyToken signs the token of a kubernetes.io/service-account-token
// Secret, as upstream's tokens controller does: it never expires and is
// valid while the Secret holds it and the service account (of that uid)
// exists.
func (t *ServiceAccountTokens) LegacyToken(namespace, serviceAccount string, uid types.UID, secret string) (string, error) {
	return t.sign(legacyToken{Issuer: LegacyServiceAccountIssuer, Subject: serviceAccountUser(namespace, serviceAccount),
		legacyClaims: legacyClaims{LegacyNamespace: namespace, LegacySecretName: secret, LegacyServiceAccount: serviceAccount, LegacyUID: uid}})
}

// sign makes the compact JWS of claims.
func (t *ServiceAccountTokens) sign(claims any) (string, error) {
	header, _ := json.Marshal(map[string]string{"alg": t.alg, "kid": t.keyID})
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
	h, hh := t.hash()
	hh.Write([]byte(input))
	digest := hh.Sum(nil)
	var sig []byte
	switch k := t.key.Public().(type) {
	case *ecdsa.PublicKey:
		der, err := t.key.Sign(rand.Reader, digest, h)
		if err != nil {
			return "", fmt.Errorf("sign token: %w", err)
		}
		// JWS wants r and s as fixed-size big-endian numbers, not ASN.1.
		var parsed struct{ R, S *big.Int }
		if _, err := asn1.Unmarshal(der, &parsed); err != nil {
			return "", fmt.Errorf("sign token: %w", err)
		}
		size := (k.Curve.Params().BitSize + 7) / 8
		sig = make([]byte, 2*size)
		parsed.R.FillBytes(sig[:size])
		parsed.S.FillBytes(sig[size:])
	default:
		if sig, err = t.key.Sign(rand.Reader, digest, h); err != nil {
			return "", fmt.Errorf("sign token: %w", err)
		}
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// errNotOurs means a bearer token is not a service account token of this
// issuer, so another authenticator may take it.
var errNotOurs = errors.New("not a service account token of this issuer")

// verify checks a token's form, issuer and signature and returns its claims.
func (t *ServiceAccountTokens) verify(token string) (*tokenClaims, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return nil, errNotOurs
	}
	headerJSON, err1 := base64.RawURLEncoding.DecodeString(parts[0])
	payloadJSON, err2 := base64.RawURLEncoding.DecodeString(parts[1])
	sig, err3 := base64.RawURLEncoding.DecodeString(parts[2])
	if err1 != nil || err2 != nil || err3 != nil {
		return nil, errNotOurs
	}
	var header struct {
		Alg string `json:"alg"`
	}
	var claims tokenClaims
	if json.Unmarshal(headerJSON, &header) != nil || json.Unmarshal(payloadJSON, &claims) != nil {
		return nil, errNotOurs
	}
	// A JWT of another issuer (an OIDC provider's) is left to others.
	if claims.Issuer != t.issuer && claims.Issuer != LegacyServiceAccountIssuer {
		return nil, errNotOurs
	}
	if header.Alg != t.alg {
		return nil, fmt.Errorf("unexpected signing algorithm %q", header.Alg)
	}
	h, hh := t.hash()
	hh.Write([]byte(parts[0] + "." + parts[1]))
	digest := hh.Sum(nil)
	valid := false
	switch k := t.key.Public().(type) {
	case *ecdsa.PublicKey:
		size := (k.Curve.Params().BitSize + 7) / 8
		if len(sig) == 2*size {
			valid = ecdsa.Verify(k, digest, new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:]))
		}
	case *rsa.PublicKey:
		valid = rsa.VerifyPKCS1v15(k, h, digest, sig) == nil
	}
	if !valid {
		return nil, errors.New("invalid signature")
	}
	return &claims, nil
}

// Authenticate implements Authenticator for "Authorization: Bearer" tokens
// this server issued. Other bearer tokens (not JWTs, or JWTs of another
// issuer) and requests without one are not its own: ok false, no error.
func (t *ServiceAccountTokens) Authenticate(r *http.Request) (*User, bool, error) {
	auth := r.Header.Get("Authorization")
	scheme, token, found := strings.Cut(strings.TrimSpace(auth), " ")
	if !found || !strings.EqualFold(scheme, "bearer") {
		return nil, false, nil
	}
	token = strings.TrimSpace(token)
	claims, err := t.verify(token)
	if errors.Is(err, errNotOurs) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	if t.reader == nil {
		return nil, false, errors.New("service account tokens are not bound to a server")
	}
	if claims.Issuer == LegacyServiceAccountIssuer {
		return t.authenticateLegacy(r, token, claims)
	}
	now := t.now()
	if now.Add(-boundTokenLeeway).After(time.Unix(claims.Expiry, 0)) {
		return nil, false, errors.New("service account token has expired")
	}
	if now.Add(boundTokenLeeway).Before(time.Unix(claims.NotBefore, 0)) {
		return nil, false, errors.New("service account token is not valid yet")
	}
	if !slices.ContainsFunc(claims.Audience, func(a string) bool { return slices.Contains(t.audiences, a) }) {
		return nil, false, fmt.Errorf("token audiences %q is invalid for the target audiences %q", []string(claims.Audience), t.audiences)
	}
	k := claims.Kubernetes
	if k == nil || k.Namespace == "" || k.ServiceAccount.Name == "" || claims.Subject != serviceAccountUser(k.Namespace, k.ServiceAccount.Name) {
		return nil, false, errors.New("service account token claims are incomplete")
	}
	ctx := r.Context()
	// The objects the token names must still be the ones it was issued for:
	// a deleted and re-created service account (or pod) does not inherit
	// the old one's tokens.
	check := func(plural, name string, uid types.UID, what string) (any, error) {
		obj, err := t.reader.Get(ctx, "", "v1", plural, k.Namespace, name)
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("%s %s/%s has been deleted", what, k.Namespace, name)
		}
		if err != nil {
			return nil, fmt.Errorf("%s %s/%s: %w", what, k.Namespace, name, err)
		}
		if got := objectUID(obj); got != uid {
			return nil, fmt.Errorf("%s UID (%s) does not match claim (%s)", what, got, uid)
		}
		return obj, nil
	}
	if _, err := check("serviceaccounts", k.ServiceAccount.Name, k.ServiceAccount.UID, "service account"); err != nil {
		return nil, false, err
	}
	if k.Pod != nil {
		obj, err := check("pods", k.Pod.Name, k.Pod.UID, "pod")
		if err != nil {
			return nil, false, err
		}
		if pod := obj.(*corev1.Pod); pod.DeletionTimestamp != nil && pod.DeletionTimestamp.Time.Before(now.Add(-boundTokenLeeway)) {
			return nil, false, errors.New("service account token has been invalidated")
		}
	}
	if k.Secret != nil {
		obj, err := check("secrets", k.Secret.Name, k.Secret.UID, "secret")
		if err != nil {
			return nil, false, err
		}
		if s := obj.(*corev1.Secret); s.DeletionTimestamp != nil && s.DeletionTimestamp.Time.Before(now.Add(-boundTokenLeeway)) {
			return nil, false, errors.New("service account token has been invalidated")
		}
	}
	// A token bound to a node (not a pod on it, where the node is only
	// information) lives as long as that node.
	if k.Node != nil && k.Pod == nil {
		obj, err := t.reader.Get(ctx, "", "v1", "nodes", "", k.Node.Name)
		if apierrors.IsNotFound(err) {
			return nil, false, fmt.Errorf("node %s has been deleted", k.Node.Name)
		}
		if err != nil {
			return nil, false, fmt.Errorf("node %s: %w", k.Node.Name, err)
		}
		if got := objectUID(obj); got != k.Node.UID {
			return nil, false, fmt.Errorf("node UID (%s) does not match claim (%s)", got, k.Node.UID)
		}
	}
	return serviceAccountUserInfo(k.Namespace, k.ServiceAccount.Name), true, nil
}

func serviceAccountUserInfo(namespace, name string) *User {
	return &User{
		Name:   serviceAccountUser(namespace, name),
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
	}
}

// authenticateLegacy checks a Secret-held token: the Secret must still hold
// exactly this token, and its service account must exist with the uid the
// token names.
func (t *ServiceAccountTokens) authenticateLegacy(r *http.Request, token string, c *tokenClaims) (*User, bool, error) {
	ns, name, secretName := c.LegacyNamespace, c.LegacyServiceAccount, c.LegacySecretName
	if ns == "" || name == "" || secretName == "" || c.Subject != serviceAccountUser(ns, name) {
		return nil, false, errors.New("service account token claims are incomplete")
	}
	ctx := r.Context()
	obj, err := t.reader.Get(ctx, "", "v1", "secrets", ns, secretName)
	if apierrors.IsNotFound(err) {
		return nil, false, errors.New("service account token has been invalidated")
	}
	if err != nil {
		return nil, false, fmt.Errorf("secret %s/%s: %w", ns, secretName, err)
	}
	secret := obj.(*corev1.Secret)
	if secret.DeletionTimestamp != nil {
		return nil, false, errors.New("service account token has been invalidated")
	}
	if string(secret.Data[corev1.ServiceAccountTokenKey]) != token {
		return nil, false, errors.New("token does not match server's copy")
	}
	obj, err = t.reader.Get(ctx, "", "v1", "serviceaccounts", ns, name)
	if apierrors.IsNotFound(err) {
		return nil, false, fmt.Errorf("service account %s/%s has been deleted", ns, name)
	}
	if err != nil {
		return nil, false, fmt.Errorf("service account %s/%s: %w", ns, name, err)
	}
	if uid := objectUID(obj); uid != c.LegacyUID {
		return nil, false, fmt.Errorf("service account UID (%s) does not match claim (%s)", uid, c.LegacyUID)
	}
	return serviceAccountUserInfo(ns, name), true, nil
}

func objectUID(obj any) types.UID {
	if m, ok := obj.(interface{ GetUID() types.UID }); ok {
		return m.GetUID()
	}
	return ""
}
