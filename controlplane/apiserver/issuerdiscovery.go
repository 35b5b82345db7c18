package apiserver

import (
	"crypto/ecdsa"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/url"
)

// Service account issuer discovery, as upstream serves it: an OpenID
// Connect discovery document and the JSON Web Key Set of the signing key,
// so that systems outside the cluster (a vault, a cloud's workload
// identity) can verify service account tokens without calling the API.
// Like upstream's, both need an authenticated user (any, here: there is no
// RBAC yet); a cluster that wants them public grants that separately.

const (
	issuerDiscoveryPath = "/.well-known/openid-configuration"
	jwksPath            = "/openid/v1/jwks"
)

// jwk is one key of a JWK Set (RFC 7517).
type jwk struct {
	Use string `json:"use"`
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Crv string `json:"crv,omitempty"`
	X   string `json:"x,omitempty"`
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"`
	E   string `json:"e,omitempty"`
}

// jwks is the key set of the tokens' signing key.
func (t *ServiceAccountTokens) jwks() []jwk {
	b64 := base64.RawURLEncoding.EncodeToString
	k := jwk{Use: "sig", Kid: t.keyID, Alg: t.alg}
	switch pub := t.key.Public().(type) {
	case *ecdsa.PublicKey:
		size := (pub.Curve.Params().BitSize + 7) / 8
		k.Kty, k.Crv = "EC", pub.Curve.Params().Name
		k.X, k.Y = b64(pub.X.FillBytes(make([]byte, size))), b64(pub.Y.FillBytes(make([]byte, size)))
	case *rsa.PublicKey:
		k.Kty, k.N, k.E = "RSA", b64(pub.N.Bytes()), b64(big.NewInt(int64(pub.E)).Bytes())
	}
	return []jwk{k}
}

// serveIssuerDiscovery answers the discovery document and the key set; 404
// when the server issues no service account tokens.
func (s *Server) serveIssuerDiscovery(w http.ResponseWriter, r *http.Request) {
	t := s.serviceAccountTokens()
	if t == nil {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	var body any
	contentType := "application/json"
	if r.URL.Path == jwksPath {
		body, contentType = map[string][]jwk{"keys": t.jwks()}, "application/jwk-set+json"
	} else {
		// The key set is announced at this server's address, as
		// upstream's default for --service-account-jwks-uri.
		jwksURI := (&url.URL{Scheme: "https", Host: s.cfg.ServerAddress, Path: jwksPath}).String()
		body = map[string]any{
			"issuer":                                t.issuer,
			"jwks_uri":                              jwksURI,
			"response_types_supported":              []string{"id_token"},
			"subject_types_supported":               []string{"public"},
			"id_token_signing_alg_values_supported": []string{t.alg},
		}
	}
	data, err := json.Marshal(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "public, max-age=3600")
	w.WriteHeader(http.StatusOK)
	w.Write(data)
}
